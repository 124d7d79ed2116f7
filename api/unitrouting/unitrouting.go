// Package unitrouting compiles the unit_routing governance config
// (api.UnitRouting) for the data planes: Decide tells, for one request to
// the callee whose rules they are, which rule matches, the unit it sends
// the request to, and whether the rule routes it (enforce, within its
// percent), only observes it, or refuses it. docs/units.md describes the
// rules.
package unitrouting

import (
	"hash/fnv"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/priorityrules"
)

// Features are what a rule can match of a request, Caller being the
// calling service.
type Features struct {
	priorityrules.Features
	Caller string
}

// Outcomes of a request a rule matched, as reports count them.
const (
	Observed       = "observed"        // observe mode (or outside an enforced rule's percent): routed as before; would have gone to the unit
	ObservedDenied = "observed_denied" // observe mode: would have been refused
	Routed         = "routed"          // enforced: sent to the unit
	Denied         = "denied"          // enforced: refused (deny, or a caller not allowed)
	FellBack       = "fallback"        // enforced: the unit had no healthy instance; sent to the fallback
	Failed         = "failed"          // enforced: the unit had no healthy instance and the fallback is fail (or had none either)
)

// Rules are a compiled document, safe for concurrent use. A nil *Rules
// matches nothing.
type Rules struct {
	key, requestID string
	rules          []rule
}

type rule struct {
	name, unit  string
	sel         api.UnitSelect
	enforce     bool
	percent     int
	deny        bool
	allow       map[string]bool
	caller      string
	keys        map[string]bool
	match       *priorityrules.Rules // http, method and headers; nil: none
	fallback    string               // fail, any, or a unit
	fallbackSel api.UnitSelect
}

// Decision is what a rule decides of a request.
type Decision struct {
	Rule, Unit string
	Select     api.UnitSelect
	// Enforce: the request goes to the unit (or is refused); else it is
	// only counted (observe, or outside the percent) and routed as before.
	Enforce bool
	// Deny: the rule refuses the request (enforced) or would (observed).
	Deny bool
	// Fallback is fail, any or a unit; FallbackSelect selects that unit.
	Fallback       string
	FallbackSelect api.UnitSelect
}

// Parse decodes a document strictly, validates and compiles it.
func Parse(doc []byte) (*Rules, *api.FieldError) {
	var d api.UnitRouting
	if fe := api.DecodeObject(doc, &d); fe != nil {
		return nil, fe
	}
	return Compile(&d)
}

// Validate decodes and validates a document; nil when it is good.
func Validate(doc []byte) *api.FieldError {
	_, fe := Parse(doc)
	return fe
}

// Compile validates d and compiles it.
func Compile(d *api.UnitRouting) (*Rules, *api.FieldError) {
	if fe := d.Validate(); fe != nil {
		return nil, fe
	}
	r := &Rules{key: d.Key, requestID: d.RequestIDKey}
	if r.key == "" {
		r.key = api.DefaultUnitKey
	}
	if r.requestID == "" {
		r.requestID = api.DefaultUnitRequestID
	}
	for i := range d.Rules {
		ru := &d.Rules[i]
		c := rule{name: ru.Name, unit: ru.Unit, sel: d.UnitSelectOf(ru.Unit), enforce: ru.Mode == api.ModeEnforce,
			percent: 100, deny: ru.Deny, caller: ru.Match.Caller, fallback: ru.Fallback}
		if ru.Percent != nil {
			c.percent = *ru.Percent
		}
		if c.fallback == "" {
			c.fallback = api.UnitFallbackFail
		}
		if c.fallback != api.UnitFallbackFail && c.fallback != api.UnitFallbackAny {
			c.fallbackSel = d.UnitSelectOf(c.fallback)
		}
		if len(ru.AllowCallers) > 0 {
			c.allow = map[string]bool{}
			for _, a := range ru.AllowCallers {
				c.allow[a] = true
			}
		}
		if len(ru.Match.Keys) > 0 {
			c.keys = make(map[string]bool, len(ru.Match.Keys))
			for _, k := range ru.Match.Keys {
				c.keys[k] = true
			}
		}
		m := ru.Match
		if m.HTTP != nil || m.Method != "" || len(m.Headers) > 0 {
			one := int32(1)
			pm := priorityrules.Match{Method: m.Method, Headers: m.Headers}
			if m.HTTP != nil {
				pm.HTTP = &priorityrules.HTTPMatch{Method: m.HTTP.Method, Path: m.HTTP.Path}
			}
			pr, err := priorityrules.Compile(&priorityrules.Document{Rules: []priorityrules.Rule{{Name: ru.Name, Priority: &one, Match: pm}}})
			if err != nil {
				fe := err.(*api.FieldError)
				// The priority rules' error names rules[0].<field>.
				fe = api.Under(api.Index("rules", i), fieldUnder(fe))
				return nil, fe
			}
			c.match = pr
		}
		r.rules = append(r.rules, c)
	}
	return r, nil
}

// fieldUnder strips the "rules[0]." the one-rule priority document put
// before the field.
func fieldUnder(fe *api.FieldError) *api.FieldError {
	const p = "rules[0]."
	if len(fe.Field) > len(p) && fe.Field[:len(p)] == p {
		c := *fe
		c.Field = fe.Field[len(p):]
		return &c
	}
	return fe
}

// Key is the request key of f: its tenant/user key, else its request id;
// "" when it has neither.
func (r *Rules) Key(f *Features) string {
	if r == nil || f.Header == nil {
		return ""
	}
	if k := f.Header(r.key); k != "" {
		return k
	}
	return f.Header(r.requestID)
}

// Len is the number of rules.
func (r *Rules) Len() int {
	if r == nil {
		return 0
	}
	return len(r.rules)
}

// Decide is the decision of the first rule that matches f (ok false: none
// does). draw is the request's bucket (0..99) when it has no key: a random
// number the caller draws.
func (r *Rules) Decide(f Features, draw func() int) (d Decision, ok bool) {
	if r == nil {
		return Decision{}, false
	}
	tenant := ""
	if f.Header != nil && len(r.rules) > 0 {
		tenant = f.Header(r.key)
	}
	for i := range r.rules {
		ru := &r.rules[i]
		if ru.caller != "" && ru.caller != f.Caller {
			continue
		}
		if ru.keys != nil && !ru.keys[tenant] {
			continue
		}
		if ru.match != nil {
			if name, _ := ru.match.Match(f.Features); name == "" {
				continue
			}
		}
		d = Decision{Rule: ru.name, Unit: ru.unit, Select: ru.sel, Fallback: ru.fallback, FallbackSelect: ru.fallbackSel,
			Deny: ru.deny || ru.allow != nil && !ru.allow[f.Caller]}
		if ru.enforce {
			switch ru.percent {
			case 100:
				d.Enforce = true
			case 0:
			default:
				key := tenant
				if key == "" && f.Header != nil {
					key = f.Header(r.requestID)
				}
				var b int
				if key != "" {
					b = Bucket(key)
				} else if draw != nil {
					b = draw()
				}
				d.Enforce = b < ru.percent
			}
		}
		return d, true
	}
	return Decision{}, false
}

// Bucket places a request key in [0, 100) by a stable hash, so that the
// same keys stay routed as an enforced rule's percent grows.
func Bucket(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % 100)
}
