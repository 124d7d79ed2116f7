package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudwego/hertz/pkg/common/hlog"
)

// The server runs in a child process so that its CPU time and memory can be
// read from /proc apart from the load generator's, and so that one server's
// heap and goroutines cannot leak into the other's run.

// serve is the child's side: start one server, print its address on stdout
// (the parent's only way to learn a port of 0), run until SIGTERM.
func serve(kind, addr string) error {
	hlog.SetLevel(hlog.LevelWarn) // keep Hertz's start-up lines out of the report
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	srv, err := startServer(kind, addr, &countingSink{})
	if err != nil {
		return err
	}
	fmt.Println("listening", srv.Addr())
	<-sigs
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Stop(ctx)
}

// child is a server process started by the parent.
type child struct {
	cmd  *exec.Cmd
	addr string
}

// spawn re-executes this binary as a server of the given kind with
// GOMAXPROCS procs and waits for it to say where it listens.
func spawn(kind string, procs int) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-serve="+kind, "-addr=127.0.0.1:0")
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(procs))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphan if we die
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		s.Scan()
		line <- s.Text()
	}()
	select {
	case l := <-line:
		if addr, ok := strings.CutPrefix(l, "listening "); ok {
			c.addr = addr
			return c, nil
		}
		c.stop()
		return nil, fmt.Errorf("%s server: unexpected first line %q", kind, l)
	case <-time.After(15 * time.Second):
		c.stop()
		return nil, fmt.Errorf("%s server did not start within 15s", kind)
	}
}

// stop asks the child to stop, then kills it if it lingers.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// cpuSeconds is the user+system CPU time of process pid so far
// (/proc/<pid>/stat fields 14 and 15, in clock ticks).
func cpuSeconds(pid int, tick float64) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; count fields after it.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, errors.New("unexpected /proc/<pid>/stat format")
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (utime + stime) / tick, nil
}

// maxRSSMiB is the child's peak resident set (VmHWM) so far.
func (c *child) maxRSSMiB() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	_, v, ok := strings.Cut(string(b), "VmHWM:")
	var kb float64
	if _, err := fmt.Sscanf(v, "%f kB", &kb); !ok || err != nil {
		return 0, fmt.Errorf("no VmHWM in /proc/<pid>/status: %v", err)
	}
	return kb / 1024, nil
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 almost
// everywhere, which is also the fallback.
func clockTick() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	t, perr := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || perr != nil || t <= 0 {
		return 100
	}
	return t
}
