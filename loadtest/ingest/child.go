package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/cloudwego/hertz/pkg/common/hlog"

	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
)

// Each server runs in a child process so that its CPU time and memory can be
// read from /proc apart from the load generator's, and so that one server's
// heap and goroutines cannot leak into the other's run.

// serve is the child's side: start one server, print its address on stdout
// (the parent's only way to learn a port of 0), run until SIGTERM.
func serve(kind, addr string, po pathOptions) error {
	hlog.SetLevel(hlog.LevelWarn) // keep Hertz's start-up lines out of the report
	if dir := os.Getenv(profileEnv); dir != "" {
		stop, err := startProfile(filepath.Join(dir, fmt.Sprintf("%s-%d.prof", kind, os.Getpid())))
		if err != nil {
			return err
		}
		defer stop()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	switch kind {
	case "etcd", "calculator", "mixer":
		return servePath(kind, addr, po, sigs)
	}
	srv, err := startServer(kind, addr, &countingSink{})
	if err != nil {
		return err
	}
	fmt.Println("listening", srv.Addr())
	<-sigs
	return srv.Stop(stopContext())
}

// profileEnv names the folder server processes write CPU profiles into.
const profileEnv = "INGEST_CPUPROFILE_DIR"

// startProfile profiles this process's CPU into path until stop.
func startProfile(path string) (stop func(), err error) {
	out, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); out.Close() }, nil
}

// stopContext bounds a child's stop.
func stopContext() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	time.AfterFunc(10*time.Second, cancel)
	return ctx
}

// spawn re-executes this binary as a one-process server of the given kind
// with GOMAXPROCS procs.
func spawn(kind string, procs int) (*deployment, error) {
	c, err := proc.Spawn([]string{"-serve=" + kind, "-addr=127.0.0.1:0"}, procs, 15*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s server: %w", kind, err)
	}
	addr, ok := strings.CutPrefix(c.FirstLine, "listening ")
	if !ok {
		c.Stop()
		return nil, fmt.Errorf("%s server: unexpected first line %q", kind, c.FirstLine)
	}
	return &deployment{
		url:   "http://" + addr + "/v1/telemetry",
		procs: []procInfo{{name: kind, pid: c.Pid(), sextant: true}},
		stop:  c.Stop,
	}, nil
}
