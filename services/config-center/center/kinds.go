// Package center is the config-center: the HTTP API for governance config
// (timeouts, retries, circuit breakers, degradation, rate limits, access
// control, unit routing, priority rules), with optimistic concurrency,
// history, rollback, percentage rollout, pins, audit, and the long poll SDKs
// watch.
package center

import (
	"math"
	"slices"
	"strings"

	"github.com/cloudwego/kitex/pkg/circuitbreak"
	"github.com/cloudwego/kitex/pkg/limiter"
	"github.com/cloudwego/kitex/pkg/retry"
	"github.com/cloudwego/kitex/pkg/rpctimeout"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/overloadconf"
	"github.com/sextant-mesh/sextant/api/priorityrules"
	"github.com/sextant-mesh/sextant/api/weightknobs"
	"github.com/sextant-mesh/sextant/internal/jsonx"
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
	validate      func(doc []byte) *api.FieldError
}

// Kinds are the kinds the config-center serves, by name.
var Kinds = map[string]*Kind{
	api.KindRPCTimeout:    {Name: api.KindRPCTimeout, Scope: ClientScope, KitexCategory: "rpc_timeout", validate: validateRPCTimeout},
	api.KindRetry:         {Name: api.KindRetry, Scope: ClientScope, KitexCategory: "retry", validate: validateRetry},
	api.KindCircuitBreak:  {Name: api.KindCircuitBreak, Scope: ClientScope, KitexCategory: "circuit_break", validate: validateCircuitBreak},
	api.KindDegradation:   {Name: api.KindDegradation, Scope: ClientScope, KitexCategory: "degradation", validate: validated[api.Degradation]},
	api.KindLimit:         {Name: api.KindLimit, Scope: ServerScope, KitexCategory: "limit", validate: validateLimit},
	api.KindAccessControl: {Name: api.KindAccessControl, Scope: ServerScope, validate: validated[api.AccessControl]},
	api.KindUnitRouting:   {Name: api.KindUnitRouting, Scope: ServerScope, validate: validated[api.UnitRouting]},
	api.KindOverload:      {Name: api.KindOverload, Scope: ServerScope, validate: validated[overloadconf.Config]},
	// How the API layer gives requests their business priority.
	api.KindPriorityRules: {Name: api.KindPriorityRules, Scope: ServerScope, validate: validated[priorityrules.Document]},
	// The weight-calculator's knobs for a service (docs/weights.md).
	api.KindCalculator: {Name: api.KindCalculator, Scope: ServerScope, validate: func(doc []byte) *api.FieldError {
		_, fe := weightknobs.Parse(doc)
		return fe
	}},
}

// KindInfo describes a kind for GET /v1/kinds: its scope and, for the
// knobs kinds, the defaults a field left out keeps.
type KindInfo struct {
	Kind     string `json:"kind"`
	Scope    string `json:"scope"` // server ({server}) or client ({client}/{server})
	Defaults any    `json:"defaults,omitempty"`
}

// kindInfos lists every kind, sorted by name.
func kindInfos() []KindInfo {
	k := weightknobs.Defaults()
	defaults := map[string]any{
		api.KindCalculator: k,
		api.KindOverload: map[string]float64{"queue_time_ms": k.OverloadQueueTimeMs, "cpu": k.OverloadCPU,
			"timeout_ratio": k.OverloadTimeoutRatio, "shed_step": k.ShedStep, "recover_step": k.RecoverStep},
	}
	out := make([]KindInfo, 0, len(Kinds))
	for name, kind := range Kinds {
		scope := "server"
		if kind.Scope == ClientScope {
			scope = "client"
		}
		out = append(out, KindInfo{Kind: name, Scope: scope, Defaults: defaults[name]})
	}
	slices.SortFunc(out, func(a, b KindInfo) int { return strings.Compare(a.Kind, b.Kind) })
	return out
}

// Validate decodes doc strictly and checks its values.
func (k *Kind) Validate(doc []byte) *api.FieldError { return k.validate(doc) }

// Documents of the Kitex kinds are decoded into Kitex's own types, the ones
// the config-etcd suite decodes them into, so what passes here is what a
// stock Kitex client understands.

func validateRPCTimeout(doc []byte) *api.FieldError {
	var m map[string]*rpctimeout.RPCTimeout
	if fe := jsonx.DecodeObject(doc, &m); fe != nil {
		return fe
	}
	for method, t := range m {
		if t == nil {
			return api.Errorf(method, api.CodeMissingField, "null timeout for %q", method)
		}
		if t.RPCTimeoutMS < 0 || t.RPCTimeoutMS > 3_600_000 {
			return api.Errorf(api.Join(method, "rpc_timeout_ms"), api.CodeOutOfRange, "%d is outside [0, 3600000]", t.RPCTimeoutMS)
		}
		if t.ConnTimeoutMS < 0 || t.ConnTimeoutMS > 600_000 {
			return api.Errorf(api.Join(method, "conn_timeout_ms"), api.CodeOutOfRange, "%d is outside [0, 600000]", t.ConnTimeoutMS)
		}
	}
	return nil
}

func validateRetry(doc []byte) *api.FieldError {
	var m map[string]*retry.Policy
	if fe := jsonx.DecodeObject(doc, &m); fe != nil {
		return fe
	}
	for method, p := range m {
		at := func(f string) string { return api.Join(method, f) }
		if p == nil {
			return api.Errorf(method, api.CodeMissingField, "null policy for %q", method)
		}
		var stop *retry.StopPolicy
		switch p.Type {
		case retry.FailureType:
			if p.FailurePolicy == nil {
				return api.Errorf(at("failure_policy"), api.CodeMissingField, "type 0 (failure retry) needs failure_policy")
			}
			stop = &p.FailurePolicy.StopPolicy
		case retry.BackupType:
			if p.BackupPolicy == nil {
				return api.Errorf(at("backup_policy"), api.CodeMissingField, "type 1 (backup request) needs backup_policy")
			}
			stop = &p.BackupPolicy.StopPolicy
		case retry.MixedType:
			if p.MixedPolicy == nil {
				return api.Errorf(at("mixed_policy"), api.CodeMissingField, "type 2 (mixed) needs mixed_policy")
			}
			stop = &p.MixedPolicy.StopPolicy
		default:
			return api.Errorf(at("type"), api.CodeOutOfRange, "type %d is not 0 (failure), 1 (backup) or 2 (mixed)", p.Type)
		}
		if stop.MaxRetryTimes < 0 || stop.MaxRetryTimes > 5 {
			return api.Errorf(at("stop_policy.max_retry_times"), api.CodeOutOfRange, "%d is outside [0, 5]", stop.MaxRetryTimes)
		}
		if r := stop.CBPolicy.ErrorRate; math.IsNaN(r) || r < 0 || r > 0.3 {
			return api.Errorf(at("stop_policy.cb_policy.error_rate"), api.CodeOutOfRange, "%g is outside [0, 0.3]", r)
		}
	}
	return nil
}

func validateCircuitBreak(doc []byte) *api.FieldError {
	var m map[string]circuitbreak.CBConfig
	if fe := jsonx.DecodeObject(doc, &m); fe != nil {
		return fe
	}
	for method, c := range m {
		if math.IsNaN(c.ErrRate) || c.ErrRate <= 0 || c.ErrRate > 1 {
			return api.Errorf(api.Join(method, "err_rate"), api.CodeOutOfRange, "%g is outside (0, 1]", c.ErrRate)
		}
		if c.MinSample < 1 {
			return api.Errorf(api.Join(method, "min_sample"), api.CodeOutOfRange, "%d is below 1", c.MinSample)
		}
	}
	return nil
}

// validated decodes a document of type T strictly and runs its own check.
func validated[T any, P interface {
	*T
	Validate() *api.FieldError
}](doc []byte) *api.FieldError {
	var v T
	if fe := jsonx.DecodeObject(doc, &v); fe != nil {
		return fe
	}
	return P(&v).Validate()
}

func validateLimit(doc []byte) *api.FieldError {
	var l limiter.LimiterConfig
	if fe := jsonx.DecodeObject(doc, &l); fe != nil {
		return fe
	}
	if l.ConnectionLimit < 0 {
		return api.Errorf("connection_limit", api.CodeOutOfRange, "%d is negative", l.ConnectionLimit)
	}
	if l.QPSLimit < 0 {
		return api.Errorf("qps_limit", api.CodeOutOfRange, "%d is negative", l.QPSLimit)
	}
	return nil
}
