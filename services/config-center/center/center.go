package center

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// Center is the config-center service.
type Center struct {
	cfg     Config
	log     *slog.Logger
	etcd    *clientv3.Client
	view    *view
	mirrors []*etcdx.Mirror
	shards  *shard.Membership
	health  *etcdx.Health
	http    *httpx.Server
	series  *tsdb.Writer

	stopping chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// New binds the API port and connects to etcd; Start serves.
func New(cfg Config, log *slog.Logger) (*Center, error) {
	toks, err := loadTokens(cfg.TokensFile, cfg.AdminToken, cfg.ReadAuth)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	if len(toks.list) == 0 {
		log.Warn("no API token configured: every write will be refused (set --admin-token or --tokens-file)")
	}
	cli, err := etcdx.NewClient(cfg.EtcdEndpoints)
	if err != nil {
		return nil, err
	}
	keys := api.Keys{Prefix: cfg.EtcdPrefix}
	v := newView()
	cc := &Center{cfg: cfg, log: log, etcd: cli, view: v, stopping: make(chan struct{}),
		shards: shard.NewMembership(cli, cfg.EtcdPrefix, log),
		health: etcdx.NewHealth(cli, keys.Configs(), time.Second)}
	cc.mirrors = []*etcdx.Mirror{
		etcdx.NewMirror(cli, keys.Configs(), mirrorOf{v, putConfig}, log),
		etcdx.NewMirror(cli, keys.Pins(), mirrorOf{v, putPins}, log),
		etcdx.NewMirror(cli, keys.Policies(), mirrorOf{v, putPolicy}, log),
	}

	opts := []config.Option{server.WithStreamBody(true), server.WithSenseClientDisconnection(true)}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			cli.Close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		opts = append(opts, server.WithTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}
	cc.http, err = httpx.Listen(cfg.HTTPAddr, opts...)
	if err != nil {
		cli.Close()
		return nil, err
	}
	reg := httpx.NewRegistry()

	cc.series = tsdb.New(cfg.TSDB, "config-center", log)
	cc.series.Register(reg, "sextant_configcenter")
	st := &store{etcd: cli, keys: keys, kitexPrefix: cfg.KitexPrefix, timeout: 5 * time.Second, pinsOf: v.PinsOf, series: cc.series, retention: cfg.Retention}
	status := newStatusBook(cfg.StatusTTL)
	a := &configAPI{store: st, view: v, maxBody: cfg.MaxBodyBytes, status: status}
	w := &watcher{view: v, status: status, maxWait: cfg.MaxWait, defaultWait: cfg.DefaultWait, stopping: cc.stopping,
		answers: prometheus.NewCounter(prometheus.CounterOpts{Name: "sextant_configcenter_watch_answers_computed_total",
			Help: "Watch answers computed: once when a watch arrives, then once per change that concerns it."})}
	reg.MustRegister(w.answers)
	d := &dryRun{shards: cc.shards, view: v, client: &http.Client{}}

	read, write := toks.require(false), toks.require(true)
	h := cc.http
	h.GET("/v1/configs", read, a.list)
	h.GET("/v1/configs/:kind/*scope", read, a.configs)
	h.PUT("/v1/configs/:kind/*scope", write, a.configs)
	h.DELETE("/v1/configs/:kind/*scope", write, a.configs)
	h.POST("/v1/configs/:kind/*scope", write, a.configs)
	h.GET("/v1/pins/:service", read, a.pins)
	h.POST("/v1/pins/:service", write, a.pin)
	h.DELETE("/v1/pins/:service", write, a.unpin)
	h.GET("/v1/audit", read, a.audit)
	h.GET("/v1/watch", read, w.watch)
	h.GET("/v1/access/dry-run", read, d.report)
	httpx.HealthRoutes(h, cc.readiness)
	httpx.MetricsRoute(h, reg)
	return cc, nil
}

// Addr is the API address.
func (cc *Center) Addr() string { return cc.http.Addr() }

// Start follows etcd and serves.
func (cc *Center) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	cc.cancel = cancel
	for _, m := range cc.mirrors {
		cc.wg.Go(func() { m.Run(ctx) })
	}
	cc.wg.Go(func() { cc.shards.Run(ctx) })
	cc.wg.Go(func() { cc.health.Run(ctx) })
	cc.http.Start()
	cc.log.Info("config-center started", "http", cc.http.Addr(), "tls", cc.cfg.TLSCert != "")
	return nil
}

// Stop answers the waiting watches (304) and stops.
func (cc *Center) Stop(ctx context.Context) error {
	cc.stopOnce.Do(func() {
		close(cc.stopping)
		err := cc.http.Stop(ctx)
		if cc.cancel != nil {
			cc.cancel()
		}
		cc.wg.Wait()
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		cc.series.Close(sctx)
		scancel()
		cc.stopErr = errors.Join(err, cc.etcd.Close())
		cc.log.Info("config-center stopped")
	})
	return cc.stopErr
}

func (cc *Center) readiness() []string {
	var reasons []string
	if !cc.health.OK() {
		reasons = append(reasons, "etcd unreachable: writes fail, watches serve the last known configs")
	}
	for _, m := range cc.mirrors {
		if !m.Synced() {
			reasons = append(reasons, "not following etcd (watch down)")
			break
		}
	}
	return reasons
}
