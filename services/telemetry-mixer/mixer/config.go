// Package mixer is the telemetry-mixer: it takes telemetry reports over HTTP,
// validates them, and forwards them in batches over Kitex to the
// weight-calculator shard that owns each service.
package mixer

import (
	"flag"
	"os"
	"strconv"
	"time"

	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/telemetry"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// Config is every setting of the telemetry-mixer (docs/configuration.md).
type Config struct {
	// Auth names the operators' tokens; data-plane tokens live in etcd.
	Auth authn.Config
	// TLS serves the ingest port over TLS, with client certificates as
	// credentials (docs/security.md).
	TLS      mtls.Config
	ID       string
	HTTPAddr string
	// Etcd is where the service keeps its state, and how it connects.
	Etcd         etcdx.Config
	MaxBodyBytes int
	Limits       telemetry.Limits
	Forward      ForwardConfig
	// TSDB is where the service writes its time series (InfluxDB).
	TSDB tsdb.Config
}

// ForwardConfig tunes the queue and batching towards the calculator shards.
type ForwardConfig struct {
	// Records (server parts, call edges, denials) held between acceptance and
	// the calculator's answer; beyond it ingest answers 429.
	QueueRecords int
	// A batch is sent at least this often, or sooner when MaxBatchRecords are waiting.
	FlushInterval   time.Duration
	MaxBatchRecords int
	// Calls in flight to one shard at a time.
	MaxInflightPerShard int
	RPCTimeout          time.Duration
	// Records that cannot be delivered are retried with backoff for this long,
	// then dropped and counted.
	RetryFor      time.Duration
	RetryBase     time.Duration
	RetryMax      time.Duration
	ShutdownGrace time.Duration
}

// DefaultConfig is the configuration `sextant dev` runs with.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		TSDB:         tsdb.DefaultConfig(),
		ID:           host + "-" + strconv.Itoa(os.Getpid()),
		HTTPAddr:     "127.0.0.1:7701",
		Etcd:         etcdx.DefaultConfig(),
		MaxBodyBytes: 4 << 20,
		Limits:       telemetry.DefaultLimits(),
		Forward: ForwardConfig{
			QueueRecords:        200_000,
			FlushInterval:       100 * time.Millisecond,
			MaxBatchRecords:     5000,
			MaxInflightPerShard: 2,
			RPCTimeout:          3 * time.Second,
			RetryFor:            30 * time.Second,
			RetryBase:           100 * time.Millisecond,
			RetryMax:            2 * time.Second,
			ShutdownGrace:       5 * time.Second,
		},
	}
}

// RegisterFlags binds c's fields to flags, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.TSDB.RegisterFlags(fs)
	fs.StringVar(&c.ID, "id", c.ID, "mixer id, in logs and batch ids")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "listen address of the ingest HTTP port")
	c.Auth.RegisterFlags(fs)
	c.Etcd.RegisterFlags(fs)
	c.TLS.RegisterFlags(fs)
	fs.IntVar(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "largest request body accepted; 413 beyond")
	l := &c.Limits
	fs.IntVar(&l.MaxReportsPerRequest, "max-reports-per-request", l.MaxReportsPerRequest, "most reports in one request")
	fs.IntVar(&l.MaxCallsPerReport, "max-calls-per-report", l.MaxCallsPerReport, "most call edges in one report")
	fs.IntVar(&l.MaxDenialsPerReport, "max-denials-per-report", l.MaxDenialsPerReport, "most dry-run denials in one report")
	fs.DurationVar(&l.MinWindow, "min-window", l.MinWindow, "shortest window_ms accepted")
	fs.DurationVar(&l.MaxWindow, "max-window", l.MaxWindow, "longest window_ms accepted")
	fs.DurationVar(&l.MaxFutureSkew, "max-future-skew", l.MaxFutureSkew, "how far timestamp_ms may be ahead of the mixer's clock")
	fs.DurationVar(&l.MaxAge, "max-report-age", l.MaxAge, "how far timestamp_ms may be behind the mixer's clock")
	f := &c.Forward
	fs.IntVar(&f.QueueRecords, "queue-records", f.QueueRecords, "records held for forwarding; ingest answers 429 beyond")
	fs.DurationVar(&f.FlushInterval, "flush-interval", f.FlushInterval, "longest wait before a batch is sent")
	fs.IntVar(&f.MaxBatchRecords, "max-batch-records", f.MaxBatchRecords, "most records in one Ingest call")
	fs.IntVar(&f.MaxInflightPerShard, "max-inflight-per-shard", f.MaxInflightPerShard, "Ingest calls in flight to one shard")
	fs.DurationVar(&f.RPCTimeout, "rpc-timeout", f.RPCTimeout, "timeout of one Ingest call")
	fs.DurationVar(&f.RetryFor, "retry-for", f.RetryFor, "how long undeliverable records are retried before they are dropped and counted")
	fs.DurationVar(&f.RetryBase, "retry-base", f.RetryBase, "first retry delay (doubles per attempt, with jitter)")
	fs.DurationVar(&f.RetryMax, "retry-max", f.RetryMax, "longest retry delay")
	fs.DurationVar(&f.ShutdownGrace, "shutdown-grace", f.ShutdownGrace, "how long a stopping mixer keeps forwarding what it accepted")
}
