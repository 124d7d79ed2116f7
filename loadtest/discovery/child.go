package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
)

// mesh-core runs in a child process so that its CPU time, memory and
// goroutines are its own, apart from the pollers' client side.

// target is where a running mesh-core answers.
type target struct{ http, kitex string }

// startStack starts an embedded etcd with its data in dir and one mesh-core
// over it, on free loopback ports; stop stops both.
func startStack(dir string, log *slog.Logger) (tg target, stop func(), err error) {
	var addrs [2]string
	for i := range addrs { // etcd cannot be handed a listener: take free ports
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return tg, nil, err
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	e, err := etcdx.StartEmbedded(dir, addrs[0], addrs[1])
	if err != nil {
		return tg, nil, err
	}
	cfg := core.DefaultConfig()
	cfg.HTTPAddr, cfg.KitexAddr, cfg.EtcdEndpoints = "127.0.0.1:0", "127.0.0.1:0", e.ClientURL
	cfg.ShutdownGrace = 2 * time.Second
	mc, err := core.New(cfg, log)
	if err == nil {
		err = mc.Start()
	}
	if err != nil {
		e.Close()
		return tg, nil, err
	}
	return target{http: mc.Addr(), kitex: mc.KitexAddr()}, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = mc.Stop(ctx)
		e.Close()
	}, nil
}

// serve is the child's side: start the stack, print its addresses on
// stdout (the parent's only way to learn ports of 0), run until signalled.
func serve() error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	dir, err := os.MkdirTemp("", "discovery-etcd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logx.QuietFrameworks()
	tg, stop, err := startStack(dir, slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	fmt.Println("serving", tg.http, tg.kitex)
	<-sigs
	stop()
	return nil
}

// child is the mesh-core process started by spawn.
type child struct {
	cmd    *exec.Cmd
	target target
	done   chan struct{} // closed when it has exited
}

// spawn re-executes this binary as the child with GOMAXPROCS procs and
// reads where it serves. A child that fails to start exits, which ends the
// read (etcd gives up on its own after 30 s).
func spawn(procs int) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, serveArg)
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
	s := bufio.NewScanner(out)
	s.Scan()
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	if f := strings.Fields(s.Text()); len(f) == 3 && f[0] == "serving" {
		c.target = target{http: f[1], kitex: f[2]}
		return c, nil
	}
	c.stop()
	return nil, fmt.Errorf("mesh-core child did not start: first line %q", s.Text())
}

// stop asks the child to stop, then kills it if it lingers. Safe to call twice.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// cpuSeconds is the user+system CPU time of process pid so far
// (/proc/<pid>/stat fields 14 and 15, in clock ticks); NaN for pid 0.
func cpuSeconds(pid int, tick float64) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	_, rest, ok := strings.Cut(string(b), ") ") // the command name may hold spaces
	f := strings.Fields(rest)
	if pid == 0 || err != nil || !ok || len(f) < 13 {
		return math.NaN()
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return math.NaN()
	}
	return (utime + stime) / tick
}

// statusMiB reads a kB field (VmRSS, VmHWM) of /proc/<pid>/status in MiB;
// NaN for pid 0.
func statusMiB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	_, v, ok := strings.Cut(string(b), field+":")
	var kb float64
	if _, serr := fmt.Sscanf(v, "%f kB", &kb); pid == 0 || err != nil || !ok || serr != nil {
		return math.NaN()
	}
	return kb / 1024
}

// machineCPU is the CPU seconds all processes have used so far (busy) and
// the hypervisor has withheld (steal), from /proc/stat's first line.
func machineCPU(tick float64) (busy, steal float64) {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line) {
		v, _ := strconv.ParseFloat(f, 64)
		switch i {
		case 0, 4, 5: // "cpu", idle, iowait
		case 8:
			steal = v / tick
		default:
			busy += v / tick
		}
	}
	return busy, steal
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times; 100 if getconf fails.
func clockTick() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if t, perr := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && perr == nil && t > 0 {
		return t
	}
	return 100
}
