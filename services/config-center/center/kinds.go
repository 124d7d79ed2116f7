// Package center is the config-center: the HTTP API for governance config
// (timeouts, retries, circuit breakers, degradation, rate limits, access
// control, unit routing, priority rules), with optimistic concurrency,
// history, rollback, percentage rollout, pins, audit, and the long poll SDKs
// watch.
package center

import (
	"math"

	"github.com/cloudwego/kitex/pkg/circuitbreak"
	"github.com/cloudwego/kitex/pkg/limiter"
	"github.com/cloudwego/kitex/pkg/retry"
	"github.com/cloudwego/kitex/pkg/rpctimeout"

	"github.com/sextant-mesh/sextant/internal/jsonx"
	"github.com/sextant-mesh/sextant/internal/overloadconf"
	"github.com/sextant-mesh/sextant/internal/priorityrules"
)

// Scope says whom a kind of config is for.
type Scope int

const (
	// ServerScope: one document per server service (`{server}`).
	ServerScope Scope = iota
	// ClientScope: one document per caller and callee (`{client}/{server}`).
	ClientScope
)

// Kind is one kind of governance config: how its documents are decoded
// strictly, validated, and whether the kitex-contrib/config-etcd suite
// reads it (its category name there).
type Kind struct {
	Name  string
	Scope Scope
	// KitexCategory is the category the stock config-etcd suite watches; empty
	// for Sextant's own kinds.
	KitexCategory string
	validate      func(doc []byte) *jsonx.FieldError
}

// Kinds are the kinds the config-center serves, by name.
var Kinds = map[string]*Kind{
	"rpc_timeout":    {Name: "rpc_timeout", Scope: ClientScope, KitexCategory: "rpc_timeout", validate: validateRPCTimeout},
	"retry":          {Name: "retry", Scope: ClientScope, KitexCategory: "retry", validate: validateRetry},
	"circuit_break":  {Name: "circuit_break", Scope: ClientScope, KitexCategory: "circuit_break", validate: validateCircuitBreak},
	"degradation":    {Name: "degradation", Scope: ClientScope, KitexCategory: "degradation", validate: validateDegradation},
	"limit":          {Name: "limit", Scope: ServerScope, KitexCategory: "limit", validate: validateLimit},
	"access_control": {Name: "access_control", Scope: ServerScope, validate: validateAccessControl},
	"unit_routing":   {Name: "unit_routing", Scope: ServerScope, validate: validateUnitRouting},
	overloadconf.Kind: {Name: overloadconf.Kind, Scope: ServerScope, validate: func(doc []byte) *jsonx.FieldError {
		_, fe := overloadconf.Parse(doc)
		return fe
	}},
	// priority_rules: how the API layer gives requests their business
	// priority (internal/priorityrules).
	"priority_rules": {Name: "priority_rules", Scope: ServerScope, validate: priorityrules.Validate},
}

// Validate decodes doc strictly and checks its values.
func (k *Kind) Validate(doc []byte) *jsonx.FieldError { return k.validate(doc) }

// Documents of the Kitex kinds are decoded into Kitex's own types, the ones
// the config-etcd suite decodes them into, so what passes here is what a
// stock Kitex client understands.

func validateRPCTimeout(doc []byte) *jsonx.FieldError {
	var m map[string]*rpctimeout.RPCTimeout
	if fe := jsonx.DecodeObject(doc, &m); fe != nil {
		return fe
	}
	for method, t := range m {
		if t == nil {
			return jsonx.Errorf(method, jsonx.CodeMissingField, "null timeout for %q", method)
		}
		if t.RPCTimeoutMS < 0 || t.RPCTimeoutMS > 3_600_000 {
			return jsonx.Errorf(jsonx.Join(method, "rpc_timeout_ms"), jsonx.CodeOutOfRange, "%d is outside [0, 3600000]", t.RPCTimeoutMS)
		}
		if t.ConnTimeoutMS < 0 || t.ConnTimeoutMS > 600_000 {
			return jsonx.Errorf(jsonx.Join(method, "conn_timeout_ms"), jsonx.CodeOutOfRange, "%d is outside [0, 600000]", t.ConnTimeoutMS)
		}
	}
	return nil
}

func validateRetry(doc []byte) *jsonx.FieldError {
	var m map[string]*retry.Policy
	if fe := jsonx.DecodeObject(doc, &m); fe != nil {
		return fe
	}
	for method, p := range m {
		at := func(f string) string { return jsonx.Join(method, f) }
		if p == nil {
			return jsonx.Errorf(method, jsonx.CodeMissingField, "null policy for %q", method)
		}
		var stop *retry.StopPolicy
		switch p.Type {
		case retry.FailureType:
			if p.FailurePolicy == nil {
				return jsonx.Errorf(at("failure_policy"), jsonx.CodeMissingField, "type 0 (failure retry) needs failure_policy")
			}
			stop = &p.FailurePolicy.StopPolicy
		case retry.BackupType:
			if p.BackupPolicy == nil {
				return jsonx.Errorf(at("backup_policy"), jsonx.CodeMissingField, "type 1 (backup request) needs backup_policy")
			}
			stop = &p.BackupPolicy.StopPolicy
		case retry.MixedType:
			if p.MixedPolicy == nil {
				return jsonx.Errorf(at("mixed_policy"), jsonx.CodeMissingField, "type 2 (mixed) needs mixed_policy")
			}
			stop = &p.MixedPolicy.StopPolicy
		default:
			return jsonx.Errorf(at("type"), jsonx.CodeOutOfRange, "type %d is not 0 (failure), 1 (backup) or 2 (mixed)", p.Type)
		}
		if stop.MaxRetryTimes < 0 || stop.MaxRetryTimes > 5 {
			return jsonx.Errorf(at("stop_policy.max_retry_times"), jsonx.CodeOutOfRange, "%d is outside [0, 5]", stop.MaxRetryTimes)
		}
		if r := stop.CBPolicy.ErrorRate; math.IsNaN(r) || r < 0 || r > 0.3 {
			return jsonx.Errorf(at("stop_policy.cb_policy.error_rate"), jsonx.CodeOutOfRange, "%g is outside [0, 0.3]", r)
		}
	}
	return nil
}

func validateCircuitBreak(doc []byte) *jsonx.FieldError {
	var m map[string]circuitbreak.CBConfig
	if fe := jsonx.DecodeObject(doc, &m); fe != nil {
		return fe
	}
	for method, c := range m {
		if math.IsNaN(c.ErrRate) || c.ErrRate <= 0 || c.ErrRate > 1 {
			return jsonx.Errorf(jsonx.Join(method, "err_rate"), jsonx.CodeOutOfRange, "%g is outside (0, 1]", c.ErrRate)
		}
		if c.MinSample < 1 {
			return jsonx.Errorf(jsonx.Join(method, "min_sample"), jsonx.CodeOutOfRange, "%d is below 1", c.MinSample)
		}
	}
	return nil
}

// Degradation is the document of the degradation kind, as the config-etcd
// suite reads it: drop percentage of the client's requests when enabled.
type Degradation struct {
	Enable     bool `json:"enable"`
	Percentage int  `json:"percentage"`
}

func validateDegradation(doc []byte) *jsonx.FieldError {
	var d Degradation
	if fe := jsonx.DecodeObject(doc, &d); fe != nil {
		return fe
	}
	if d.Percentage < 0 || d.Percentage > 100 {
		return jsonx.Errorf("percentage", jsonx.CodeOutOfRange, "%d is outside [0, 100]", d.Percentage)
	}
	return nil
}

func validateLimit(doc []byte) *jsonx.FieldError {
	var l limiter.LimiterConfig
	if fe := jsonx.DecodeObject(doc, &l); fe != nil {
		return fe
	}
	if l.ConnectionLimit < 0 {
		return jsonx.Errorf("connection_limit", jsonx.CodeOutOfRange, "%d is negative", l.ConnectionLimit)
	}
	if l.QPSLimit < 0 {
		return jsonx.Errorf("qps_limit", jsonx.CodeOutOfRange, "%d is negative", l.QPSLimit)
	}
	return nil
}

// AccessControl decides which callers may call a service. Deny rules block
// the callers they list; when any allow rule exists, callers no allow rule
// lists are blocked. A rule in dry_run mode blocks nothing: data planes
// count what it would have blocked and report it (dry_run_denials).
type AccessControl struct {
	Rules []AccessRule `json:"rules"`
}

// AccessRule is one allow or deny list.
type AccessRule struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"` // allow | deny
	Callers []string `json:"callers"`
	Methods []string `json:"methods,omitempty"` // empty: every method
	Mode    string   `json:"mode"`              // enforce | dry_run
}

func validateAccessControl(doc []byte) *jsonx.FieldError {
	var ac AccessControl
	if fe := jsonx.DecodeObject(doc, &ac); fe != nil {
		return fe
	}
	names := uniqueNames{}
	for i, r := range ac.Rules {
		at := func(f string) string { return jsonx.Join(jsonx.Index("rules", i), f) }
		if fe := names.add(at("name"), r.Name); fe != nil {
			return fe
		}
		if r.Type != "allow" && r.Type != "deny" {
			return jsonx.Errorf(at("type"), jsonx.CodeInvalidValue, "want allow or deny, got %q", r.Type)
		}
		if r.Mode != "enforce" && r.Mode != "dry_run" {
			return jsonx.Errorf(at("mode"), jsonx.CodeInvalidValue, "want enforce or dry_run, got %q", r.Mode)
		}
		if len(r.Callers) == 0 {
			return jsonx.Errorf(at("callers"), jsonx.CodeMissingField, "a rule lists at least one caller service")
		}
		for j, c := range r.Callers {
			if fe := jsonx.Name(jsonx.Index(at("callers"), j), c, true); fe != nil {
				return fe
			}
		}
		for j, m := range r.Methods {
			if fe := jsonx.Name(jsonx.Index(at("methods"), j), m, true); fe != nil {
				return fe
			}
		}
	}
	return nil
}

// UnitRouting sends requests that match a rule to a named unit (a cluster or
// an instance group). In observe mode data planes only count the matches.
type UnitRouting struct {
	Rules []UnitRule `json:"rules"`
}

// UnitRule is one routing rule; every condition given must match.
type UnitRule struct {
	Name  string    `json:"name"`
	Match UnitMatch `json:"match"`
	Unit  string    `json:"unit"`
	Mode  string    `json:"mode"` // enforce | observe
}

// UnitMatch are the request features a rule matches on.
type UnitMatch struct {
	Headers map[string]string `json:"headers,omitempty"` // HTTP headers or Kitex metainfo keys
	Caller  string            `json:"caller,omitempty"`
}

func validateUnitRouting(doc []byte) *jsonx.FieldError {
	var ur UnitRouting
	if fe := jsonx.DecodeObject(doc, &ur); fe != nil {
		return fe
	}
	names := uniqueNames{}
	for i, r := range ur.Rules {
		at := func(f string) string { return jsonx.Join(jsonx.Index("rules", i), f) }
		if fe := names.add(at("name"), r.Name); fe != nil {
			return fe
		}
		if fe := jsonx.Name(at("unit"), r.Unit, true); fe != nil {
			return fe
		}
		if r.Mode != "enforce" && r.Mode != "observe" {
			return jsonx.Errorf(at("mode"), jsonx.CodeInvalidValue, "want enforce or observe, got %q", r.Mode)
		}
		if len(r.Match.Headers) == 0 && r.Match.Caller == "" {
			return jsonx.Errorf(at("match"), jsonx.CodeMissingField, "match on headers or caller")
		}
		for k := range r.Match.Headers {
			if fe := jsonx.Name(jsonx.Join(at("match.headers"), k), k, true); fe != nil {
				return fe
			}
		}
		if fe := jsonx.Name(at("match.caller"), r.Match.Caller, false); fe != nil {
			return fe
		}
	}
	return nil
}

// uniqueNames checks that rule names are valid and distinct.
type uniqueNames map[string]bool

func (u uniqueNames) add(field, name string) *jsonx.FieldError {
	if fe := jsonx.Name(field, name, true); fe != nil {
		return fe
	}
	if u[name] {
		return jsonx.Errorf(field, jsonx.CodeInvalidValue, "rule %q appears twice", name)
	}
	u[name] = true
	return nil
}
