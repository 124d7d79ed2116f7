package center

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/lifecycle"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/pki"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// Center is the config-center service.
type Center struct {
	cfg     Config
	log     *slog.Logger
	view    *view
	mirrors []*etcdx.Mirror
	shards  *shard.Membership
	health  *etcdx.Health
	http    *httpx.Server
	series  *tsdb.Writer
	tls     bool

	stopping chan struct{}
	parts    *lifecycle.Group
}

// New binds the API port and connects to etcd; Start serves.
func New(cfg Config, log *slog.Logger) (*Center, error) {
	if err := cfg.OIDC.Validate(); err != nil {
		return nil, err
	}
	var serviceAccounts *authn.ServiceAccounts // nil: no service-account tokens
	if cfg.OIDC.Enabled() {
		var err error
		if serviceAccounts, err = authn.NewServiceAccounts(cfg.OIDC); err != nil {
			return nil, err
		}
	}
	cli, err := etcdx.NewClient(cfg.Etcd)
	if err != nil {
		return nil, err
	}
	keys := api.Keys{Prefix: cfg.Etcd.Prefix}
	verifier, tokenMirror, err := authn.Follow(cfg.Auth, cli, keys, log)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("tokens: %w", err)
	}
	if ops, _ := cfg.Auth.Operators(); len(ops) == 0 {
		log.Warn("no operator token configured: every write will be refused (set --admin-token or --tokens-file)")
	}
	v := newView()
	cc := &Center{cfg: cfg, log: log, view: v, stopping: make(chan struct{}), parts: lifecycle.NewGroup(),
		shards: shard.NewMembership(cli, cfg.Etcd.Prefix, log),
		health: etcdx.NewHealth(cli, keys.Configs(), time.Second)}
	// The config-center's parts, in the order they start; they stop in the
	// reverse: the waiting watches are answered (304) first, then the port
	// stops, then the loops, and the time series and the etcd client close
	// last.
	g := cc.parts
	g.Add("etcd client", lifecycle.Closer(cli))
	cc.series = tsdb.New(cfg.TSDB, "config-center", log)
	g.Add("time series", cc.series.Closer())
	mirror := func(name, prefix string, h etcdx.MirrorHandler) {
		m := etcdx.NewMirror(cli, prefix, h, log)
		cc.mirrors = append(cc.mirrors, m)
		g.Add(name, lifecycle.Loop(m.Run))
	}
	mirror("config mirror", keys.Configs(), mirrorOf{v, putConfig})
	mirror("pin mirror", keys.Pins(), mirrorOf{v, putPins})
	mirror("policy mirror", keys.Policies(), mirrorOf{v, putPolicy})
	cc.mirrors = append(cc.mirrors, tokenMirror)
	g.Add("token mirror", lifecycle.Loop(tokenMirror.Run))
	g.Add("shard membership", lifecycle.Loop(cc.shards.Run))
	g.Add("etcd health", lifecycle.Loop(cc.health.Run))

	if cfg.CertTTL < pki.MinLeafTTL || cfg.CertTTL > pki.MaxLeafTTL {
		return nil, errors.Join(fmt.Errorf("--cert-ttl %s: must be between %s and %s", cfg.CertTTL, pki.MinLeafTTL, pki.MaxLeafTTL), g.Stop(context.Background()))
	}
	sec, err := mtls.New(cfg.TLS, cli, keys, "config-center", cfg.HTTPAddr, verifier, log)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	cc.tls = sec.TLS()
	cc.mirrors = append(cc.mirrors, sec.Mirror)
	g.Add("CA mirror", lifecycle.Loop(sec.Mirror.Run))
	opts := append([]config.Option{server.WithStreamBody(true), server.WithSenseClientDisconnection(true)}, sec.ServerOptions()...)
	cc.http, err = httpx.Listen(cfg.HTTPAddr, opts...)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	g.Add("http", cc.http)
	g.Add("watches", lifecycle.OnStop(func(context.Context) error {
		close(cc.stopping)
		return nil
	}))
	reg := httpx.NewRegistry()
	cc.series.Register(reg, "sextant_configcenter")
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sextant_configcenter_etcd_connected",
		Help: "1 while the config-center follows etcd (probe answered, every mirror watching); 0 while it serves its last state.",
	}, func() float64 {
		if cc.connected() {
			return 1
		}
		return 0
	}))
	st := &store{etcd: cli, keys: keys, kitexPrefix: cfg.KitexPrefix, timeout: 5 * time.Second, pinsOf: v.PinsOf, series: cc.series, retention: cfg.Retention}
	status := newStatusBook(cfg.StatusTTL)
	a := &configAPI{store: st, view: v, maxBody: cfg.MaxBodyBytes, status: status}
	w := &watcher{view: v, status: status, maxWait: cfg.MaxWait, defaultWait: cfg.DefaultWait, stopping: cc.stopping,
		answers: prometheus.NewCounter(prometheus.CounterOpts{Name: "sextant_configcenter_watch_answers_computed_total",
			Help: "Watch answers computed: once when a watch arrives, then once per change that concerns it."})}
	reg.MustRegister(w.answers)
	d := &shardViews{shards: cc.shards, view: v, client: &http.Client{}}

	tok := &tokenAPI{etcd: cli, keys: keys, timeout: 5 * time.Second, store: st}
	certs := &certificateAPI{ca: sec.CA, canSign: cfg.TLS.CAKeyFile != "", ttl: cfg.CertTTL, etcd: cli, timeout: 5 * time.Second, store: st}
	authenticate := verifier.Authenticate()
	read, write := []app.HandlerFunc{authenticate}, []app.HandlerFunc{authenticate, authn.RequireOperator(true)}
	operator := []app.HandlerFunc{authenticate, authn.RequireOperator(false)}
	h := cc.http
	h.GET("/v1/configs", append(read, a.list)...)
	h.GET("/v1/configs/:kind/*scope", append(read, a.configs)...)
	h.PUT("/v1/configs/:kind/*scope", append(write, a.configs)...)
	h.DELETE("/v1/configs/:kind/*scope", append(write, a.configs)...)
	h.POST("/v1/configs/:kind/*scope", append(write, a.configs)...)
	h.GET("/v1/pins/:service", append(read, a.pins)...)
	h.POST("/v1/pins/:service", append(write, a.pin)...)
	h.DELETE("/v1/pins/:service", append(write, a.unpin)...)
	h.GET("/v1/audit", append(operator, a.audit)...)
	h.GET("/v1/watch", append(read, w.watch)...)
	h.GET("/v1/access/dry-run", append(read, d.report)...)
	h.GET("/v1/access/inspection", append(read, d.inspect)...)
	h.GET("/v1/services", append(read, d.services)...)
	h.GET("/v1/kinds", append(read, func(_ context.Context, c *app.RequestContext) {
		c.JSON(consts.StatusOK, map[string]any{"kinds": kindInfos()})
	})...)
	h.GET("/v1/dataplanes", append(read, w.dataPlanes)...)
	h.GET("/v1/services/:service", append(read, d.service)...)
	h.POST("/v1/tokens", append(write, tok.create)...)
	h.GET("/v1/tokens", append(operator, tok.list)...)
	h.DELETE("/v1/tokens/:id", append(write, tok.revoke)...)
	// A workload may prove who it is with a service-account token here,
	// and only here.
	h.POST("/v1/certificates", verifier.AuthenticateWith(serviceAccounts), certs.issue)
	h.GET("/v1/ca", certs.bundle)
	httpx.HealthRoutesStale(h, cc.readiness, cc.staleness)
	httpx.MetricsRoute(h, reg)
	return cc, nil
}

// Addr is the API address.
func (cc *Center) Addr() string { return cc.http.Addr() }

// Start follows etcd and serves. It returns the first start error, once what
// had started is stopped.
func (cc *Center) Start() error {
	if err := cc.parts.Start(); err != nil {
		return err
	}
	cc.log.Info("config-center started", "http", cc.http.Addr(), "tls", cc.tls)
	return nil
}

// Stop answers the waiting watches (304) and stops.
func (cc *Center) Stop(ctx context.Context) error {
	err := cc.parts.Stop(ctx)
	cc.log.Info("config-center stopped")
	return err
}

// Failed is closed when a part of the config-center fails after it started;
// Err says which and why.
func (cc *Center) Failed() <-chan struct{} { return cc.parts.Failed() }

// Err is the failure Failed reports, or nil.
func (cc *Center) Err() error { return cc.parts.Err() }

// readiness: the config-center is ready once it has had etcd's state (a
// probe answered, every mirror listed its prefix), and stays ready while
// etcd is away: watches serve the last known configs (staleness says so);
// the API's reads and writes, which go to etcd, fail.
func (cc *Center) readiness() []string {
	var reasons []string
	if cc.health.LastOK().IsZero() {
		reasons = append(reasons, "etcd never reached: nothing to serve yet")
	}
	for _, m := range cc.mirrors {
		if m.Revision() == 0 {
			reasons = append(reasons, "not synced with etcd yet (a mirror has not listed its prefix)")
			break
		}
	}
	return reasons
}

// staleness says why the config-center serves its last known state rather
// than etcd's live one; empty while it follows etcd.
func (cc *Center) staleness() []string {
	var detail []string
	if !cc.health.OK() {
		detail = append(detail, fmt.Sprintf("etcd unreachable since %s: the API fails, watches serve the last known configs",
			cc.health.LastOK().Format(time.RFC3339)))
	}
	for _, m := range cc.mirrors {
		if !m.Synced() {
			detail = append(detail, "not following etcd (watch down): serving the last known configs")
			break
		}
	}
	return detail
}

// connected tells whether the config-center follows etcd now.
func (cc *Center) connected() bool { return len(cc.staleness()) == 0 }
