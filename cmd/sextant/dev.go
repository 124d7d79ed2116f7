package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/service"
	"github.com/sextant-mesh/sextant/internal/settings"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

func dev(args []string) error {
	fs := flag.NewFlagSet("sextant dev", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "keep etcd's data here (default: a temporary folder removed on exit)")
	etcdClient := fs.String("etcd-client-addr", "127.0.0.1:7790", "embedded etcd client address")
	etcdPeer := fs.String("etcd-peer-addr", "127.0.0.1:7791", "embedded etcd peer address")
	shards := fs.Int("calculators", 1, "weight-calculator shards to run (the first on the default ports, the others on free ports)")
	if err := settings.Parse(fs, args); err != nil {
		return err
	}
	log := logx.New("sextant-dev")

	dir := *dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "sextant-dev-etcd-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	etcd, err := etcdx.StartEmbedded(dir, *etcdClient, *etcdPeer)
	if err != nil {
		return err
	}
	defer etcd.Close()
	log.Info("embedded etcd ready", "client", etcd.ClientURL, "data_dir", dir)

	var started []service.Service
	stopAll := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		for i := len(started) - 1; i >= 0; i-- {
			err = errors.Join(err, started[i].Stop(ctx))
		}
		return err
	}
	start := func(svc service.Service, err error) error {
		if err == nil {
			err = svc.Start()
		}
		if err == nil {
			started = append(started, svc)
		}
		return err
	}

	for i := 0; i < *shards; i++ {
		cfg := calculator.DefaultConfig()
		cfg.ID = fmt.Sprintf("dev-calculator-%d", i)
		cfg.EtcdEndpoints = *etcdClient
		if i > 0 {
			cfg.KitexAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
		}
		if err := start(calculator.New(cfg, logx.New("weight-calculator"))); err != nil {
			return errors.Join(fmt.Errorf("weight-calculator %d: %w", i, err), stopAll())
		}
	}
	mcfg := mixer.DefaultConfig()
	mcfg.ID = "dev-mixer"
	mcfg.EtcdEndpoints = *etcdClient
	if err := start(mixer.New(mcfg, logx.New("telemetry-mixer"))); err != nil {
		return errors.Join(fmt.Errorf("telemetry-mixer: %w", err), stopAll())
	}

	fmt.Fprintf(os.Stderr, `
Sextant is running (Ctrl-C stops it):
  telemetry-mixer    http://%s/v1/telemetry
  weight-calculator  kitex %s, admin http://%s/debug/windows
  etcd               %s
`, mcfg.HTTPAddr, calculator.DefaultConfig().KitexAddr, calculator.DefaultConfig().AdminAddr, etcd.ClientURL)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("stopping")
	return stopAll()
}
