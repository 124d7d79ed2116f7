// Package proc is what the load tools share to run a server in a process of
// its own and read what that process costs from /proc.
package proc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/internal/childproc"
)

// Child is this binary re-executed as a server.
type Child struct {
	Cmd *exec.Cmd
	// FirstLine is what the child printed first on stdout: where it serves.
	FirstLine string
	done      chan struct{}
}

// Spawn re-executes this binary with args and GOMAXPROCS procs, and waits up
// to timeout for its first line on stdout. The child dies with the parent.
func Spawn(args []string, procs int, timeout time.Duration) (*Child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(procs))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = childproc.DieWithParent()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &Child{Cmd: cmd, done: make(chan struct{})}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		s.Scan()
		line <- s.Text()
		_ = cmd.Wait()
		close(c.done)
	}()
	select {
	case c.FirstLine = <-line:
		return c, nil
	case <-time.After(timeout):
		c.Stop()
		return nil, fmt.Errorf("%v: no word from the child within %s", args, timeout)
	}
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.Cmd.Process.Pid }

// Stop asks the child to stop, then kills it if it lingers. Safe to call twice.
func (c *Child) Stop() {
	_ = c.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.Cmd.Process.Kill()
		<-c.done
	}
}

// CPUSeconds is the user+system CPU time of process pid so far
// (/proc/<pid>/stat fields 14 and 15, in clock ticks).
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	_, rest, ok := strings.Cut(string(b), ") ") // the command name may hold spaces
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, errors.New("unexpected /proc/<pid>/stat format")
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (utime + stime) / ClockTick(), nil
}

// StatusMiB reads a kB field (VmRSS, VmHWM) of /proc/<pid>/status in MiB.
func StatusMiB(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	_, v, ok := strings.Cut(string(b), field+":")
	var kb float64
	if _, err := fmt.Sscanf(v, "%f kB", &kb); !ok || err != nil {
		return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
	}
	return kb / 1024, nil
}

// MachineCPU is the CPU seconds all processes have used so far (busy) and
// the hypervisor has withheld (steal), from /proc/stat's first line.
func MachineCPU() (busy, steal float64) {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line) {
		v, _ := strconv.ParseFloat(f, 64)
		switch i {
		case 0, 4, 5: // "cpu", idle, iowait
		case 8:
			steal = v / ClockTick()
		default:
			busy += v / ClockTick()
		}
	}
	return busy, steal
}

// ClockTick is USER_HZ, the unit of /proc times: 100 almost everywhere,
// which is also the fallback.
var ClockTick = sync.OnceValue(func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if t, perr := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && perr == nil && t > 0 {
		return t
	}
	return 100
})
