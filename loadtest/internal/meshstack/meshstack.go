// Package meshstack starts what the load tools measure: an embedded etcd
// and one mesh-core over it on free loopback ports, in the tool's child
// process (so that the client's work is not counted as the server's).
package meshstack

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/internal/freeport"

	"github.com/sextant-mesh/sextant/internal/etcdembed"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/loadtest/internal/longpoll"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
)

// Stack is a running etcd and mesh-core.
type Stack struct {
	MeshCore   *core.MeshCore
	EtcdURL    string
	Prefix     string // the etcd prefix of the control plane
	AdminToken string
	stop       func()
}

// Stop stops mesh-core, then etcd.
func (s *Stack) Stop() { s.stop() }

// Start starts an embedded etcd with its data in dir and one mesh-core
// over it (HTTP and Kitex on free ports, a fresh admin token); tweak
// (may be nil) sets the other addresses the tool needs.
func Start(dir string, log *slog.Logger, tweak func(*core.Config)) (*Stack, error) {
	var addrs [2]string
	for i := range addrs { // etcd cannot be handed a listener: take free ports
		var err error
		if addrs[i], err = freeport.Addr(); err != nil {
			return nil, err
		}
	}
	e, err := etcdembed.Start(dir, addrs[0], addrs[1])
	if err != nil {
		return nil, err
	}
	cfg := core.DefaultConfig()
	cfg.HTTPAddr, cfg.KitexAddr, cfg.PollAddr, cfg.Etcd.Endpoints = "127.0.0.1:0", "127.0.0.1:0", "", e.ClientURL
	cfg.ShutdownGrace = 2 * time.Second
	cfg.Auth.AdminToken = longpoll.RandomToken()
	if tweak != nil {
		tweak(&cfg)
	}
	mc, err := core.New(cfg, log)
	if err == nil {
		err = mc.Start()
	}
	if err != nil {
		e.Close()
		return nil, err
	}
	return &Stack{MeshCore: mc, EtcdURL: e.ClientURL, Prefix: cfg.Etcd.Prefix, AdminToken: cfg.Auth.AdminToken, stop: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = mc.Stop(ctx)
		e.Close()
	}}, nil
}

// Serve is the child process's side: it starts the stack with start (given
// a fresh data folder named after prefix and a warnings-only logger),
// prints where it serves with announce on stdout (the parent's only way to
// learn ports of 0), and runs until SIGTERM or SIGINT.
func Serve[T any](prefix string, start func(dir string, log *slog.Logger) (T, func(), error), announce func(T)) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logx.QuietFrameworks()
	tg, stop, err := start(dir, slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	announce(tg)
	<-sigs
	stop()
	return nil
}
