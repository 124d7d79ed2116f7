// Package service runs a Sextant service as a process: settings from flags and
// environment, a JSON log, start, and a graceful stop on SIGINT or SIGTERM.
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

// Main parses settings with register, builds the service, runs it until a
// signal, and stops it within stopTimeout. It exits the process on failure.
func Main(name string, register func(*flag.FlagSet), build func(*slog.Logger) (Service, error), stopTimeout time.Duration) {
	log := logx.New(name)
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	register(fs)
	if err := settings.Parse(fs, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	settings.Log(log, fs)
	svc, err := build(log)
	if err == nil {
		err = svc.Start()
	}
	if err != nil {
		log.Error("cannot start", "err", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	<-ctx.Done()
	stop()
	log.Info("stopping")
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := svc.Stop(sctx); err != nil {
		log.Error("stop", "err", err)
		os.Exit(1)
	}
}
