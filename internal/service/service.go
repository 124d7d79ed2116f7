// Package service runs a Sextant service as a process: settings from flags and
// environment, a JSON log, start, and a graceful stop on SIGINT or SIGTERM.
// The service itself is a lifecycle.Group of components: its Start returns
// the first start error, its Stop stops the components in the reverse order
// of their start.
package service

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/settings"
)

// Service is a started-and-stopped part of Sextant.
type Service interface {
	Start() error
	Stop(ctx context.Context) error
}

// Failer is a service that can fail after it started: Failed is closed when
// one of its components stops by itself with an error, and Err says which.
// Every Sextant service is one (see lifecycle.Group).
type Failer interface {
	Failed() <-chan struct{}
	Err() error
}

// Main parses settings with register, builds the service, runs it until a
// signal or until it fails, and stops it within stopTimeout. It exits the
// process with 1 when the service cannot start, fails, or stops with an error.
func Main(name string, register func(*flag.FlagSet), build func(*slog.Logger) (Service, error), stopTimeout time.Duration) {
	log := logx.New(name)
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	register(fs)
	if err := settings.Parse(fs, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	settings.Log(log, fs)
	if err := run(log, build, stopTimeout); err != nil {
		os.Exit(1)
	}
}

// run builds, starts and serves the service until SIGINT, SIGTERM or its
// failure, then stops it; it logs what went wrong and returns it.
func run(log *slog.Logger, build func(*slog.Logger) (Service, error), stopTimeout time.Duration) error {
	// A signal during the start stops the service once it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := build(log)
	if err == nil {
		// Start stops what it had started when a part fails to start.
		err = svc.Start()
	}
	if err != nil {
		log.Error("cannot start", "err", err)
		return err
	}
	var failed <-chan struct{} // nil: never
	f, isFailer := svc.(Failer)
	if isFailer {
		failed = f.Failed()
	}
	var failure error
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case <-failed:
		failure = f.Err()
		log.Error("failed; stopping", "err", failure)
	}
	stop() // a second signal ends the process at once
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := svc.Stop(sctx); err != nil {
		log.Error("stop", "err", err)
		return err
	}
	return failure
}
