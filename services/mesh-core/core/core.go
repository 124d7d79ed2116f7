package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/config"
	kserver "github.com/cloudwego/kitex/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/lifecycle"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/tsdb"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
	"github.com/sextant-mesh/sextant/services/mesh-core/xds"
)

// MeshCore is the mesh-core service.
type MeshCore struct {
	cfg     Config
	log     *slog.Logger
	cache   *Cache
	health  *etcdx.Health
	mirrors []*etcdx.Mirror
	series  *tsdb.Writer

	http     *httpx.Server
	kitex    *kitexx.Server
	stopping chan struct{}
	parts    *lifecycle.Group
	live     *liveness
	poll     *PollServer // nil when --poll-addr is empty
	peers    *importer   // nil without --peer
	xds      *xds.Server // nil when --xds-addr is empty
}

// New binds mesh-core's ports and connects to etcd; Start serves.
func New(cfg Config, log *slog.Logger) (*MeshCore, error) {
	if err := cfg.Peering.Validate(); err != nil {
		return nil, err
	}
	reg := httpx.NewRegistry()
	m := newMetrics(reg)

	cli, err := etcdx.NewClient(cfg.Etcd)
	if err != nil {
		return nil, err
	}
	keys := api.Keys{Prefix: cfg.Etcd.Prefix}
	mc := &MeshCore{
		cfg: cfg, log: log,
		cache:    NewCache(cfg.PolicyTTL, cfg.MaxServices, log),
		health:   etcdx.NewHealth(cli, keys.Registry(), cfg.HealthProbe),
		stopping: make(chan struct{}),
		parts:    lifecycle.NewGroup(),
	}
	// mesh-core's parts, in the order they start; they stop in the reverse:
	// the waiting long polls are released (304) first, then the ports stop,
	// then the loops, and the time series and the etcd client close last.
	g := mc.parts
	g.Add("etcd client", lifecycle.Closer(cli))
	mc.series = tsdb.New(cfg.TSDB, "mesh-core", log)
	mc.series.Register(reg, "sextant_meshcore")
	g.Add("time series", mc.series.Closer())
	mc.cache.onSnapshot = m.snapshots.Inc
	mc.cache.SetCoalesce(cfg.Coalesce)
	mirror := func(name, prefix string, h etcdx.MirrorHandler) {
		mr := etcdx.NewMirror(cli, prefix, h, log)
		mc.mirrors = append(mc.mirrors, mr)
		g.Add(name, lifecycle.Loop(mr.Run))
	}
	mirror("registry mirror", keys.Registry(), registryMirror{mc.cache})
	mirror("policy mirror", keys.Policies(), policyMirror{mc.cache})
	if cfg.KitexRegistryPrefix != "" {
		mirror("kitex registry mirror", strings.TrimSuffix(cfg.KitexRegistryPrefix, "/")+"/", kitexRegistryMirror{mc.cache})
	}
	g.Add("etcd health", lifecycle.Loop(mc.health.Run))
	g.Add("policy expiry", lifecycle.Loop(mc.expirePolicies))
	if len(cfg.Peering.Peers) > 0 {
		if mc.peers, err = newImporter(cfg.Peering, mc.cache, reg, log); err != nil {
			return nil, errors.Join(err, g.Stop(context.Background()))
		}
		for _, p := range cfg.Peering.Peers {
			g.Add("peer "+p.Name, lifecycle.Loop(func(ctx context.Context) { mc.peers.run(ctx, p) }))
		}
		g.Add("peer expiry", lifecycle.Loop(mc.peers.expiry))
	}
	verifier, tokenMirror, err := authn.Follow(cfg.Auth, cli, keys, log)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tokens: %w", err), g.Stop(context.Background()))
	}
	mc.mirrors = append(mc.mirrors, tokenMirror)
	g.Add("token mirror", lifecycle.Loop(tokenMirror.Run))
	sec, err := mtls.New(cfg.TLS, cli, keys, "mesh-core", cfg.HTTPAddr, verifier, log)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	mc.mirrors = append(mc.mirrors, sec.Mirror)
	g.Add("CA mirror", lifecycle.Loop(sec.Mirror.Run))
	mc.live = newLiveness(cli, cfg.SessionTTL, log)
	mc.cache.keptAlive = func(service, instance string) bool { return mc.live.keeps(keys.Instance(service, instance)) }
	g.Add("liveness", lifecycle.Loop(func(ctx context.Context) { mc.live.Run(ctx, 500*time.Millisecond) }))
	m.observe(reg, mc)

	ln, err := kitexx.Listen(cfg.KitexAddr)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	policies := &policyStore{etcd: cli, keys: keys, cache: mc.cache, metrics: m}
	// With TLS, only the calculators may publish policies.
	mc.kitex = kitexx.NewServer("mesh-core", ln, func(opts ...kserver.Option) kserver.Server {
		return meshcoresvc.NewServer(policies, opts...)
	}, sec.KitexServerOptions(ln, reg, "sextant_meshcore_kitex_refused_total", log, "weight-calculator")...)
	g.Add("kitex", mc.kitex)

	// Bodies are streamed so an oversized registration gets a JSON 413;
	// the request context ends when a long-polling client goes away.
	mc.http, err = httpx.Listen(cfg.HTTPAddr, append([]config.Option{server.WithStreamBody(true), server.WithSenseClientDisconnection(true),
		server.WithExitWaitTime(cfg.ShutdownGrace)}, sec.ServerOptions()...)...)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	r := &registry{etcd: cli, live: mc.live, cache: mc.cache, keys: keys, defaultTTL: int64(cfg.DefaultTTL.Seconds()), maxBody: cfg.MaxBodyBytes, metrics: m, log: log}
	// Polls are forgotten a while after their wait could have ended.
	pollers := newPollerBook(2*cfg.MaxWait + time.Minute)
	d := &discovery{cache: mc.cache, stale: mc.Stale, maxWait: cfg.MaxWait, defaultWait: cfg.DefaultWait, stopping: mc.stopping, metrics: m, pollers: pollers}
	authenticate := verifier.Authenticate()
	mc.http.POST("/v1/instances", authenticate, r.register)
	mc.http.PUT("/v1/instances/:service/:instance/heartbeat", authenticate, r.heartbeat)
	mc.http.DELETE("/v1/instances/:service/:instance", authenticate, r.deregister)
	mc.http.GET("/v1/discovery/:service", authenticate, d.one)
	mc.http.GET("/v1/discovery", authenticate, d.many)
	mc.http.GET("/v1/dataplanes", authenticate, pollers.serve(mc.cache))
	mc.http.GET("/v1/exports", authenticate, (&exports{d: d, services: cfg.Peering.Export}).serve)
	httpx.HealthRoutesDetail(mc.http, mc.readiness, mc.staleness, mc.peerDetail)
	httpx.MetricsRoute(mc.http, reg)
	g.Add("time series export", mc.series.Exporter(reg, "sextant_meshcore", "sextant_meshcore_",
		map[string]string{"replica": replicaName(mc.http.Addr())}))
	g.Add("http", mc.http)
	if cfg.PollAddr != "" {
		mc.poll, err = ListenPoll(cfg.PollAddr, mc.cache, PollOptions{
			MaxWait: cfg.MaxWait, DefaultWait: cfg.DefaultWait, IdleTimeout: cfg.PollIdleTimeout,
			MaxRequestsPerSecond: cfg.PollRateLimit, Stale: mc.Stale, metrics: m, pollers: pollers,
			Authenticate: func(h string) *api.FieldError { _, fe := verifier.Verify(h); return fe },
		})
		if err != nil {
			return nil, errors.Join(err, g.Stop(context.Background()))
		}
		g.Add("poll port", mc.poll)
	}
	if cfg.XDSAddr != "" {
		// ADS over mTLS when the service has its identity (the CA key, or
		// certificate files): the client certificate names the caller.
		opts := xds.Options{Log: log, Registerer: reg, PriorityRoutes: cfg.XDSPriorityRoutes}
		if t := sec.XDSServerTLS(); t != nil {
			opts.TLS, opts.Identify = t, sec.PeerService
		}
		mc.xds, err = xds.New(cfg.XDSAddr, xdsState{mc.cache}, opts)
		if err != nil {
			return nil, errors.Join(err, g.Stop(context.Background()))
		}
		mirror("config mirror", keys.Configs(), mc.xds.Governance().ConfigMirror())
		mirror("pin mirror", keys.Pins(), mc.xds.Governance().PinMirror())
		g.Add("xds", lifecycle.Func(mc.xds.Run))
		stopFollowing := mc.cache.OnAnyChange(mc.xds.Changed)
		g.Add("xds changes", lifecycle.OnStop(func(context.Context) error { stopFollowing(); return nil }))
		mc.http.GET("/v1/xds/status", authenticate, mc.xdsStatus)
	}
	g.Add("long polls", lifecycle.OnStop(func(context.Context) error {
		close(mc.stopping)
		return nil
	}))
	return mc, nil
}

// replicaName tells mesh-core replicas apart in the time series: the host
// name (the pod name in Kubernetes), and the port when it is not the default.
func replicaName(addr string) string {
	host, _ := os.Hostname()
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "7703" {
		return host + ":" + port
	}
	return host
}

// Addr is the HTTP address (registry, discovery).
func (mc *MeshCore) Addr() string { return mc.http.Addr() }

// KitexAddr is the address MeshCore.PublishPolicy and PublishPolicies are served on.
func (mc *MeshCore) KitexAddr() string { return mc.kitex.Addr() }

// Stale tells whether mesh-core serves from memory without a live etcd.
func (mc *MeshCore) Stale() bool {
	if !mc.health.OK() {
		return true
	}
	for _, m := range mc.mirrors {
		if !m.Synced() {
			return true
		}
	}
	return false
}

// Start follows etcd and serves. It returns the first start error, once what
// had started is stopped.
func (mc *MeshCore) Start() error {
	if err := mc.parts.Start(); err != nil {
		return err
	}
	mc.log.Info("mesh-core started", "http", mc.http.Addr(), "kitex", mc.kitex.Addr(), "poll", mc.PollAddr(), "xds", mc.XDSAddr())
	return nil
}

// expirePolicies tells the cache whether mesh-core follows etcd, and expires
// the policies grown too old on the time spent in touch with it: while etcd
// is away (or a mirror does not follow it) no policy expires, so none flips
// to static weights during an outage.
func (mc *MeshCore) expirePolicies(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			inTouch := !mc.Stale()
			mc.cache.SetInTouch(inTouch)
			if inTouch {
				mc.cache.expirePolicies()
			}
		}
	}
}

// Stop releases the waiting long polls (304), then stops serving.
func (mc *MeshCore) Stop(ctx context.Context) error {
	err := mc.parts.Stop(ctx)
	mc.log.Info("mesh-core stopped")
	return err
}

// Failed is closed when a part of mesh-core fails after it started; Err says
// which and why.
func (mc *MeshCore) Failed() <-chan struct{} { return mc.parts.Failed() }

// Err is the failure Failed reports, or nil.
func (mc *MeshCore) Err() error { return mc.parts.Err() }

// readiness: mesh-core is ready once it has had etcd's state: a probe
// answered and every mirror listed its prefix. From then on it stays ready
// while etcd is away, serving its last snapshots (staleness says so): taking
// it out of its Service then would leave the data planes nothing.
func (mc *MeshCore) readiness() []string {
	var reasons []string
	if mc.health.LastOK().IsZero() {
		reasons = append(reasons, "etcd never reached: nothing to serve yet")
	}
	for _, m := range mc.mirrors {
		if m.Revision() == 0 {
			reasons = append(reasons, "not synced with etcd yet (a mirror has not listed its prefix)")
			break
		}
	}
	if mc.peers != nil {
		reasons = append(reasons, mc.peers.starting()...)
	}
	return reasons
}

// peerDetail is /readyz's "peers": each peer's state. A lost peer never
// makes this mesh-core unready: its own cluster is served all the same.
func (mc *MeshCore) peerDetail() map[string]any {
	if mc.peers == nil {
		return nil
	}
	return map[string]any{"peers": mc.peers.States()}
}

// Peers is the state of every peer control plane this one imports from.
func (mc *MeshCore) Peers() map[string]PeerState {
	if mc.peers == nil {
		return nil
	}
	return mc.peers.States()
}

// staleness says why mesh-core serves its last snapshots rather than etcd's
// live state; empty while it follows etcd.
func (mc *MeshCore) staleness() []string {
	var detail []string
	if !mc.health.OK() {
		detail = append(detail, fmt.Sprintf("etcd unreachable since %s: serving the last snapshot", mc.health.LastOK().Format(time.RFC3339)))
	}
	for _, m := range mc.mirrors {
		if !m.Synced() {
			detail = append(detail, "not following etcd (watch down): serving the last snapshot")
			break
		}
	}
	return detail
}

type metrics struct {
	push          prometheus.Histogram
	polls         *prometheus.CounterVec
	waiting       prometheus.Gauge
	snapshots     prometheus.Counter
	registrations *prometheus.CounterVec
	policies      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		push: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sextant_meshcore_push_seconds",
			Help:    "Time from a snapshot change to the answer of each long poll it released.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_meshcore_polls_total",
			Help: "Discovery answers, by result: changed (200) or not_modified (304 after the wait).",
		}, []string{"result"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sextant_meshcore_pollers_waiting",
			Help: "Discovery long polls held open now.",
		}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sextant_meshcore_snapshot_changes_total",
			Help: "Service snapshots replaced by a new version.",
		}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_meshcore_registrations_total",
			Help: "Registry calls, by operation (register, heartbeat, deregister) and result.",
		}, []string{"op", "result"}),
		policies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_meshcore_policies_total",
			Help: "PublishPolicy calls, by result (stored, stale_version, invalid, unknown_instance, unavailable, conflict).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.push, m.polls, m.waiting, m.snapshots, m.registrations, m.policies)
	return m
}

func (m *metrics) observe(reg prometheus.Registerer, mc *MeshCore) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sextant_meshcore_services",
			Help: "Services with a snapshot.",
		}, func() float64 { return float64(mc.cache.Services()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sextant_meshcore_stale",
			Help: "1 while mesh-core serves from memory without a live etcd.",
		}, func() float64 {
			if mc.Stale() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sextant_meshcore_etcd_connected",
			Help: "1 while mesh-core follows etcd (probe answered, every mirror watching); 0 while it serves its last state.",
		}, func() float64 {
			if mc.Stale() {
				return 0
			}
			return 1
		}),
	)
}
