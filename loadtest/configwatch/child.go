package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/internal/freeport"

	"github.com/sextant-mesh/sextant/internal/etcdembed"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
	"github.com/sextant-mesh/sextant/services/config-center/center"
)

// The config-center runs in a child process, with its embedded etcd, so
// that its CPU time, memory and goroutines are its own, apart from the
// watches' client side.

// adminToken is the writer token of the config-center the tool starts (on
// loopback, for the tool's own writes).
const adminToken = "loadtest-admin-token"

// startStack starts an embedded etcd with its data in dir and one
// config-center over it, on free loopback ports; stop stops both.
func startStack(dir string, log *slog.Logger) (addr string, stop func(), err error) {
	var addrs [2]string
	for i := range addrs { // etcd cannot be handed a listener: take free ports
		var err error
		if addrs[i], err = freeport.Addr(); err != nil {
			return "", nil, err
		}
	}
	e, err := etcdembed.Start(dir, addrs[0], addrs[1])
	if err != nil {
		return "", nil, err
	}
	cfg := center.DefaultConfig()
	cfg.HTTPAddr, cfg.Etcd.Endpoints, cfg.Auth.AdminToken = "127.0.0.1:0", e.ClientURL, adminToken
	cc, err := center.New(cfg, log)
	if err == nil {
		err = cc.Start()
	}
	if err != nil {
		e.Close()
		return "", nil, err
	}
	return cc.Addr(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = cc.Stop(ctx)
		e.Close()
	}, nil
}

// serve is the child's side: start the stack, print its address on
// stdout (the parent's only way to learn a port of 0), run until signalled.
func serve() error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	dir, err := os.MkdirTemp("", "configwatch-etcd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logx.QuietFrameworks()
	addr, stop, err := startStack(dir, slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	fmt.Println("serving", addr)
	<-sigs
	stop()
	return nil
}

// child is the config-center process started by spawn.
type child struct {
	*proc.Child
	addr string
}

// spawn re-executes this binary as the child with GOMAXPROCS procs and
// reads where it serves.
func spawn(procs int) (*child, error) {
	c, err := proc.Spawn([]string{serveArg}, procs, 60*time.Second)
	if err != nil {
		return nil, err
	}
	if f := strings.Fields(c.FirstLine); len(f) == 2 && f[0] == "serving" {
		return &child{Child: c, addr: f[1]}, nil
	}
	c.Stop()
	return nil, fmt.Errorf("config-center child did not start: first line %q", c.FirstLine)
}

// cpuSeconds is process pid's CPU time so far; NaN when unknown (pid 0).
func cpuSeconds(pid int) float64 {
	v, err := proc.CPUSeconds(pid)
	if pid == 0 || err != nil {
		return math.NaN()
	}
	return v
}

// statusMiB reads a kB field of /proc/<pid>/status in MiB; NaN when unknown.
func statusMiB(pid int, field string) float64 {
	v, err := proc.StatusMiB(pid, field)
	if pid == 0 || err != nil {
		return math.NaN()
	}
	return v
}
