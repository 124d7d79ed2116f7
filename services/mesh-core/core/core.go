package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app/server"
	kserver "github.com/cloudwego/kitex/server"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/tsdb"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
)

// MeshCore is the mesh-core service.
type MeshCore struct {
	cfg     Config
	log     *slog.Logger
	etcd    *clientv3.Client
	cache   *Cache
	health  *etcdx.Health
	mirrors []*etcdx.Mirror
	series  *tsdb.Writer
	reg     *prometheus.Registry

	http      *httpx.Server
	kitex     kserver.Server
	poll      *PollServer // nil when --poll-addr is empty
	live      *liveness
	kitexAddr string
	kitexDone <-chan error

	stopping chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// New binds mesh-core's ports and connects to etcd; Start serves.
func New(cfg Config, log *slog.Logger) (*MeshCore, error) {
	reg := httpx.NewRegistry()
	m := newMetrics(reg)

	cli, err := etcdx.NewClient(cfg.EtcdEndpoints)
	if err != nil {
		return nil, err
	}
	keys := api.Keys{Prefix: cfg.EtcdPrefix}
	mc := &MeshCore{
		cfg: cfg, log: log, etcd: cli,
		cache:    NewCache(cfg.PolicyTTL, cfg.MaxServices, log),
		health:   etcdx.NewHealth(cli, keys.Registry(), cfg.HealthProbe),
		stopping: make(chan struct{}),
	}
	mc.cache.onSnapshot = m.snapshots.Inc
	mc.cache.SetCoalesce(cfg.Coalesce)
	mc.mirrors = []*etcdx.Mirror{
		etcdx.NewMirror(cli, keys.Registry(), registryMirror{mc.cache}, log),
		etcdx.NewMirror(cli, keys.Policies(), policyMirror{mc.cache}, log),
	}
	if cfg.KitexRegistryPrefix != "" {
		mc.mirrors = append(mc.mirrors, etcdx.NewMirror(cli, strings.TrimSuffix(cfg.KitexRegistryPrefix, "/")+"/", kitexRegistryMirror{mc.cache}, log))
	}
	m.observe(reg, mc)
	mc.series = tsdb.New(cfg.TSDB, "mesh-core", log)
	mc.series.Register(reg, "sextant_meshcore")
	mc.reg = reg

	ln, err := kitexx.Listen(cfg.KitexAddr)
	if err != nil {
		cli.Close()
		return nil, err
	}
	mc.kitexAddr = ln.Addr().String()
	mc.kitex = meshcoresvc.NewServer(&policyStore{etcd: cli, keys: api.Keys{Prefix: cfg.EtcdPrefix}, cache: mc.cache, metrics: m},
		kitexx.ServerOptions("mesh-core", ln)...)

	// Bodies are streamed so an oversized registration gets a JSON 413;
	// the request context ends when a long-polling client goes away.
	mc.http, err = httpx.Listen(cfg.HTTPAddr, server.WithStreamBody(true), server.WithSenseClientDisconnection(true),
		server.WithExitWaitTime(cfg.ShutdownGrace))
	if err != nil {
		ln.Close()
		cli.Close()
		return nil, err
	}
	mc.live = newLiveness(cli, cfg.SessionTTL, log)
	r := &registry{etcd: cli, live: mc.live, cache: mc.cache, keys: api.Keys{Prefix: cfg.EtcdPrefix}, defaultTTL: int64(cfg.DefaultTTL.Seconds()), maxBody: cfg.MaxBodyBytes, metrics: m, log: log}
	d := &discovery{cache: mc.cache, stale: mc.Stale, maxWait: cfg.MaxWait, defaultWait: cfg.DefaultWait, stopping: mc.stopping, metrics: m}
	mc.http.POST("/v1/instances", r.register)
	mc.http.PUT("/v1/instances/:service/:instance/heartbeat", r.heartbeat)
	mc.http.DELETE("/v1/instances/:service/:instance", r.deregister)
	mc.http.GET("/v1/discovery/:service", d.one)
	mc.http.GET("/v1/discovery", d.many)
	if err := mc.listenPoll(cfg, m); err != nil {
		mc.http.Stop(context.Background())
		ln.Close()
		cli.Close()
		return nil, err
	}
	httpx.HealthRoutes(mc.http, mc.readiness)
	httpx.MetricsRoute(mc.http, reg)
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
func (mc *MeshCore) KitexAddr() string { return mc.kitexAddr }

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

// Start follows etcd and serves.
func (mc *MeshCore) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	mc.cancel = cancel
	for _, m := range mc.mirrors {
		mc.wg.Go(func() { m.Run(ctx) })
	}
	mc.wg.Go(func() { mc.health.Run(ctx) })
	mc.wg.Go(func() { mc.expirePolicies(ctx) })
	mc.wg.Go(func() { mc.live.Run(ctx, time.Second) })
	mc.wg.Go(func() {
		mc.series.Export(ctx, mc.reg, "sextant_meshcore", "sextant_meshcore_", map[string]string{"replica": replicaName(mc.http.Addr())})
	})
	mc.wg.Go(func() { mc.runPoll(ctx) })
	mc.kitexDone = kitexx.Serve(mc.kitex)
	mc.http.Start()
	mc.log.Info("mesh-core started", "http", mc.http.Addr(), "kitex", mc.kitexAddr, "poll", mc.PollAddr())
	return nil
}

func (mc *MeshCore) expirePolicies(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			mc.cache.expirePolicies()
		}
	}
}

// Stop releases the waiting long polls (304), then stops serving.
func (mc *MeshCore) Stop(ctx context.Context) error {
	mc.stopOnce.Do(func() {
		close(mc.stopping)
		err := mc.http.Stop(ctx)
		err = errors.Join(err, mc.kitex.Stop())
		if mc.kitexDone != nil {
			<-mc.kitexDone
		}
		if mc.cancel != nil {
			mc.cancel()
		}
		mc.wg.Wait()
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		mc.series.Close(sctx)
		scancel()
		mc.stopErr = errors.Join(err, mc.etcd.Close())
		mc.log.Info("mesh-core stopped")
	})
	return mc.stopErr
}

// readiness: mesh-core is healthy while it serves from memory, but not ready
// (degraded) while etcd is out of reach.
func (mc *MeshCore) readiness() []string {
	var reasons []string
	if !mc.health.OK() {
		reasons = append(reasons, fmt.Sprintf("etcd unreachable since %s: serving the last snapshot", mc.health.LastOK().Format(time.RFC3339)))
	}
	for _, m := range mc.mirrors {
		if !m.Synced() {
			reasons = append(reasons, "not following etcd (watch down): serving the last snapshot")
			break
		}
	}
	return reasons
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
			Help: "Policies published (PublishPolicy, PublishPolicies), by result (stored, stale_version, invalid, unknown_instance, unavailable, conflict).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.push, m.polls, m.waiting, m.snapshots, m.registrations, m.policies)
	return m
}

func (m *metrics) observe(reg prometheus.Registerer, mc *MeshCore) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sextant_meshcore_services",
			Help: "Services with a snapshot held: with instances or a policy, or with polls waiting.",
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
	)
}
