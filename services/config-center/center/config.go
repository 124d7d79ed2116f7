package center

import (
	"flag"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// Config is every setting of the config-center (docs/configuration.md).
type Config struct {
	HTTPAddr string
	// Etcd is where the service keeps its state, and how it connects.
	Etcd etcdx.Config
	// Prefix of the keys the kitex-contrib/config-etcd suite watches.
	KitexPrefix string
	// Auth names the operators' tokens; data-plane tokens live in etcd.
	Auth authn.Config
	// OIDC names the issuer of the Kubernetes service-account tokens a
	// workload may prove its identity with at POST /v1/certificates.
	OIDC authn.OIDCConfig
	// TLS serves the API over TLS (--tls-cert, --tls-key, or a certificate
	// of the authority when CAKeyFile is given); with CAKeyFile the
	// config-center also issues workload certificates.
	TLS mtls.Config
	// CertTTL is the lifetime of the workload certificates issued (at most
	// pki.MaxLeafTTL); a request may ask for less.
	CertTTL      time.Duration
	MaxWait      time.Duration
	DefaultWait  time.Duration
	MaxBodyBytes int
	// How long an instance's applied version counts in /status after its last poll.
	StatusTTL time.Duration
	// TSDB is where the service writes its time series (InfluxDB).
	TSDB tsdb.Config
	// Retention bounds history and audit in etcd.
	Retention Retention
}

// DefaultConfig is the configuration `sextant dev` runs with.
func DefaultConfig() Config {
	return Config{
		TSDB:         tsdb.DefaultConfig(),
		HTTPAddr:     "127.0.0.1:7704",
		Etcd:         etcdx.DefaultConfig(),
		KitexPrefix:  api.KitexConfigPrefix,
		MaxWait:      60 * time.Second,
		DefaultWait:  30 * time.Second,
		MaxBodyBytes: 256 << 10,
		StatusTTL:    5 * time.Minute,
		CertTTL:      time.Hour,
		Retention:    Retention{HistoryKeep: 100, AuditKeep: 100_000, AuditMaxAge: 90 * 24 * time.Hour},
	}
}

// RegisterFlags binds c's fields to flags, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.TSDB.RegisterFlags(fs)
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "listen address of the API")
	c.Etcd.RegisterFlags(fs)
	fs.StringVar(&c.KitexPrefix, "kitex-prefix", c.KitexPrefix, "prefix of the keys the kitex-contrib/config-etcd suite reads")
	c.Auth.RegisterFlags(fs)
	c.OIDC.RegisterFlags(fs)
	c.TLS.RegisterFlags(fs)
	fs.DurationVar(&c.CertTTL, "cert-ttl", c.CertTTL, "lifetime of the workload certificates issued at POST /v1/certificates (at most 24h)")
	fs.DurationVar(&c.MaxWait, "max-wait", c.MaxWait, "longest watch long poll")
	fs.DurationVar(&c.DefaultWait, "default-wait", c.DefaultWait, "wait of a watch that names none")
	fs.IntVar(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "largest request body; 413 beyond")
	fs.DurationVar(&c.StatusTTL, "status-ttl", c.StatusTTL, "how long an instance counts in /status after its last watch")
	fs.IntVar(&c.Retention.HistoryKeep, "history-keep", c.Retention.HistoryKeep, "past versions kept per config (0: all)")
	fs.IntVar(&c.Retention.AuditKeep, "audit-keep", c.Retention.AuditKeep, "audit records kept, the newest (0: all)")
	fs.DurationVar(&c.Retention.AuditMaxAge, "audit-max-age", c.Retention.AuditMaxAge, "audit records older than this are dropped (0: kept)")
}
