package unitrouting_test

import (
	"fmt"
	"testing"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/priorityrules"
	"github.com/sextant-mesh/sextant/api/unitrouting"
)

func TestInvalidDocumentsNameTheField(t *testing.T) {
	for _, c := range []struct{ doc, field string }{
		{`{"rules": [{"name": "r", "match": {}, "unit": "c1", "mode": "enforce"}]}`, "rules[0].match"},
		{`{"rules": [{"name": "r", "match": {"keys": ["t1"]}, "unit": "c1", "mode": "enforce", "percent": 101}]}`, "rules[0].percent"},
		{`{"rules": [{"name": "r", "match": {"keys": ["t1"]}, "unit": "c1", "mode": "ramp"}]}`, "rules[0].mode"},
		{`{"rules": [{"name": "r", "match": {"http": {"path": "/a/**"}}, "unit": "c1", "mode": "enforce"}]}`, "rules[0].match.http.path"},
		{`{"rules": [{"name": "r", "match": {"headers": {"X-Tier": "vip"}}, "unit": "c1", "mode": "enforce"}]}`, "rules[0].match.headers.X-Tier"},
		{`{"rules": [{"name": "r", "match": {"keys": ["t1"]}, "unit": "c1", "mode": "enforce", "select": {}}]}`, "rules[0].select"},
		{`{"rules": [{"name": "r", "match": {"keys": ["t1"]}, "unit": "c1", "mode": "enforce", "fallback": "c1"}]}`, "rules[0].fallback"},
		{`{"rules": [{"name": "r", "match": {"keys": ["t1"]}, "unit": "c1", "mode": "enforce", "deny": true, "allow_callers": ["a"]}]}`, "rules[0].allow_callers"},
		{`{"rules": [{"name": "r", "match": {"keys": ["t1"]}, "unit": "c1", "mode": "enforce", "select": {"zone": "z1"}},
		             {"name": "s", "match": {"keys": ["t2"]}, "unit": "c1", "mode": "enforce", "select": {"zone": "z2"}}]}`, "rules[1].select"},
		{`{"rules": [{"name": "r", "match": {"keys": ["t1"]}, "unit": "c1", "mode": "enforce", "weight": 3}]}`, "rules[0].weight"},
	} {
		_, fe := unitrouting.Parse([]byte(c.doc))
		if fe == nil || fe.Field != c.field {
			t.Errorf("%s: got %v, want an error on %s", c.doc, fe, c.field)
		}
	}
}

func headers(kv ...string) func(string) string {
	return func(k string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1]
			}
		}
		return ""
	}
}

func TestDecide(t *testing.T) {
	r, fe := unitrouting.Parse([]byte(`{"rules": [
	  {"name": "batch", "match": {"caller": "batch-job"}, "unit": "drill", "mode": "enforce", "deny": true},
	  {"name": "orders", "match": {"http": {"method": "POST", "path": "/orders/*"}, "headers": {"x-tier": "vip"}}, "unit": "c2", "select": {"labels": {"unit": "c2"}}, "mode": "enforce", "fallback": "c1"},
	  {"name": "pay", "match": {"method": "Pay"}, "unit": "secure", "mode": "enforce", "allow_callers": ["checkout"]},
	  {"name": "ramp", "match": {"keys": ["t1", "t2"]}, "unit": "c3", "mode": "enforce", "percent": 0},
	  {"name": "watch", "match": {"headers": {"x-tier": "gold"}}, "unit": "c3", "mode": "observe"}]}`))
	if fe != nil {
		t.Fatal(fe)
	}
	f := func(caller, method, path, rpc string, kv ...string) unitrouting.Features {
		return unitrouting.Features{Caller: caller, Features: priorityrules.Features{HTTPMethod: method, Path: path, Method: rpc, Header: headers(kv...)}}
	}
	for _, c := range []struct {
		f                      unitrouting.Features
		rule, unit             string
		enforce, deny, matched bool
	}{
		{f("batch-job", "", "", "Get"), "batch", "drill", true, true, true},
		{f("web", "POST", "/orders/1", "", "x-tier", "vip"), "orders", "c2", true, false, true},
		{f("web", "GET", "/orders/1", "", "x-tier", "vip"), "", "", false, false, false},
		{f("web", "", "", "Pay"), "pay", "secure", true, true, true},
		{f("checkout", "", "", "Pay"), "pay", "secure", true, false, true},
		{f("web", "", "", "Get", "x-tenant-id", "t1"), "ramp", "c3", false, false, true},
		{f("web", "", "", "Get", "x-tier", "gold"), "watch", "c3", false, false, true},
	} {
		d, ok := r.Decide(c.f, nil)
		if ok != c.matched || d.Rule != c.rule || d.Unit != c.unit || d.Enforce != c.enforce || d.Deny != c.deny {
			t.Errorf("%+v: got %+v %v", c, d, ok)
		}
	}
	d, _ := r.Decide(f("web", "POST", "/orders/x", "", "x-tier", "vip"), nil)
	if d.Select.Labels["unit"] != "c2" || d.Fallback != "c1" || d.FallbackSelect.Cluster != "c1" {
		t.Errorf("selects: %+v", d)
	}
}

// The percent is stable per key and near its share over many keys.
func TestPercentIsStablePerKey(t *testing.T) {
	r, fe := unitrouting.Parse([]byte(`{"rules": [{"name": "ramp", "match": {"http": {"path": "/*"}}, "unit": "c2", "mode": "enforce", "percent": 30}]}`))
	if fe != nil {
		t.Fatal(fe)
	}
	in := 0
	for i := range 1000 {
		key := fmt.Sprintf("tenant-%d", i)
		d, _ := r.Decide(unitrouting.Features{Features: priorityrules.Features{Path: "/x", Header: headers("x-tenant-id", key)}}, nil)
		again, _ := r.Decide(unitrouting.Features{Features: priorityrules.Features{Path: "/y", Header: headers("x-tenant-id", key, "x-request-id", "r")}}, nil)
		if d.Enforce != again.Enforce {
			t.Fatalf("%s flaps", key)
		}
		if d.Enforce {
			in++
		}
	}
	if in < 250 || in > 350 {
		t.Errorf("%d of 1000 tenants routed at 30%%", in)
	}
	_ = api.UnitFallbackAny
}
