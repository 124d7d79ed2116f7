package api

import (
	"fmt"
	"strings"
	"time"
)

// DefaultPrefix is the etcd prefix every Sextant key lives under unless a
// service is told otherwise (--etcd-prefix).
const DefaultPrefix = "/sextant/v1/"

// The etcd layout under the prefix, with the value each key holds:
//
//	registry/{service}/{instance}        Registration, under the instance's lease (mesh-core)
//	policy/{service}                     Policy (mesh-core, from the weight-calculator)
//	config/{server}/{kind}               Entry of a server-scoped kind (config-center)
//	config/{server}/{kind}/{client}      Entry of a client-scoped kind (config-center)
//	config/{service}/calculator          the weight-calculator's knobs for a service (docs/weights.md)
//	config-history/{config path}/{rev}   Entry as it was at revision rev (20 digits)
//	audit/{unix ns, 20 digits}-{nonce}   AuditEntry
//	pins/{service}                       []Pin
//	shards/{id}                          a calculator shard's membership, under its lease
//	tokens/{id}                          StoredToken: a data-plane token's hash (config-center)
//	ca/root                              the certificate authority: its roots, their keys sealed (docs/security.md)
//
// Services read and write these keys only through Keys.
const (
	dirRegistry = "registry/"
	dirPolicy   = "policy/"
	dirConfig   = "config/"
	dirHistory  = "config-history/"
	dirAudit    = "audit/"
	dirPins     = "pins/"
	dirShards   = "shards/"
	dirTokens   = "tokens/"
	dirCA       = "ca/"
)

// Keys builds the etcd keys of one Sextant installation.
type Keys struct {
	Prefix string // DefaultPrefix unless configured
}

// Registry is the directory of every registration.
func (k Keys) Registry() string { return k.Prefix + dirRegistry }

// ServiceRegistry is the directory of one service's registrations.
func (k Keys) ServiceRegistry(service string) string { return k.Registry() + service + "/" }

// Instance is where one instance's Registration lives.
func (k Keys) Instance(service, instance string) string {
	return k.ServiceRegistry(service) + instance
}

// Policies is the directory of every Policy.
func (k Keys) Policies() string { return k.Prefix + dirPolicy }

// Policy is where a service's Policy lives.
func (k Keys) Policy(service string) string { return k.Policies() + service }

// Configs is the directory of every config Entry.
func (k Keys) Configs() string { return k.Prefix + dirConfig }

// Config is where a config Entry lives: ConfigPath below Configs.
func (k Keys) Config(server, kind, client string) string {
	return k.Configs() + ConfigPath(server, kind, client)
}

// ConfigHistory is the directory of a config's past versions.
func (k Keys) ConfigHistory(server, kind, client string) string {
	return k.Prefix + dirHistory + ConfigPath(server, kind, client) + "/"
}

// ConfigVersion is where a config's version of revision rev is kept; the
// zero-padded revision sorts the history by key.
func (k Keys) ConfigVersion(server, kind, client string, rev int64) string {
	return fmt.Sprintf("%s%020d", k.ConfigHistory(server, kind, client), rev)
}

// Audit is the directory of the audit records, sorted by time.
func (k Keys) Audit() string { return k.Prefix + dirAudit }

// AuditRecord is where an audit record written at is kept; nonce tells
// apart two records of the same nanosecond.
func (k Keys) AuditRecord(at time.Time, nonce uint16) string {
	return fmt.Sprintf("%s%020d-%04x", k.Audit(), at.UnixNano(), nonce)
}

// Pins is the directory of every service's pins.
func (k Keys) Pins() string { return k.Prefix + dirPins }

// PinsOf is where one service's pins live.
func (k Keys) PinsOf(service string) string { return k.Pins() + service }

// Shards is the directory of the calculator shards' memberships.
func (k Keys) Shards() string { return k.Prefix + dirShards }

// Shard is where one shard's membership lives.
func (k Keys) Shard(id string) string { return k.Shards() + id }

// ConfigPath is a config's path below the config directory:
// {server}/{kind} for a server-scoped kind, {server}/{kind}/{client} for a
// client-scoped one (client non-empty).
func ConfigPath(server, kind, client string) string {
	if client == "" {
		return server + "/" + kind
	}
	return server + "/" + kind + "/" + client
}

// ParseConfigPath splits a ConfigPath; ok is false when it has neither two
// nor three segments.
func ParseConfigPath(path string) (server, kind, client string, ok bool) {
	parts := strings.Split(path, "/")
	switch len(parts) {
	case 2:
		return parts[0], parts[1], "", true
	case 3:
		return parts[0], parts[1], parts[2], true
	}
	return "", "", "", false
}

// ParseInstancePath splits the path of a registration below Registry:
// {service}/{instance}.
func ParseInstancePath(path string) (service, instance string, ok bool) {
	service, instance, ok = strings.Cut(path, "/")
	return service, instance, ok && service != "" && instance != "" && !strings.Contains(instance, "/")
}

// Layouts of Kitex's own etcd suites, which Sextant reads or writes beside
// its own keys.
const (
	// KitexRegistryPrefix is where kitex-contrib/registry-etcd registers
	// instances: {prefix}/{service}/{addr}. mesh-core lists them read-only.
	KitexRegistryPrefix = "kitex/registry-etcd"
	// KitexConfigPrefix is where kitex-contrib/config-etcd reads governance
	// config; the config-center writes copies there (KitexConfigKey).
	KitexConfigPrefix = "/KitexConfig"
)

// KitexConfigKey is where the config-etcd suite reads a config of category
// for server (and client, for client-scoped kinds).
func KitexConfigKey(prefix, server, client, category string) string {
	if client == "" {
		return prefix + "/" + server + "/" + category
	}
	return prefix + "/" + client + "/" + server + "/" + category
}

// Tokens is the prefix of the data-plane tokens.
func (k Keys) Tokens() string { return k.Prefix + dirTokens }

// Token is where the token with this ID is kept.
func (k Keys) Token(id string) string { return k.Tokens() + id }

// CA is the directory of the certificate authority.
func (k Keys) CA() string { return k.Prefix + dirCA }

// CARoot is where the authority's roots are kept: their certificates, and
// their keys sealed under the CA key file.
func (k Keys) CARoot() string { return k.CA() + "root" }
