// Package devplane runs the whole control plane in one process, for
// development: an embedded etcd, every service on its default address (the
// ports of docs/design.md, on 127.0.0.1) talking to the others over loopback,
// and influxd when one is found. `sextant dev` runs it; so does the demo's
// own command (examples/demo/cmd/demo-dev), which runs the demo beside it, so
// that the sextant binary does not link the demo.
package devplane

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
	"path/filepath"
	"strconv"
	"time"

	"github.com/sextant-mesh/sextant/internal/etcdembed"
	"github.com/sextant-mesh/sextant/internal/influxdev"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/service"
	"github.com/sextant-mesh/sextant/internal/settings"
	"github.com/sextant-mesh/sextant/internal/tsdb"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// Config is what Run runs: its flags (see Parse) and the hooks of the
// command that runs it.
type Config struct {
	dataDir     string
	etcdClient  string
	etcdPeer    string
	calculators int
	kitexTLS    bool
	influxd     string
	influxAddr  string
	influx      *influxdev.Server
	mixer       mixer.Config
	calculator  calculator.Config
	meshCore    core.Config
	center      center.Config

	// Stderr receives the logs and the list of what runs.
	Stderr io.Writer
	// Ready, when set, is called once everything runs.
	Ready func(Addrs)
	// Beside, when set, runs beside the control plane once everything runs,
	// until ctx ends (the demo). An error it returns stops the control plane
	// and is Run's error.
	Beside func(ctx context.Context, addrs Addrs) error
}

// Addrs are where the running services are.
type Addrs struct {
	Etcd, Mixer, CalculatorAdmin, MeshCore, ConfigCenter string
	// MeshCorePoll is mesh-core's poll port, for discovery ("" when off).
	MeshCorePoll string
	// MeshCoreKitex is mesh-core's Kitex port (PublishPolicy).
	MeshCoreKitex string
	// MeshCoreXDS is mesh-core's ADS port ("" when off).
	MeshCoreXDS string
	AdminToken  string
}

// Parse reads the control plane's flags from args, and from SEXTANT_*
// environment variables as the services do, into a Config whose Stderr is
// stderr. name names the command in usage and errors; more, when set, adds
// the command's own flags to the same set.
func Parse(name string, args []string, stderr io.Writer, more func(*flag.FlagSet)) (*Config, error) {
	cfg := &Config{mixer: mixer.DefaultConfig(), calculator: calculator.DefaultConfig(), meshCore: core.DefaultConfig(),
		center: center.DefaultConfig(), Stderr: stderr}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.dataDir, "data-dir", "", "keep etcd's data here (default: a temporary folder removed on exit)")
	fs.StringVar(&cfg.etcdClient, "etcd-client-addr", "127.0.0.1:7790", "embedded etcd client address")
	fs.StringVar(&cfg.etcdPeer, "etcd-peer-addr", "127.0.0.1:7791", "embedded etcd peer address")
	fs.StringVar(&cfg.influxd, "influxd", "auto", `influxd binary for the time series: "auto" finds bin/influxd (make run builds it) or one on PATH; "" runs without`)
	fs.StringVar(&cfg.influxAddr, "influx-addr", "127.0.0.1:7786", "HTTP address of the influxd it runs")
	fs.BoolVar(&cfg.kitexTLS, "kitex-tls", true, "mTLS on the Kitex hops (mixer to calculators, calculators to mesh-core), with a certificate authority whose key file is kept in the data dir; the HTTP APIs stay plain")
	fs.IntVar(&cfg.calculators, "calculators", 1, "weight-calculator shards to run (the first on its default ports, the others on free ports)")
	fs.StringVar(&cfg.mixer.HTTPAddr, "mixer-addr", cfg.mixer.HTTPAddr, "telemetry-mixer HTTP address")
	fs.StringVar(&cfg.calculator.KitexAddr, "calculator-addr", cfg.calculator.KitexAddr, "weight-calculator Kitex address")
	fs.StringVar(&cfg.calculator.AdminAddr, "calculator-admin-addr", cfg.calculator.AdminAddr, "weight-calculator admin HTTP address")
	fs.StringVar(&cfg.meshCore.HTTPAddr, "mesh-core-addr", cfg.meshCore.HTTPAddr, "mesh-core HTTP address (registry, discovery)")
	fs.StringVar(&cfg.meshCore.KitexAddr, "mesh-core-kitex-addr", cfg.meshCore.KitexAddr, "mesh-core Kitex address (PublishPolicy)")
	fs.StringVar(&cfg.meshCore.PollAddr, "mesh-core-poll-addr", cfg.meshCore.PollAddr, `mesh-core poll port, discovery long polls only: the address to give data planes ("": off)`)
	cfg.meshCore.XDSAddr = "127.0.0.1:7723"
	fs.StringVar(&cfg.meshCore.XDSAddr, "mesh-core-xds-addr", cfg.meshCore.XDSAddr, `mesh-core ADS (xDS) port for gRPC clients (xds:///service) and Envoy, mTLS with --kitex-tls ("": off)`)
	fs.StringVar(&cfg.center.HTTPAddr, "config-center-addr", cfg.center.HTTPAddr, "config-center HTTP address")
	fs.StringVar(&cfg.center.Auth.AdminToken, "admin-token", "", "operators' admin token, accepted by every service (SEXTANT_ADMIN_TOKEN; default: generated and printed)")
	// Multi-cluster: mesh-core's --export, --peer, --peer-token-file,
	// --peer-ttl and --peer-wait, to run two dev planes as two clusters.
	cfg.meshCore.Peering.RegisterFlags(fs)
	if more != nil {
		more(fs)
	}
	if err := settings.Parse(fs, args); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Run starts etcd, influxd when it finds one, and every service, and runs
// them until ctx ends; then it stops them all.
func (cfg *Config) Run(ctx context.Context) error {
	log := logx.NewTo(cfg.Stderr, "sextant-dev")
	dir := cfg.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "sextant-dev-etcd-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	etcd, err := etcdembed.Start(dir, cfg.etcdClient, cfg.etcdPeer)
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

	// The Kitex hops are mTLS: every service holds the CA key file (kept
	// beside etcd's data, whose authority it opens) and issues itself its
	// certificate; the HTTP ports stay plain, as the quick start speaks
	// http://. The config-center issues workload certificates with it too.
	if cfg.kitexTLS {
		keyFile, err := caKeyFile(dir)
		if err != nil {
			return errors.Join(err, stopAll())
		}
		for _, c := range []*mtls.Config{&cfg.meshCore.TLS, &cfg.calculator.TLS, &cfg.center.TLS, &cfg.mixer.TLS} {
			c.CAKeyFile, c.PlainHTTP = keyFile, true
		}
		log.Info("Kitex hops over mTLS", "ca_key_file", keyFile)
	}

	// One admin token for every service: operators use it everywhere, and
	// issue the data planes' tokens with it.
	admin := cfg.center.Auth.AdminToken
	generated := admin == ""
	if generated {
		admin = randomToken()
	}
	mc := cfg.meshCore
	mc.Auth.AdminToken = admin
	mc.Etcd.Endpoints = cfg.etcdClient
	withSeries(&mc.TSDB)
	meshCore, err := core.New(mc, logx.NewTo(cfg.Stderr, "mesh-core"))
	if err := start("mesh-core", meshCore, err); err != nil {
		return err
	}

	var firstAdmin string
	for i := 0; i < cfg.calculators; i++ {
		c := cfg.calculator
		c.ID = fmt.Sprintf("dev-calculator-%d", i)
		c.Etcd.Endpoints = cfg.etcdClient
		c.Auth.AdminToken = admin
		c.MeshCoreAddr = meshCore.KitexAddr()
		withSeries(&c.TSDB)
		if i > 0 {
			c.KitexAddr, c.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
		}
		calc, err := calculator.New(c, logx.NewTo(cfg.Stderr, "weight-calculator"))
		if err := start(c.ID, calc, err); err != nil {
			return err
		}
		if i == 0 {
			firstAdmin = calc.AdminAddr()
		}
	}
	cc := cfg.center
	cc.Etcd.Endpoints = cfg.etcdClient
	withSeries(&cc.TSDB)
	cc.Auth.AdminToken = admin
	configCenter, err := center.New(cc, logx.NewTo(cfg.Stderr, "config-center"))
	if err := start("config-center", configCenter, err); err != nil {
		return err
	}

	m := cfg.mixer
	m.ID = "dev-mixer"
	withSeries(&m.TSDB)
	m.Etcd.Endpoints = cfg.etcdClient
	m.Auth.AdminToken = admin
	mx, err := mixer.New(m, logx.NewTo(cfg.Stderr, "telemetry-mixer"))
	if err := start("telemetry-mixer", mx, err); err != nil {
		return err
	}

	fmt.Fprintf(cfg.Stderr, `
Sextant is running (Ctrl-C stops it):
  telemetry-mixer    POST http://%s/v1/telemetry
  weight-calculator  http://%s/debug/windows, /debug/policy (%d shard(s))
  mesh-core          POST http://%s/v1/instances, GET .../v1/discovery/{service} (Kitex %s%s)
                     poll port (discovery for data planes): %s
                     xDS (gRPC xds:///service, Envoy; docs/xds.md): %s
  config-center      http://%s/v1/configs
  etcd               %s

Every API needs a credential (Authorization: Bearer <token>). Operators use
the admin token; a data plane uses its service's token:
  go run ./cmd/sextant token create --service <service>
and gives it to the SDK as SEXTANT_TOKEN. With SEXTANT_CONFIG_CENTER=%s too
(or a ConfigWatcher), the SDK's adapters get the service a certificate and
talk mTLS to each other (docs/security.md). With SEXTANT_ADMIN_TOKEN set,
  go run ./cmd/sextant services            (sextant config, describe, status, top: docs/cli.md)
`, mx.Addr(), firstAdmin, cfg.calculators, meshCore.Addr(), meshCore.KitexAddr(), kitexLine(cfg.kitexTLS), pollLine(meshCore.PollAddr()), xdsLine(meshCore.XDSAddr(), cfg.kitexTLS), configCenter.Addr(), etcd.ClientURL, configCenter.Addr())
	if generated {
		fmt.Fprintf(cfg.Stderr, "\nadmin token (generated; set SEXTANT_ADMIN_TOKEN to choose one):\n  export SEXTANT_ADMIN_TOKEN=%s\n", admin)
	}
	addrs := Addrs{Etcd: etcd.ClientURL, Mixer: mx.Addr(), CalculatorAdmin: firstAdmin, MeshCore: meshCore.Addr(),
		MeshCorePoll: meshCore.PollAddr(), MeshCoreKitex: meshCore.KitexAddr(), MeshCoreXDS: meshCore.XDSAddr(), ConfigCenter: configCenter.Addr(), AdminToken: admin}
	if cfg.Ready != nil {
		cfg.Ready(addrs)
	}
	var besideErr error
	if cfg.Beside != nil {
		bctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- cfg.Beside(bctx, addrs) }()
		select {
		case <-ctx.Done():
			besideErr = <-done
		case besideErr = <-done:
			if besideErr == nil {
				<-ctx.Done()
			}
		}
		cancel()
	} else {
		<-ctx.Done()
	}
	log.Info("stopping")
	return errors.Join(besideErr, stopAll())
}

// startInfluxd runs influxd with its data under dir, when a binary can be
// found; it returns its URL, or "" after saying once that the time series are off.
func (cfg *Config) startInfluxd(dir string, log *slog.Logger) string {
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

func (cfg *Config) stopInfluxd() {
	if cfg.influx != nil {
		cfg.influx.Stop()
	}
}

// caKeyFile is the CA key file in dir, made when there is none.
func caKeyFile(dir string) (string, error) {
	path := filepath.Join(dir, "ca.key")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("CA key file: %w", err)
	}
	return path, nil
}

// randomToken makes an admin token for a dev run.
func randomToken() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// kitexLine says how the Kitex hops are protected.
func kitexLine(tls bool) string {
	if tls {
		return ", mTLS"
	}
	return ", plaintext: --kitex-tls=false"
}

// xdsLine says where gRPC clients and Envoy get xDS.
func xdsLine(addr string, tls bool) string {
	switch {
	case addr == "":
		return "off (--mesh-core-xds-addr)"
	case tls:
		return addr + " (mTLS: a workload certificate in the bootstrap's channel_creds)"
	}
	return addr + " (plaintext)"
}

// pollLine says where data planes poll for discovery.
func pollLine(addr string) string {
	if addr == "" {
		return "off (--mesh-core-poll-addr)"
	}
	return "GET http://" + addr + "/v1/discovery?services=a,b"
}
