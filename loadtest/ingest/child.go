package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cloudwego/hertz/pkg/common/hlog"

	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
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

// spawn re-executes this binary as a server of the given kind with
// GOMAXPROCS procs; it returns the child and where it listens.
func spawn(kind string, procs int) (*proc.Child, string, error) {
	c, err := proc.Spawn([]string{"-serve=" + kind, "-addr=127.0.0.1:0"}, procs, 15*time.Second)
	if err != nil {
		return nil, "", fmt.Errorf("%s server: %w", kind, err)
	}
	addr, ok := strings.CutPrefix(c.FirstLine, "listening ")
	if !ok {
		c.Stop()
		return nil, "", fmt.Errorf("%s server: unexpected first line %q", kind, c.FirstLine)
	}
	return c, addr, nil
}
