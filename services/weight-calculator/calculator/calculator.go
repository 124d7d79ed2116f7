package calculator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/server"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/lifecycle"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/tsdb"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
)

// Calculator is one weight-calculator shard.
type Calculator struct {
	cfg     Config
	log     *slog.Logger
	store   *Store
	metrics *metrics

	members      *shard.Membership
	knobs        *KnobStore
	policies     *PolicyBook
	series       *tsdb.Writer
	publisher    *Publisher
	engine       *engine
	registration *registration
	kitex        *kitexx.Server
	admin        *httpx.Server
	parts        *lifecycle.Group
}

var _ aggregator.Aggregator = (*ingestHandler)(nil)

// New binds the calculator's ports and connects to etcd; Start serves.
func New(cfg Config, log *slog.Logger) (*Calculator, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Calculator{
		cfg:   cfg,
		log:   log,
		store: NewStore(cfg.Window, cfg.Windows, cfg.MaxSeries),
	}
	reg := httpx.NewRegistry()
	c.metrics = newMetrics(reg, c.store)

	cli, err := etcdx.NewClient(cfg.Etcd)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	// The shard's parts, in the order they start; they stop in the reverse:
	// the shard deregisters first, so that mixers move its services to the
	// other shards, then the ports finish the calls in hand, then the loops
	// stop, and the time series and the etcd client close last.
	g := lifecycle.NewGroup()
	c.parts = g
	g.Add("etcd client", lifecycle.Closer(cli))
	c.series = tsdb.New(cfg.TSDB, "weight-calculator", log)
	c.series.Register(reg, "sextant_calculator")
	g.Add("time series", c.series.Closer())
	c.members = shard.NewMembership(cli, cfg.Etcd.Prefix, log)
	g.Add("shard membership", lifecycle.Loop(c.members.Run))
	c.knobs = NewKnobStore(log)
	g.Add("knob mirror", lifecycle.Loop(etcdx.NewMirror(cli, api.Keys{Prefix: cfg.Etcd.Prefix}.Configs(), c.knobs, log).Run))
	c.policies = NewPolicyBook(log)
	g.Add("policy mirror", lifecycle.Loop(etcdx.NewMirror(cli, api.Keys{Prefix: cfg.Etcd.Prefix}.Policies(), c.policies, log).Run))
	g.Add("series expiry", lifecycle.Loop(c.expire))
	verifier, tokenMirror, err := authn.Follow(cfg.Auth, cli, api.Keys{Prefix: cfg.Etcd.Prefix}, log)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tokens: %w", err), g.Stop(context.Background()))
	}
	g.Add("token mirror", lifecycle.Loop(tokenMirror.Run))
	sec, err := mtls.New(cfg.TLS, cli, api.Keys{Prefix: cfg.Etcd.Prefix}, "weight-calculator", cfg.AdminAddr, verifier, log)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	g.Add("CA mirror", lifecycle.Loop(sec.Mirror.Run))
	mc, err := meshcoresvc.NewClient("mesh-core", append([]client.Option{client.WithConnectTimeout(time.Second), client.WithRPCTimeout(cfg.RPCTimeout)},
		sec.KitexClientOptions("mesh-core")...)...)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	c.publisher = NewPublisher(mc, cfg.MeshCoreAddr, cfg.RPCTimeout, newPublishMetrics(reg), log)
	g.Add("publisher", lifecycle.Loop(c.publisher.Run))
	g.Add("time series export", c.series.Exporter(reg, "sextant_calculator", "sextant_calculator_", map[string]string{"shard": cfg.ID}))
	c.engine = newEngine(cfg.ID, c.store, c.knobs, c.owns, c.publisher, cfg.Window)
	c.engine.series = c.series
	c.engine.last = c.policies.Last
	if !cfg.ManualRounds {
		g.Add("rounds", lifecycle.Loop(c.rounds))
	}

	if c.admin, err = httpx.Listen(cfg.AdminAddr, sec.ServerOptions()...); err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	g.Add("admin http", c.admin)
	ln, err := kitexx.Listen(cfg.KitexAddr)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	// With TLS, only the mixers may send batches.
	c.kitex = kitexx.NewServer("weight-calculator", ln, func(opts ...server.Option) server.Server {
		return newIngestServer(&ingestHandler{c: c}, opts...)
	}, sec.KitexServerOptions(ln, reg, "sextant_calculator_kitex_refused_total", log, "telemetry-mixer")...)
	g.Add("kitex", c.kitex)
	// Registered once Ingest is served, so mixers never route to a shard
	// that cannot answer yet.
	c.registration = &registration{cli: cli, prefix: cfg.Etcd.Prefix, ttl: cfg.LeaseTTL, log: log,
		shard: shard.Shard{ID: cfg.ID, AdminAddr: c.admin.Addr()}, advertise: cfg.AdvertiseAddr, listen: c.kitex.Addr()}
	g.Add("shard registration", c.registration)

	httpx.HealthRoutes(c.admin, c.readiness)
	httpx.MetricsRoute(c.admin, reg)
	// The debug views are the operators'; the dry-run report also answers
	// the config-center, which forwards its caller's credential.
	authenticate, operator := verifier.Authenticate(), authn.RequireOperator(false)
	c.admin.GET("/debug/windows", authenticate, operator, c.debugWindows)
	c.admin.GET("/debug/policy", authenticate, operator, c.debugPolicy)
	c.admin.GET("/v1/dry-run", authenticate, c.serviceViewHandler(c.dryRun))
	c.admin.GET("/v1/units", authenticate, c.serviceViewHandler(c.unitRoutes))
	c.admin.GET("/v1/callers", authenticate, c.serviceViewHandler(c.callers))
	c.admin.GET("/v1/services", authenticate, c.services)
	c.admin.GET("/v1/services/:service", authenticate, c.service)
	return c, nil
}

// Windows returns what the shard keeps about service, as /debug/windows shows it.
func (c *Calculator) Windows(service string) (ServiceView, bool) { return c.store.Service(service) }

// Shards is the shard set as this shard sees it.
func (c *Calculator) Shards() []shard.Shard { return c.members.View().Shards }

// KnobsFor returns the knobs the shard applies to service.
func (c *Calculator) KnobsFor(service string) Knobs { return c.knobs.For(service) }

// ID is the shard id registered in etcd.
func (c *Calculator) ID() string { return c.cfg.ID }

// KitexAddr is the address Aggregator.Ingest is served on.
func (c *Calculator) KitexAddr() string { return c.kitex.Addr() }

// AdminAddr is the address of the admin HTTP port.
func (c *Calculator) AdminAddr() string { return c.admin.Addr() }

// Start serves Ingest and the admin port, and registers the shard in etcd.
// It returns the first start error, once what had started is stopped.
func (c *Calculator) Start() error {
	if err := c.parts.Start(); err != nil {
		return err
	}
	c.log.Info("weight-calculator started", "id", c.cfg.ID, "kitex", c.kitex.Addr(), "admin", c.admin.Addr())
	return nil
}

// Stop deregisters the shard first, so that mixers move its services to the
// other shards, then finishes the calls in hand and stops.
func (c *Calculator) Stop(ctx context.Context) error {
	err := c.parts.Stop(ctx)
	c.log.Info("weight-calculator stopped", "id", c.cfg.ID)
	return err
}

// Failed is closed when a part of the shard fails after it started; Err says
// which and why.
func (c *Calculator) Failed() <-chan struct{} { return c.parts.Failed() }

// Err is the failure Failed reports, or nil.
func (c *Calculator) Err() error { return c.parts.Err() }

// registration keeps the shard registered in etcd while it runs.
type registration struct {
	cli       *clientv3.Client
	prefix    string
	ttl       time.Duration
	log       *slog.Logger
	shard     shard.Shard
	advertise string // the configured address to advertise, if any
	listen    string // the Kitex listen address

	reg atomic.Pointer[shard.Registration]
}

var _ lifecycle.Starter = (*registration)(nil)

// Start registers the shard under the address mixers dial.
func (r *registration) Start() error {
	addr, err := advertiseAddr(r.advertise, r.listen)
	if err != nil {
		return err
	}
	s := r.shard
	s.Addr = addr
	reg, err := shard.Register(r.cli, r.prefix, s, r.ttl, r.log)
	if err != nil {
		return err
	}
	r.reg.Store(reg)
	return nil
}

// Run keeps the shard registered until ctx ends, then revokes its lease, so
// that its services move to the other shards at once.
func (r *registration) Run(ctx context.Context) error {
	<-ctx.Done()
	if reg := r.reg.Load(); reg != nil {
		reg.Close()
	}
	return nil
}

// Registered tells whether the shard's key is in etcd under a live lease.
func (r *registration) Registered() bool {
	reg := r.reg.Load()
	return reg != nil && reg.Registered()
}

// advertiseAddr is the address mixers dial: the configured one, else the
// listen address, with an unspecified host (0.0.0.0, ::) replaced by this
// machine's first non-loopback address.
func advertiseAddr(configured, listen string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return listen, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("finding an address to advertise: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return net.JoinHostPort(ipn.IP.String(), port), nil
		}
	}
	return "", fmt.Errorf("listening on %s and no non-loopback address found: set --advertise-addr", listen)
}

func (c *Calculator) expire(ctx context.Context) {
	t := time.NewTicker(max(c.cfg.StaleAfter/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := c.store.Expire(c.cfg.Now().Add(-c.cfg.StaleAfter)); n > 0 {
				c.metrics.expired.Add(float64(n))
			}
		}
	}
}

// Round computes and publishes every owned service as of now. It runs by
// itself every window, in the middle of the window, so that the window before
// is complete; tests with ManualRounds call it to step through windows.
// Until this shard sees itself among the shards in etcd it does nothing:
// without a view of the shard set it cannot know what it owns. Nor until it
// has listed the policies in etcd: a service it takes over continues from
// its last published policy.
func (c *Calculator) Round(now time.Time) {
	if !c.members.View().Has(c.cfg.ID) || !c.policies.Listed() {
		return
	}
	c.engine.round(now)
}

func (c *Calculator) owns(service string) bool {
	owner, ok := c.members.View().Owner(service)
	return ok && owner.ID == c.cfg.ID
}

func (c *Calculator) rounds(ctx context.Context) {
	w := c.cfg.Window
	for {
		now := time.Now()
		next := now.Truncate(w).Add(w / 2)
		if !next.After(now) {
			next = next.Add(w)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next.Sub(now)):
			c.Round(time.Now())
		}
	}
}

func (c *Calculator) readiness() []string {
	var reasons []string
	if !c.registration.Registered() {
		reasons = append(reasons, "shard not registered in etcd")
	}
	if !c.members.Synced() {
		reasons = append(reasons, "shard membership not synced with etcd (serving the last known)")
	}
	if !c.members.View().Has(c.cfg.ID) {
		reasons = append(reasons, "this shard is not in its view of the shards yet: it computes nothing")
	}
	if !c.policies.Listed() {
		reasons = append(reasons, "the published policies are not listed from etcd yet: it computes nothing")
	}
	return reasons
}

// ingestHandler serves Aggregator.Ingest.
type ingestHandler struct{ c *Calculator }

func (h *ingestHandler) Ingest(_ context.Context, batch *aggregator.ReportBatch) (*aggregator.IngestResponse, error) {
	if batch == nil {
		return nil, &aggregator.IngestError{Code: "invalid", Message: "empty batch"}
	}
	c := h.c
	t, err := c.store.Ingest(batch, c.cfg.Now())
	c.metrics.count(&t)
	if err != nil {
		// What was read before is merged and counted; the mixer drops the rest.
		return nil, &aggregator.IngestError{Code: "malformed", Message: err.Error()}
	}
	return &aggregator.IngestResponse{
		ServersAccepted: t[KindServer][Accepted],
		EdgesAccepted:   t[KindEdge][Accepted],
		DenialsAccepted: t[KindDenial][Accepted],
		RecordsRefused:  t.NotAccepted(),
	}, nil
}

// windowsAnswer is the JSON of GET /debug/windows?service=S.
type windowsAnswer struct {
	ServiceView
	Owner string `json:"owner"`
	Owned bool   `json:"owned"`
	Shard string `json:"shard"`
}

func (c *Calculator) debugWindows(_ context.Context, rc *app.RequestContext) {
	name := string(rc.Query("service"))
	if name == "" {
		rc.JSON(consts.StatusOK, map[string]any{"shard": c.cfg.ID, "services": c.store.Services()})
		return
	}
	view, ok := c.store.Service(name)
	if !ok {
		httpx.WriteError(rc, consts.StatusNotFound, api.Errorf("service", "not_found", "no windows for service %q on shard %q", name, c.cfg.ID))
		return
	}
	owner, _ := c.members.View().Owner(name)
	rc.JSON(consts.StatusOK, windowsAnswer{ServiceView: view, Owner: owner.ID, Owned: owner.ID == c.cfg.ID, Shard: c.cfg.ID})
}

func (c *Calculator) debugPolicy(_ context.Context, rc *app.RequestContext) {
	name := string(rc.Query("service"))
	if name == "" {
		rc.JSON(consts.StatusOK, map[string]any{"shard": c.cfg.ID, "services": c.engine.owned()})
		return
	}
	d, ok := c.engine.decision(name)
	if !ok {
		owner, _ := c.members.View().Owner(name)
		httpx.WriteError(rc, consts.StatusNotFound, api.Errorf("service", "not_found",
			"shard %q computes no policy for %q (its owner is %q)", c.cfg.ID, name, owner.ID))
		return
	}
	rc.JSON(consts.StatusOK, d)
}

// DryRunReport is what a shard knows of the would-be denials of dry_run
// access rules of a service it owns.
type DryRunReport struct {
	Service string       `json:"service"`
	Shard   string       `json:"shard"`
	Denials []DenialView `json:"denials"`
}

// serviceViewHandler serves what the store keeps of ?service as answer
// makes it (the view is zero when the store holds nothing of it): the
// dry-run denials, the unit routes and the callers, which the
// config-center asks of the shard that owns a service.
func (c *Calculator) serviceViewHandler(answer func(name string, v ServiceView) any) app.HandlerFunc {
	return func(_ context.Context, rc *app.RequestContext) {
		name := string(rc.Query("service"))
		if fe := api.Name("service", name, true); fe != nil {
			httpx.WriteError(rc, consts.StatusBadRequest, fe)
			return
		}
		v, _ := c.store.Service(name)
		rc.JSON(consts.StatusOK, answer(name, v))
	}
}

func (c *Calculator) dryRun(name string, v ServiceView) any {
	return DryRunReport{Service: name, Shard: c.cfg.ID, Denials: orEmpty(v.DryRunDenials)}
}

// UnitsReport is what a shard knows of what the unit_routing rules of a
// service it owns decided of its callers' requests.
type UnitsReport struct {
	Service string          `json:"service"`
	Shard   string          `json:"shard"`
	Routes  []UnitRouteView `json:"routes"`
}

func (c *Calculator) unitRoutes(name string, v ServiceView) any {
	return UnitsReport{Service: name, Shard: c.cfg.ID, Routes: orEmpty(v.UnitRoutes)}
}

// CallersReport lists the services a shard saw calling a service it owns.
type CallersReport struct {
	Service string       `json:"service"`
	Shard   string       `json:"shard"`
	Callers []CallerView `json:"callers"`
}

func (c *Calculator) callers(name string, v ServiceView) any {
	return CallersReport{Service: name, Shard: c.cfg.ID, Callers: orEmpty(v.Callers)}
}

// orEmpty answers an empty list rather than null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Decision returns the last round's decision for service, as /debug/policy shows it.
func (c *Calculator) Decision(service string) (Decision, bool) { return c.engine.decision(service) }

func (o Outcome) String() string {
	switch o {
	case Accepted:
		return "accepted"
	case Late:
		return "late"
	case Refused:
		return "refused_series_limit"
	case Future:
		return "future"
	default:
		return "invalid"
	}
}

type metrics struct {
	records *prometheus.CounterVec
	byTally [3][5]prometheus.Counter // records' children, looked up once
	expired prometheus.Counter
}

// count adds a batch's tally to the records counter, once per batch.
func (m *metrics) count(t *Tally) {
	for k := range t {
		for o, n := range t[k] {
			if n > 0 {
				m.byTally[k][o].Add(float64(n))
			}
		}
	}
}

func newMetrics(reg prometheus.Registerer, store *Store) *metrics {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_calculator_records_total",
			Help: "Records received over Aggregator.Ingest, by kind (server, edge, denial) and outcome.",
		}, []string{"kind", "outcome"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sextant_calculator_series_expired_total",
			Help: "(service, instance) series forgotten after no report for --stale-after.",
		}),
	}
	for k := range m.byTally {
		for o := range m.byTally[k] {
			m.byTally[k][o] = m.records.WithLabelValues(KindNames[k], Outcome(o).String())
		}
	}
	reg.MustRegister(m.records, m.expired, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sextant_calculator_series",
		Help: "(service, instance) series kept in windows.",
	}, func() float64 { return float64(store.Series()) }))
	return m
}
