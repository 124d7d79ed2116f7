// Package calculator is the weight-calculator: a Kitex server for
// Aggregator.Ingest that keeps per-(service, instance) windows of telemetry,
// and an admin HTTP port.
package calculator

import (
	"flag"
	"os"
	"strconv"
	"time"

	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// Config is every setting of the weight-calculator (docs/configuration.md).
type Config struct {
	// Auth names the operators' tokens; data-plane tokens live in etcd.
	Auth authn.Config
	// TLS serves the admin port over TLS, with client certificates as
	// credentials (docs/security.md).
	TLS           mtls.Config
	ID            string
	KitexAddr     string
	AdvertiseAddr string
	AdminAddr     string
	// Etcd is where the service keeps its state, and how it connects.
	Etcd         etcdx.Config
	LeaseTTL     time.Duration
	Window       time.Duration
	Windows      int
	StaleAfter   time.Duration
	MaxSeries    int
	MeshCoreAddr string
	RPCTimeout   time.Duration
	// ManualRounds turns the round timer off; rounds then run only when
	// Round is called. For tests that step through windows.
	ManualRounds bool
	// Now is the clock records are stamped with on arrival; nil is time.Now.
	// Tests that step through windows set it with ManualRounds.
	Now func() time.Time
	// TSDB is where the service writes its time series (InfluxDB).
	TSDB tsdb.Config
}

// DefaultConfig is the configuration `sextant dev` runs with.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		TSDB:         tsdb.DefaultConfig(),
		ID:           host + "-" + strconv.Itoa(os.Getpid()),
		KitexAddr:    "127.0.0.1:7702",
		AdminAddr:    "127.0.0.1:7712",
		Etcd:         etcdx.DefaultConfig(),
		LeaseTTL:     10 * time.Second,
		Window:       time.Second,
		Windows:      10,
		StaleAfter:   time.Minute,
		MaxSeries:    200_000,
		MeshCoreAddr: "127.0.0.1:7713",
		RPCTimeout:   3 * time.Second,
	}
}

// RegisterFlags binds c's fields to flags, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.TSDB.RegisterFlags(fs)
	c.Auth.RegisterFlags(fs)
	c.TLS.RegisterFlags(fs)
	fs.StringVar(&c.ID, "id", c.ID, "shard id, unique among calculators and stable across restarts where possible (the pod name); owners are hashed on it")
	fs.StringVar(&c.KitexAddr, "kitex-addr", c.KitexAddr, "listen address of the Kitex server (Aggregator.Ingest)")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", c.AdvertiseAddr, "address mixers dial, registered in etcd (default: the Kitex listen address)")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "listen address of the admin HTTP port (/healthz, /readyz, /metrics, /debug/windows)")
	c.Etcd.RegisterFlags(fs)
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "TTL of the shard registration; a shard that dies loses its services after this")
	fs.DurationVar(&c.Window, "window", c.Window, "length of one aggregation window")
	fs.IntVar(&c.Windows, "windows", c.Windows, "number of windows kept per (service, instance)")
	fs.DurationVar(&c.StaleAfter, "stale-after", c.StaleAfter, "forget an instance not reported for this long")
	fs.StringVar(&c.MeshCoreAddr, "mesh-core-addr", c.MeshCoreAddr, "Kitex address of mesh-core (MeshCore.PublishPolicies); a Kubernetes Service name works")
	fs.DurationVar(&c.RPCTimeout, "rpc-timeout", c.RPCTimeout, "timeout of one MeshCore.PublishPolicies call (a batch of up to 64 services)")
	fs.IntVar(&c.MaxSeries, "max-series", c.MaxSeries, "most (service, instance) series kept; records of new series beyond it are refused and counted")
}
