package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/examples/demo"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/influxdev"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/service"
	"github.com/sextant-mesh/sextant/internal/settings"
	"github.com/sextant-mesh/sextant/internal/tsdb"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// devConfig is what `sextant dev` runs: the ports of docs/design.md on 127.0.0.1.
type devConfig struct {
	dataDir     string
	etcdClient  string
	etcdPeer    string
	calculators int
	demo        bool
	demoAddr    string
	influxd     string
	influxAddr  string
	influx      *influxdev.Server
	mixer       mixer.Config
	calculator  calculator.Config
	meshCore    core.Config
	center      center.Config
	ready       func(devAddrs) // called once everything runs; for tests
	stderr      io.Writer
	stdout      io.Writer
}

// devAddrs are where the running services are.
type devAddrs struct {
	Etcd, Mixer, CalculatorAdmin, MeshCore, ConfigCenter string
	AdminToken                                           string
}

func dev(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runDev(ctx, args, os.Stderr, nil)
}

func runDev(ctx context.Context, args []string, stderr io.Writer, ready func(devAddrs)) error {
	cfg := devConfig{mixer: mixer.DefaultConfig(), calculator: calculator.DefaultConfig(), meshCore: core.DefaultConfig(),
		center: center.DefaultConfig(), stderr: stderr, stdout: os.Stdout, ready: ready}
	fs := flag.NewFlagSet("sextant dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.dataDir, "data-dir", "", "keep etcd's data here (default: a temporary folder removed on exit)")
	fs.StringVar(&cfg.etcdClient, "etcd-client-addr", "127.0.0.1:7790", "embedded etcd client address")
	fs.StringVar(&cfg.etcdPeer, "etcd-peer-addr", "127.0.0.1:7791", "embedded etcd peer address")
	fs.StringVar(&cfg.influxd, "influxd", "auto", `influxd binary for the time series: "auto" finds bin/influxd (make run builds it) or one on PATH; "" runs without`)
	fs.StringVar(&cfg.influxAddr, "influx-addr", "127.0.0.1:7786", "HTTP address of the influxd it runs")
	fs.BoolVar(&cfg.demo, "demo", false, "also run the demo: a Kitex service of five instances (one slower), a Hertz front and a load driver, printing weights, shares and the admission threshold every second")
	fs.StringVar(&cfg.demoAddr, "demo-addr", "127.0.0.1:7705", "the demo's Hertz front address")
	fs.IntVar(&cfg.calculators, "calculators", 1, "weight-calculator shards to run (the first on its default ports, the others on free ports)")
	fs.StringVar(&cfg.mixer.HTTPAddr, "mixer-addr", cfg.mixer.HTTPAddr, "telemetry-mixer HTTP address")
	fs.StringVar(&cfg.calculator.KitexAddr, "calculator-addr", cfg.calculator.KitexAddr, "weight-calculator Kitex address")
	fs.StringVar(&cfg.calculator.AdminAddr, "calculator-admin-addr", cfg.calculator.AdminAddr, "weight-calculator admin HTTP address")
	fs.StringVar(&cfg.meshCore.HTTPAddr, "mesh-core-addr", cfg.meshCore.HTTPAddr, "mesh-core HTTP address (registry, discovery)")
	fs.StringVar(&cfg.meshCore.KitexAddr, "mesh-core-kitex-addr", cfg.meshCore.KitexAddr, "mesh-core Kitex address (PublishPolicy)")
	fs.StringVar(&cfg.center.HTTPAddr, "config-center-addr", cfg.center.HTTPAddr, "config-center HTTP address")
	fs.StringVar(&cfg.center.AdminToken, "admin-token", "", "config-center admin (writer) token (SEXTANT_ADMIN_TOKEN; default: generated and printed)")
	if err := settings.Parse(fs, args); err != nil {
		return err
	}
	return cfg.run(ctx)
}

func (cfg devConfig) run(ctx context.Context) error {
	log := logx.NewTo(cfg.stderr, "sextant-dev")
	dir := cfg.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "sextant-dev-etcd-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	etcd, err := etcdx.StartEmbedded(dir, cfg.etcdClient, cfg.etcdPeer)
	if err != nil {
		return err
	}
	defer etcd.Close()
	log.Info("embedded etcd ready", "client", etcd.ClientURL, "data_dir", dir)

	influxURL := cfg.startInfluxd(dir, log)
	if influxURL != "" {
		defer cfg.stopInfluxd()
	}
	withSeries := func(c *tsdb.Config) {
		c.URL = influxURL
	}

	var started []service.Service
	stopAll := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		for i := len(started) - 1; i >= 0; i-- {
			err = errors.Join(err, started[i].Stop(sctx))
		}
		return err
	}
	start := func(name string, svc service.Service, err error) error {
		if err == nil {
			err = svc.Start()
		}
		if err != nil {
			return errors.Join(fmt.Errorf("%s: %w", name, err), stopAll())
		}
		started = append(started, svc)
		return nil
	}

	mc := cfg.meshCore
	mc.EtcdEndpoints = cfg.etcdClient
	withSeries(&mc.TSDB)
	meshCore, err := core.New(mc, logx.NewTo(cfg.stderr, "mesh-core"))
	if err := start("mesh-core", meshCore, err); err != nil {
		return err
	}

	var firstAdmin string
	for i := 0; i < cfg.calculators; i++ {
		c := cfg.calculator
		c.ID = fmt.Sprintf("dev-calculator-%d", i)
		c.EtcdEndpoints = cfg.etcdClient
		c.MeshCoreAddr = meshCore.KitexAddr()
		withSeries(&c.TSDB)
		if i > 0 {
			c.KitexAddr, c.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
		}
		calc, err := calculator.New(c, logx.NewTo(cfg.stderr, "weight-calculator"))
		if err := start(c.ID, calc, err); err != nil {
			return err
		}
		if i == 0 {
			firstAdmin = calc.AdminAddr()
		}
	}
	cc := cfg.center
	cc.EtcdEndpoints = cfg.etcdClient
	withSeries(&cc.TSDB)
	generated := cc.AdminToken == ""
	if generated {
		cc.AdminToken = randomToken()
	}
	configCenter, err := center.New(cc, logx.NewTo(cfg.stderr, "config-center"))
	if err := start("config-center", configCenter, err); err != nil {
		return err
	}

	m := cfg.mixer
	m.ID = "dev-mixer"
	withSeries(&m.TSDB)
	m.EtcdEndpoints = cfg.etcdClient
	mx, err := mixer.New(m, logx.NewTo(cfg.stderr, "telemetry-mixer"))
	if err := start("telemetry-mixer", mx, err); err != nil {
		return err
	}

	fmt.Fprintf(cfg.stderr, `
Sextant is running (Ctrl-C stops it):
  telemetry-mixer    POST http://%s/v1/telemetry
  weight-calculator  http://%s/debug/windows, /debug/policy (%d shard(s))
  mesh-core          POST http://%s/v1/instances, GET .../v1/discovery/{service} (Kitex %s)
  config-center      http://%s/v1/configs (writes: Authorization: Bearer $SEXTANT_ADMIN_TOKEN)
  etcd               %s
`, mx.Addr(), firstAdmin, cfg.calculators, meshCore.Addr(), meshCore.KitexAddr(), configCenter.Addr(), etcd.ClientURL)
	if generated {
		fmt.Fprintf(cfg.stderr, "\nadmin token (generated; set SEXTANT_ADMIN_TOKEN to choose one):\n  export SEXTANT_ADMIN_TOKEN=%s\n", cc.AdminToken)
	}
	if cfg.ready != nil {
		cfg.ready(devAddrs{Etcd: etcd.ClientURL, Mixer: mx.Addr(), CalculatorAdmin: firstAdmin, MeshCore: meshCore.Addr(),
			ConfigCenter: configCenter.Addr(), AdminToken: cc.AdminToken})
	}
	demoDone := make(chan error, 1)
	if cfg.demo {
		cp := demo.ControlPlane{MeshCore: meshCore.Addr(), Mixer: mx.Addr(), Window: time.Second}
		go func() { demoDone <- demo.Run(ctx, cp, cfg.demoAddr, cfg.stdout, logx.Discard()) }()
	} else {
		demoDone <- nil
	}
	<-ctx.Done()
	if err := <-demoDone; err != nil {
		log.Error("demo", "err", err)
	}
	log.Info("stopping")
	return stopAll()
}

// startInfluxd runs influxd with its data under dir, when a binary can be
// found; it returns its URL, or "" after saying once that the time series are off.
func (cfg *devConfig) startInfluxd(dir string, log *slog.Logger) string {
	bin := cfg.influxd
	if bin == "auto" {
		wd, _ := os.Getwd()
		found, err := influxdev.Find(wd)
		if err != nil {
			log.Info("time series are off: no influxd found (make run builds one into bin/)")
			return ""
		}
		bin = found
	}
	if bin == "" {
		log.Info("time series are off (--influxd \"\")")
		return ""
	}
	data := filepath.Join(dir, "influxd")
	if err := os.MkdirAll(data, 0o700); err != nil {
		log.Warn("time series are off", "err", err)
		return ""
	}
	rpc := net.JoinHostPort("127.0.0.1", "0")
	if host, port, err := net.SplitHostPort(cfg.influxAddr); err == nil && port != "0" {
		p, _ := strconv.Atoi(port)
		rpc = net.JoinHostPort(host, strconv.Itoa(p+2))
	}
	s, err := influxdev.Start(bin, data, cfg.influxAddr, rpc)
	if err != nil {
		log.Warn("time series are off: influxd did not start", "err", err)
		return ""
	}
	cfg.influx = s
	log.Info("influxd ready", "url", s.URL(), "database", influxdev.Database, "retention", influxdev.Retention)
	return s.URL()
}

func (cfg *devConfig) stopInfluxd() {
	if cfg.influx != nil {
		cfg.influx.Stop()
	}
}

// randomToken makes an admin token for a dev run.
func randomToken() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
