package api

import (
	"encoding/json"
	"hash/fnv"
	"slices"
)

// The config-center's API (docs/config-center.md) stores governance config
// documents of these kinds. A server-scoped kind has one document per
// service ({server}); a client-scoped one, one per caller and callee
// ({client}/{server}).
const (
	KindRPCTimeout    = "rpc_timeout"    // client-scoped, Kitex's rpctimeout.RPCTimeout per method
	KindRetry         = "retry"          // client-scoped, Kitex's retry.Policy per method
	KindCircuitBreak  = "circuit_break"  // client-scoped, Kitex's circuitbreak.CBConfig per method
	KindDegradation   = "degradation"    // client-scoped, Degradation
	KindLimit         = "limit"          // server-scoped, Kitex's limiter.LimiterConfig
	KindAccessControl = "access_control" // server-scoped, AccessControl
	KindUnitRouting   = "unit_routing"   // server-scoped, UnitRouting
	KindOverload      = "overload"       // server-scoped, overloadconf.Config
	KindPriorityRules = "priority_rules" // server-scoped, priorityrules.Document
	// KindCalculator holds the weight-calculator's knobs for one service
	// (docs/weights.md), server-scoped, weightknobs.Knobs.
	KindCalculator = "calculator"
)

// Entry is a stored config (at Keys.Config, and as the config-center's API
// answers it): the document in force and, during a rollout, the one it
// replaces.
type Entry struct {
	Kind        string          `json:"kind"`
	Scope       string          `json:"scope"`
	Revision    int64           `json:"revision"` // etcd mod revision while current
	Document    json.RawMessage `json:"document"`
	Rollout     *Rollout        `json:"rollout,omitempty"`
	UpdatedBy   string          `json:"updated_by"`
	UpdatedAtMs int64           `json:"updated_at_ms"`
	Deleted     bool            `json:"deleted,omitempty"` // in history: the config was deleted after this
}

// Rollout is a staged change: Percent of the instances (by a stable hash of
// their id) get Entry.Document, the others Previous.
type Rollout struct {
	Percent          int             `json:"percent"`
	Previous         json.RawMessage `json:"previous"`
	PreviousRevision int64           `json:"previous_revision"`
}

// AuditEntry records one write (at Keys.Audit).
type AuditEntry struct {
	AtMs        int64  `json:"at_ms"`
	Who         string `json:"who"`
	Action      string `json:"action"` // put, delete, rollback, rollout, promote, abort, pin, unpin
	Kind        string `json:"kind,omitempty"`
	Scope       string `json:"scope,omitempty"`
	Service     string `json:"service,omitempty"` // for pins
	OldRevision int64  `json:"old_revision"`
	NewRevision int64  `json:"new_revision"`
	Detail      string `json:"detail,omitempty"`
}

// Pin holds a service to one version of one config, whatever rollout runs
// (a list of them per service at Keys.Pins).
type Pin struct {
	Kind     string          `json:"kind"`
	Scope    string          `json:"scope"`
	Revision int64           `json:"revision"`
	Document json.RawMessage `json:"document"`
	PinnedBy string          `json:"pinned_by"`
	AtMs     int64           `json:"at_ms"`
}

// RolloutBucket places an instance in [0, 100) by a stable hash of its id
// (FNV-1a): a rollout to P % gives the new document to the instances whose
// bucket is below P, so the instances in a 10 % canary stay in it at 50 %.
func RolloutBucket(instance string) int {
	h := fnv.New32a()
	h.Write([]byte(instance))
	return int(h.Sum32() % 100)
}

// EffectiveOf is what an instance applies of e (whose Kind and Scope are
// set): a pin among pins (its service's) wins; during a rollout, the new
// document when inCanary says the instance is in the canary of that
// percentage (RolloutBucket(instance) < percent), the previous one
// otherwise; else the document.
func EffectiveOf(e Entry, pins []Pin, inCanary func(percent int) bool) Effective {
	for _, p := range pins {
		if p.Kind == e.Kind && p.Scope == e.Scope {
			return Effective{Kind: e.Kind, Scope: e.Scope, Revision: p.Revision, Source: SourcePinned, Document: p.Document}
		}
	}
	if ro := e.Rollout; ro != nil {
		if inCanary(ro.Percent) {
			return Effective{Kind: e.Kind, Scope: e.Scope, Revision: e.Revision, Source: SourceCanary, Document: e.Document}
		}
		return Effective{Kind: e.Kind, Scope: e.Scope, Revision: ro.PreviousRevision, Source: SourcePrevious, Document: ro.Previous}
	}
	return Effective{Kind: e.Kind, Scope: e.Scope, Revision: e.Revision, Source: SourceCurrent, Document: e.Document}
}

// StockDocument is the document of a config (of kind and scope, stored as
// e) that a data plane knowing no canary applies: a stock Kitex client
// through config-etcd, an xDS client. During a rollout it keeps the
// previous document until the rollout is promoted to 100 %; a pin (among
// pins, those of the service that applies the config) wins.
func StockDocument(kind, scope string, e *Entry, pins []Pin) json.RawMessage {
	for _, p := range pins {
		if p.Kind == kind && p.Scope == scope && p.Document != nil {
			return p.Document
		}
	}
	if e.Rollout != nil && e.Rollout.Previous != nil {
		return e.Rollout.Previous
	}
	return e.Document
}

// Effective sources: which version of a config an instance applies.
const (
	SourceCurrent  = "current"
	SourceCanary   = "canary"
	SourcePrevious = "previous"
	SourcePinned   = "pinned"
)

// Effective is one config as one instance applies it.
type Effective struct {
	Kind     string          `json:"kind"`
	Scope    string          `json:"scope"`
	Revision int64           `json:"revision"`
	Source   string          `json:"source"` // current, canary, previous (outside a canary), pinned
	Document json.RawMessage `json:"document"`
}

// WatchAnswer is the config-center's answer to an SDK's long poll
// (GET /v1/watch?service=S&instance=I&version=V&applied=A): every config
// that applies to S as I sees it (rollout and pins applied), and the dynamic
// policies (Policy) of the services it calls, by service.
type WatchAnswer struct {
	Service  string                     `json:"service"`
	Instance string                     `json:"instance"`
	Version  int64                      `json:"version"`
	Configs  []Effective                `json:"configs"`
	Policies map[string]json.RawMessage `json:"policies"`
}

// Find returns the config of kind and scope, if any applies.
func (a *WatchAnswer) Find(kind, scope string) (Effective, bool) {
	i := slices.IndexFunc(a.Configs, func(c Effective) bool { return c.Kind == kind && c.Scope == scope })
	if i < 0 {
		return Effective{}, false
	}
	return a.Configs[i], true
}

// ConfigStatus tells how many instances run which revision of a config.
type ConfigStatus struct {
	Kind       string         `json:"kind"`
	Scope      string         `json:"scope"`
	Instances  int            `json:"instances"`
	ByRevision map[string]int `json:"by_revision"`
}

// Degradation is the document of the degradation kind, as Kitex's
// config-etcd suite reads it: drop percentage of the client's requests when
// enabled.
type Degradation struct {
	Enable     bool `json:"enable"`
	Percentage int  `json:"percentage"`
}

// Validate checks the percentage.
func (d *Degradation) Validate() *FieldError {
	if d.Percentage < 0 || d.Percentage > 100 {
		return Errorf("percentage", CodeOutOfRange, "%d is outside [0, 100]", d.Percentage)
	}
	return nil
}

// Access rule types and modes.
const (
	AccessAllow = "allow"
	AccessDeny  = "deny"
	ModeEnforce = "enforce"
	ModeDryRun  = "dry_run"
	ModeObserve = "observe"
)

// AccessControl decides which callers may call a service. Deny rules block
// the callers they list; when any allow rule exists, callers no allow rule
// lists are blocked. A rule in dry_run mode blocks nothing: data planes
// count what it would have blocked and report it (Report.DryRunDenials).
//
// Identity says what happens to a request whose caller has no verified
// identity (a peer certificate chained to the trust bundle, whose SPIFFE
// service is then the caller the rules check, whatever name the request
// declares); TLS says how the service's data-plane servers take
// connections. Both are optional.
type AccessControl struct {
	Rules    []AccessRule    `json:"rules"`
	Identity *IdentityPolicy `json:"identity,omitempty"`
	TLS      string          `json:"tls,omitempty"` // permissive (default) | strict
}

// What a server does with a request whose caller's identity is missing,
// invalid or expired (IdentityPolicy).
const (
	IdentityAllow  = "allow"   // serve it, checking the rules with the caller name it declares
	IdentityDeny   = "deny"    // refuse it
	IdentityDryRun = "dry_run" // serve it as allow does, and count it as a dry-run denial
)

// Identity outcomes of a request, as IdentityPolicy and the dry-run
// denials name them (the rule of a dry-run denial is "identity-<outcome>").
const (
	IdentityVerified = "verified" // a certificate chained to the trust bundle, in its lifetime
	IdentityMissing  = "missing"  // no TLS, or no client certificate
	IdentityInvalid  = "invalid"  // a certificate not chained to the bundle, or without one SPIFFE ID
	IdentityExpired  = "expired"  // a certificate past its lifetime (or not yet in it)
)

// Data-plane TLS modes (AccessControl.TLS): a server with a workload
// certificate serves mTLS and plaintext on the same port (permissive) or
// mTLS only (strict).
const (
	TLSPermissive = "permissive"
	TLSStrict     = "strict"
)

// TLSMetadataKey is the registration metadata key by which an instance
// advertises that it serves mTLS (its value the mode it started in):
// clients dial mTLS to instances that carry it and plaintext to others.
const TLSMetadataKey = "tls"

// IdentityPolicy is what a server does with a request whose caller's
// identity is missing, invalid or expired: allow, deny or dry_run. The
// defaults keep a server without TLS as it was: missing allow, invalid
// deny, expired deny.
type IdentityPolicy struct {
	Missing string `json:"missing,omitempty"`
	Invalid string `json:"invalid,omitempty"`
	Expired string `json:"expired,omitempty"`
}

// Action is what the policy says for outcome (one of the Identity
// outcomes other than verified); p may be nil.
func (p *IdentityPolicy) Action(outcome string) string {
	var v string
	if p != nil {
		switch outcome {
		case IdentityMissing:
			v = p.Missing
		case IdentityInvalid:
			v = p.Invalid
		case IdentityExpired:
			v = p.Expired
		}
	}
	switch {
	case v != "":
		return v
	case outcome == IdentityMissing:
		return IdentityAllow
	default:
		return IdentityDeny
	}
}

// TLSMode is the data-plane TLS mode in force (permissive when unset); ac
// may be nil.
func (ac *AccessControl) TLSMode() string {
	if ac == nil || ac.TLS == "" {
		return TLSPermissive
	}
	return ac.TLS
}

// AccessRule is one allow or deny list.
type AccessRule struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"` // allow | deny
	Callers []string `json:"callers"`
	Methods []string `json:"methods,omitempty"` // empty: every method
	Mode    string   `json:"mode"`              // enforce | dry_run
}

// Validate names the first bad field of the rules.
func (ac *AccessControl) Validate() *FieldError {
	if ac.TLS != "" && ac.TLS != TLSPermissive && ac.TLS != TLSStrict {
		return Errorf("tls", CodeInvalidValue, "want permissive or strict, got %q", ac.TLS)
	}
	if p := ac.Identity; p != nil {
		for _, f := range []struct{ name, v string }{{"missing", p.Missing}, {"invalid", p.Invalid}, {"expired", p.Expired}} {
			if f.v != "" && f.v != IdentityAllow && f.v != IdentityDeny && f.v != IdentityDryRun {
				return Errorf(Join("identity", f.name), CodeInvalidValue, "want allow, deny or dry_run, got %q", f.v)
			}
		}
	}
	names := uniqueNames{}
	for i, r := range ac.Rules {
		at := func(f string) string { return Join(Index("rules", i), f) }
		if fe := names.add(at("name"), r.Name); fe != nil {
			return fe
		}
		if r.Type != AccessAllow && r.Type != AccessDeny {
			return Errorf(at("type"), CodeInvalidValue, "want allow or deny, got %q", r.Type)
		}
		if r.Mode != ModeEnforce && r.Mode != ModeDryRun {
			return Errorf(at("mode"), CodeInvalidValue, "want enforce or dry_run, got %q", r.Mode)
		}
		if len(r.Callers) == 0 {
			return Errorf(at("callers"), CodeMissingField, "a rule lists at least one caller service")
		}
		for j, c := range r.Callers {
			if fe := Name(Index(at("callers"), j), c, true); fe != nil {
				return fe
			}
		}
		for j, m := range r.Methods {
			if fe := Name(Index(at("methods"), j), m, true); fe != nil {
				return fe
			}
		}
	}
	return nil
}

// Check tells whether caller calling method is denied, by which rule, and
// whether that rule is only a dry run. Enforced rules are checked before
// dry-run ones.
func (ac *AccessControl) Check(caller, method string) (denied bool, rule string, dryRun bool) {
	for _, mode := range []string{ModeEnforce, ModeDryRun} {
		allowSeen, allowed, allowRule := false, false, ""
		for _, ru := range ac.Rules {
			if ru.Mode != mode || (len(ru.Methods) > 0 && !slices.Contains(ru.Methods, method)) {
				continue
			}
			listed := slices.Contains(ru.Callers, caller)
			switch ru.Type {
			case AccessDeny:
				if listed {
					return true, ru.Name, mode == ModeDryRun
				}
			case AccessAllow:
				allowSeen, allowRule = true, ru.Name
				allowed = allowed || listed
			}
		}
		if allowSeen && !allowed {
			return true, allowRule, mode == ModeDryRun
		}
	}
	return false, "", false
}

// UnitRouting sends requests that match a rule to a unit: a group of the
// callee's instances (a cluster, a zone, or instances with given metadata
// labels). Callers' SDKs apply it (docs/units.md): rules are tried in order
// and the first whose every condition matches decides. A rule in observe
// mode routes nothing: the SDK counts where each request would have gone
// (Report.UnitRoutes); in enforce mode it routes Percent of the request keys
// (a stable hash of the tenant/user key, else of the request id) to the
// unit, refuses the requests the rule denies, and falls back when the unit
// has no healthy instance. Parsed and compiled by api/unitrouting.
type UnitRouting struct {
	// Key is the header or metainfo key (lower case) of the request key: a
	// tenant or user id, matched by match.keys and hashed for percent
	// (default x-tenant-id).
	Key string `json:"key,omitempty"`
	// RequestIDKey is the key of the request id, hashed for percent when a
	// request has no Key (default x-request-id).
	RequestIDKey string     `json:"request_id_key,omitempty"`
	Rules        []UnitRule `json:"rules"`
}

// Unit-routing defaults and values.
const (
	DefaultUnitKey       = "x-tenant-id"
	DefaultUnitRequestID = "x-request-id"
	UnitFallbackFail     = "fail" // the request fails (the default)
	UnitFallbackAny      = "any"  // the request goes to any instance, as without the rule
	MaxUnitRules         = 1000
	MaxUnitKeys          = 10000 // values in one rule's match.keys
)

// UnitRule is one routing rule; every condition given must match.
type UnitRule struct {
	Name  string    `json:"name"`
	Match UnitMatch `json:"match"`
	// Unit names the target unit. Its instances are those of Select, or,
	// without one, those whose cluster is Unit. Rules naming the same unit
	// give the same Select.
	Unit   string      `json:"unit"`
	Select *UnitSelect `json:"select,omitempty"`
	Mode   string      `json:"mode"` // enforce | observe
	// Percent (0..100, default 100) is the share of request keys an
	// enforced rule routes; the others are counted as observed.
	Percent *int `json:"percent,omitempty"`
	// Deny refuses the requests the rule routes (enforce) or counts them
	// as would-be denials (observe).
	Deny bool `json:"deny,omitempty"`
	// AllowCallers, when given, are the only callers whose requests may
	// enter the unit; the others' are refused as by Deny.
	AllowCallers []string `json:"allow_callers,omitempty"`
	// Fallback is what happens when the unit has no healthy instance:
	// fail (default), any (every instance of the callee), or the name of
	// another unit.
	Fallback string `json:"fallback,omitempty"`
}

// UnitSelect selects the instances of a unit; every field given must match.
type UnitSelect struct {
	Cluster string            `json:"cluster,omitempty"`
	Zone    string            `json:"zone,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"` // instance metadata
}

// Matches says whether in belongs to the unit s selects.
func (s *UnitSelect) Matches(in *Instance) bool {
	if s.Cluster != "" && in.Cluster != s.Cluster || s.Zone != "" && in.Zone != s.Zone {
		return false
	}
	for k, v := range s.Labels {
		if in.Metadata[k] != v {
			return false
		}
	}
	return true
}

// UnitMatch are the request features a rule matches on.
type UnitMatch struct {
	Headers map[string]string `json:"headers,omitempty"` // HTTP headers or Kitex metainfo keys
	Caller  string            `json:"caller,omitempty"`
	// Method is a Thrift/Kitex method name, matched exactly.
	Method string `json:"method,omitempty"`
	// HTTP matches an HTTP request's method and path pattern (as the
	// priority_rules' http match: "/api/orders/*", "/t/:id").
	HTTP *UnitHTTPMatch `json:"http,omitempty"`
	// Keys are request keys (UnitRouting.Key: tenant or user ids) of
	// which the request's must be one.
	Keys []string `json:"keys,omitempty"`
}

// UnitHTTPMatch is an HTTP method and path pattern.
type UnitHTTPMatch struct {
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Validate names the first bad field of the rules (the HTTP, method and
// header conditions are checked further by api/unitrouting).
func (ur *UnitRouting) Validate() *FieldError {
	for _, f := range []struct{ name, v string }{{"key", ur.Key}, {"request_id_key", ur.RequestIDKey}} {
		if fe := Name(f.name, f.v, false); fe != nil {
			return fe
		}
	}
	if len(ur.Rules) > MaxUnitRules {
		return Errorf("rules", CodeTooMany, "%d rules, at most %d", len(ur.Rules), MaxUnitRules)
	}
	names := uniqueNames{}
	selects := map[string]*UnitSelect{}
	for i, r := range ur.Rules {
		at := func(f string) string { return Join(Index("rules", i), f) }
		if fe := names.add(at("name"), r.Name); fe != nil {
			return fe
		}
		if fe := Name(at("unit"), r.Unit, true); fe != nil {
			return fe
		}
		if r.Mode != ModeEnforce && r.Mode != ModeObserve {
			return Errorf(at("mode"), CodeInvalidValue, "want enforce or observe, got %q", r.Mode)
		}
		m := &r.Match
		if len(m.Headers) == 0 && m.Caller == "" && m.Method == "" && m.HTTP == nil && len(m.Keys) == 0 {
			return Errorf(at("match"), CodeMissingField, "match on headers, caller, method, http or keys")
		}
		for k := range m.Headers {
			if fe := Name(Join(at("match.headers"), k), k, true); fe != nil {
				return fe
			}
		}
		if fe := Name(at("match.caller"), m.Caller, false); fe != nil {
			return fe
		}
		if len(m.Keys) > MaxUnitKeys {
			return Errorf(at("match.keys"), CodeTooMany, "%d keys, at most %d", len(m.Keys), MaxUnitKeys)
		}
		for j, k := range m.Keys {
			if k == "" || len(k) > 1024 {
				return Errorf(Index(at("match.keys"), j), CodeInvalidValue, "a key is 1 to 1024 bytes")
			}
		}
		if s := r.Select; s != nil {
			if s.Cluster == "" && s.Zone == "" && len(s.Labels) == 0 {
				return Errorf(at("select"), CodeMissingField, "select on cluster, zone or labels (or leave select out: the unit's cluster)")
			}
			for _, f := range []struct{ name, v string }{{"select.cluster", s.Cluster}, {"select.zone", s.Zone}} {
				if fe := Name(at(f.name), f.v, false); fe != nil {
					return fe
				}
			}
			for k := range s.Labels {
				if fe := Name(Join(at("select.labels"), k), k, true); fe != nil {
					return fe
				}
			}
		}
		if prev, ok := selects[r.Unit]; ok && !sameSelect(prev, r.Select) {
			return Errorf(at("select"), CodeInvalidValue, "unit %q is selected differently by an earlier rule", r.Unit)
		}
		selects[r.Unit] = r.Select
		if p := r.Percent; p != nil && (*p < 0 || *p > 100) {
			return Errorf(at("percent"), CodeOutOfRange, "want 0..100, got %d", *p)
		}
		for j, c := range r.AllowCallers {
			if fe := Name(Index(at("allow_callers"), j), c, true); fe != nil {
				return fe
			}
		}
		if r.Deny && len(r.AllowCallers) > 0 {
			return Errorf(at("allow_callers"), CodeInvalidValue, "a rule that denies every request allows no caller")
		}
		switch r.Fallback {
		case "", UnitFallbackFail, UnitFallbackAny:
		default:
			if fe := Name(at("fallback"), r.Fallback, true); fe != nil {
				return fe
			}
			if r.Fallback == r.Unit {
				return Errorf(at("fallback"), CodeInvalidValue, "a unit cannot fall back to itself")
			}
		}
	}
	return nil
}

// UnitSelectOf is the selection of the unit named unit in ur: the select
// of the rules naming it, else its cluster.
func (ur *UnitRouting) UnitSelectOf(unit string) UnitSelect {
	for _, r := range ur.Rules {
		if r.Unit == unit && r.Select != nil {
			return *r.Select
		}
	}
	return UnitSelect{Cluster: unit}
}

func sameSelect(a, b *UnitSelect) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Cluster != b.Cluster || a.Zone != b.Zone || len(a.Labels) != len(b.Labels) {
		return false
	}
	for k, v := range a.Labels {
		if bv, ok := b.Labels[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// uniqueNames checks that rule names are valid and distinct.
type uniqueNames map[string]bool

func (u uniqueNames) add(field, name string) *FieldError {
	if fe := Name(field, name, true); fe != nil {
		return fe
	}
	if u[name] {
		return Errorf(field, CodeInvalidValue, "rule %q appears twice", name)
	}
	u[name] = true
	return nil
}
