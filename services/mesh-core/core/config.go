// Package core is mesh-core: the instance registry, the policy store (the
// Kitex server of MeshCore.PublishPolicy) and discovery for data planes,
// served from in-memory snapshots that follow etcd.
package core

import (
	"flag"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// Config is every setting of mesh-core (docs/configuration.md).
type Config struct {
	// Auth names the operators' tokens; data-plane tokens live in etcd.
	Auth authn.Config
	// TLS serves the HTTP port (not the poll port) over TLS, with client
	// certificates as credentials (docs/security.md).
	TLS       mtls.Config
	HTTPAddr  string
	KitexAddr string
	// Etcd is where the service keeps its state, and how it connects.
	Etcd etcdx.Config
	// A policy older than this (by its computed_at) no longer applies: the
	// service falls back to static weights. The calculator republishes every
	// 30 s by default. The age counts only the time mesh-core follows etcd:
	// during an outage no policy expires (the last good ones are kept).
	PolicyTTL time.Duration
	// Longest and default wait of a discovery long poll.
	MaxWait     time.Duration
	DefaultWait time.Duration
	// Most service snapshots held: services with instances or a policy, and
	// others while polls wait on them.
	MaxServices int
	// Coalesce is the shortest time between two versions of one service:
	// changes within it make one version, so a burst of registrations
	// wakes pollers once or twice, not once per registration.
	Coalesce    time.Duration
	HealthProbe time.Duration
	// SessionTTL is the TTL of this replica's etcd session lease, under
	// which it writes the instances it keeps alive: when the replica dies
	// they go after this long, unless they heartbeat another replica first.
	SessionTTL    time.Duration
	DefaultTTL    time.Duration
	MaxBodyBytes  int
	ShutdownGrace time.Duration
	// Peering is what this control plane exports to peers and imports
	// from them (multi-cluster, peering.go).
	Peering PeeringConfig
	// KitexRegistryPrefix is where the stock kitex-contrib/registry-etcd
	// registers Kitex servers; mesh-core lists them too (read-only). Empty
	// turns it off.
	KitexRegistryPrefix string
	// TSDB is where the service writes its time series (InfluxDB).
	TSDB tsdb.Config

	// PollAddr is the poll port: discovery long polls only, parked without
	// a goroutine each (docs/discovery.md). Empty turns it off.
	PollAddr string
	// A connection of the poll port without a poll in hand this long is
	// closed; one that sends more than PollRateLimit requests within a
	// second is answered 429 and closed.
	PollIdleTimeout time.Duration
	PollRateLimit   int

	// XDSAddr is the ADS port: gRPC clients (`xds:///service`) and Envoy
	// get the registry, weights, overload decisions and governance over
	// xDS (docs/xds.md). Empty turns it off; `sextant dev` serves it on
	// 127.0.0.1:7723.
	XDSAddr string
	// XDSPriorityRoutes sheds an overloaded service's xDS callers on the
	// routes, by the priority headers they send, rather than by a uniform
	// drop percentage in the endpoints (docs/xds.md#overload).
	XDSPriorityRoutes bool
}

// DefaultConfig is the configuration `sextant dev` runs with.
func DefaultConfig() Config {
	return Config{
		TSDB:                tsdb.DefaultConfig(),
		HTTPAddr:            "127.0.0.1:7703",
		KitexAddr:           "127.0.0.1:7713",
		PollAddr:            "127.0.0.1:7733",
		PollIdleTimeout:     time.Minute,
		PollRateLimit:       20,
		Etcd:                etcdx.DefaultConfig(),
		PolicyTTL:           2 * time.Minute,
		MaxWait:             60 * time.Second,
		DefaultWait:         30 * time.Second,
		MaxServices:         100_000,
		Coalesce:            50 * time.Millisecond,
		HealthProbe:         time.Second,
		SessionTTL:          15 * time.Second,
		DefaultTTL:          30 * time.Second,
		MaxBodyBytes:        64 << 10,
		ShutdownGrace:       5 * time.Second,
		KitexRegistryPrefix: api.KitexRegistryPrefix,
		Peering:             PeeringConfig{TTL: time.Minute, Wait: 30 * time.Second},
	}
}

// RegisterFlags binds c's fields to flags, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.TSDB.RegisterFlags(fs)
	c.Auth.RegisterFlags(fs)
	c.TLS.RegisterFlags(fs)
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "listen address of the HTTP port (registry, discovery)")
	fs.StringVar(&c.KitexAddr, "kitex-addr", c.KitexAddr, "listen address of the Kitex server (MeshCore.PublishPolicy, PublishPolicies)")
	fs.StringVar(&c.PollAddr, "poll-addr", c.PollAddr, `listen address of the poll port, discovery long polls only, where a waiting poll holds no goroutine: the address to give data planes ("": off)`)
	fs.DurationVar(&c.PollIdleTimeout, "poll-idle-timeout", c.PollIdleTimeout, "a connection of the poll port without a poll in hand this long is closed")
	fs.StringVar(&c.XDSAddr, "xds-addr", c.XDSAddr, `listen address of the ADS (xDS) port for gRPC clients and Envoy, over mTLS when the service has its CA or certificate ("": off)`)
	fs.BoolVar(&c.XDSPriorityRoutes, "xds-priority-routes", c.XDSPriorityRoutes, "shed overloaded services' xDS callers on the routes by the priority headers they send (fault aborts), not by a uniform drop_overloads in the endpoints")
	fs.IntVar(&c.PollRateLimit, "poll-rate-limit", c.PollRateLimit, "most requests in a second on one connection of the poll port; beyond, 429 and the connection is closed")
	c.Etcd.RegisterFlags(fs)
	fs.DurationVar(&c.PolicyTTL, "policy-ttl", c.PolicyTTL, "a dynamic policy older than this no longer applies (static weights); time while etcd is away does not count")
	fs.DurationVar(&c.MaxWait, "max-wait", c.MaxWait, "longest wait of a discovery long poll")
	fs.DurationVar(&c.DefaultWait, "default-wait", c.DefaultWait, "wait of a discovery long poll that names none")
	fs.DurationVar(&c.Coalesce, "coalesce", c.Coalesce, "shortest time between two versions of one service: changes within it make one version (0: every change)")
	fs.DurationVar(&c.SessionTTL, "session-ttl", c.SessionTTL, "TTL of this replica's etcd session lease, under which the instances it keeps alive are written (they go this long after the replica dies, unless another replica adopts them)")
	fs.IntVar(&c.MaxServices, "max-services", c.MaxServices, "most service snapshots held: services with instances or a policy, and others while polls wait on them (a wait beyond answers 429)")
	fs.DurationVar(&c.HealthProbe, "etcd-probe-interval", c.HealthProbe, "how often etcd is probed; answers are marked stale while it fails")
	fs.DurationVar(&c.DefaultTTL, "default-ttl", c.DefaultTTL, "lease TTL of a registration that names none")
	fs.IntVar(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "largest registration body accepted; 413 beyond")
	fs.StringVar(&c.KitexRegistryPrefix, "kitex-registry-prefix", c.KitexRegistryPrefix, "etcd prefix of the kitex-contrib/registry-etcd registry, listed read-only beside Sextant's own (empty: off)")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "how long a stopping mesh-core lets long polls finish")
	c.Peering.RegisterFlags(fs)
}
