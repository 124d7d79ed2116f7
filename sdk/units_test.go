package sdk_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/unitrouting"
	"github.com/sextant-mesh/sextant/sdk"
)

// recorder is a Balancer that remembers what it was told.
type recorder struct {
	sdk.Balancer
	done map[string]int
}

func (r *recorder) Done(id string, l time.Duration, failed bool) {
	r.done[id]++
	r.Balancer.Done(id, l, failed)
}

// A UnitBalancer composes with the plain weighted Picker and with the
// HybridPicker: an enforced rule picks among its unit's instances with the
// unit's own Balancer (its weights kept), other requests among every
// instance, and Done reaches the Balancer that picked (one per unit
// looked at: every instance, eu, and us, found empty).
func TestUnitBalancerComposes(t *testing.T) {
	for name, newBalancer := range map[string]func() sdk.Balancer{
		"picker": func() sdk.Balancer { return new(sdk.Picker) },
		"hybrid": func() sdk.Balancer { return sdk.NewHybridPicker(sdk.HybridOptions{}) },
	} {
		t.Run(name, func(t *testing.T) {
			var made []*recorder
			router := sdk.NewUnitRouter("front", nil)
			if err := router.Update("orders", []byte(`{"rules": [
			  {"name": "eu", "match": {"headers": {"x-region": "eu"}}, "unit": "eu", "select": {"zone": "eu-1"}, "mode": "enforce"},
			  {"name": "gone", "match": {"headers": {"x-region": "us"}}, "unit": "us", "mode": "enforce", "fallback": "any"}]}`)); err != nil {
				t.Fatal(err)
			}
			b := sdk.NewUnitBalancer("orders", router, func() sdk.Balancer {
				r := &recorder{Balancer: newBalancer(), done: map[string]int{}}
				made = append(made, r)
				return r
			})
			in := func(id, zone string, w int32) sdk.Instance {
				return sdk.Instance{Instance: id, Addr: id + ":80", Zone: zone, Weight: w, Healthy: true}
			}
			b.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 3, Instances: []sdk.Instance{
				in("eu-a", "eu-1", 300), in("eu-b", "eu-1", 100), in("ap-a", "ap-1", 100), {Instance: "eu-sick", Zone: "eu-1", Weight: 100},
			}}})
			eu := sdk.UnitFeatures{Header: func(k string) string { return map[string]string{"x-region": "eu"}[k] }}
			us := sdk.UnitFeatures{Header: func(k string) string { return map[string]string{"x-region": "us"}[k] }}
			picked := map[string]int{}
			for range 400 {
				i, err := b.PickFor(eu)
				if err != nil {
					t.Fatal(err)
				}
				picked[i.Instance]++
				b.Done(i.Instance, time.Millisecond, false)
			}
			if picked["ap-a"] != 0 || picked["eu-sick"] != 0 || picked["eu-a"] < 240 || picked["eu-a"] > 360 {
				t.Errorf("eu requests went to %v, want eu-a and eu-b about 3:1", picked)
			}
			all := map[string]int{}
			for range 50 {
				i, err := b.PickFor(us) // unit us has no instance: any
				if err != nil {
					t.Fatal(err)
				}
				all[i.Instance]++
				b.Done(i.Instance, time.Millisecond, false)
			}
			if all["ap-a"] == 0 {
				t.Errorf("the fallback to any went to %v", all)
			}
			if len(made) != 3 || made[1].done["eu-a"]+made[1].done["eu-b"] != 400 || made[0].done["ap-a"] != all["ap-a"] || made[1].done["ap-a"] != 0 {
				t.Errorf("Done went to the wrong balancers: %d made, %v / %v", len(made), made[0].done, made[1].done)
			}
			if n := router.Count(sdk.UnitCount{Callee: "orders", Rule: "gone", Unit: "us", Outcome: unitrouting.FellBack}); n != 50 {
				t.Errorf("fallbacks counted %d, want 50", n)
			}
		})
	}
}

// Without rules, or for another callee, requests are not touched; a
// document the SDK refuses leaves the rules in force.
func TestUnitRouterWithoutRules(t *testing.T) {
	router := sdk.NewUnitRouter("front", nil)
	if _, sel, err := router.Route("orders", sdk.UnitFeatures{}, nil); sel != nil || err != nil {
		t.Fatalf("no rules: %v %v", sel, err)
	}
	if err := router.Update("orders", []byte(`{"rules": [{"name": "all", "match": {"caller": "front"}, "unit": "c2", "mode": "enforce", "deny": true}]}`)); err != nil {
		t.Fatal(err)
	}
	var fe *api.FieldError
	if err := router.Update("orders", []byte(`{"rules": [{"name": "all", "match": {}, "unit": "c2", "mode": "enforce"}]}`)); !errors.As(err, &fe) || fe.Field != "rules[0].match" {
		t.Fatalf("a bad document: %v", err)
	}
	if _, _, err := router.Route("orders", sdk.UnitFeatures{}, nil); !errors.Is(err, sdk.ErrUnitDenied) {
		t.Fatalf("the rules in force: %v", err)
	}
	if _, sel, err := router.Route("payments", sdk.UnitFeatures{}, nil); sel != nil || err != nil {
		t.Fatalf("another callee: %v %v", sel, err)
	}
	var nilRouter *sdk.UnitRouter
	if _, sel, err := nilRouter.Route("orders", sdk.UnitFeatures{}, nil); sel != nil || err != nil {
		t.Fatalf("a nil router: %v %v", sel, err)
	}
}

// In observe mode a rule changes no pick: a UnitBalancer over Pickers
// picks exactly the sequence a plain Picker picks, and counts every
// request where it would have gone; enforced outside its percent, the same.
func TestObserveChangesNoPick(t *testing.T) {
	router := sdk.NewUnitRouter("front", nil)
	if err := router.Update("orders", []byte(`{"rules": [
	  {"name": "watch", "match": {"headers": {"x-tier": "gold"}}, "unit": "c2", "mode": "observe"},
	  {"name": "none-yet", "match": {"headers": {"x-tier": "silver"}}, "unit": "c2", "mode": "enforce", "percent": 0}]}`)); err != nil {
		t.Fatal(err)
	}
	snap := &sdk.Snapshot{Discovery: api.Discovery{Version: 9, Instances: []sdk.Instance{
		{Instance: "a", Cluster: "c1", Weight: 500, Healthy: true}, {Instance: "b", Cluster: "c1", Weight: 100, Healthy: true},
		{Instance: "c", Cluster: "c2", Weight: 300, Healthy: true}, {Instance: "d", Cluster: "c2", Weight: 100, Healthy: true},
	}}}
	b := sdk.NewUnitBalancer("orders", router, func() sdk.Balancer { return new(sdk.Picker) })
	b.Update(snap)
	ref := new(sdk.Picker)
	ref.Update(snap)
	for i := range 1000 {
		tier := []string{"gold", "silver", ""}[i%3]
		got, err := b.PickFor(sdk.UnitFeatures{Header: func(k string) string { return map[string]string{"x-tier": tier}[k] }})
		if err != nil {
			t.Fatal(err)
		}
		want, _ := ref.Pick()
		if got.Instance != want.Instance {
			t.Fatalf("pick %d (%q): %s, a plain picker %s", i, tier, got.Instance, want.Instance)
		}
		b.Done(got.Instance, time.Millisecond, false)
	}
	if n := router.Count(sdk.UnitCount{Callee: "orders", Rule: "watch", Unit: "c2", Outcome: unitrouting.Observed}); n != 334 {
		t.Errorf("observed %d, want 334", n)
	}
	if n := router.Count(sdk.UnitCount{Callee: "orders", Rule: "none-yet", Unit: "c2", Outcome: unitrouting.Observed}); n != 333 {
		t.Errorf("observed at 0 %% %d, want 333", n)
	}
}

// A unit whose instances are all ejected (unhealthy, or weight 0) has no
// healthy instance: its rule fails the request or falls back.
func TestEjectedUnitFallsBack(t *testing.T) {
	router := sdk.NewUnitRouter("front", nil)
	if err := router.Update("orders", []byte(`{"rules": [
	  {"name": "fail", "match": {"headers": {"x-to": "fail"}}, "unit": "c3", "mode": "enforce"},
	  {"name": "to-c1", "match": {"headers": {"x-to": "c1"}}, "unit": "c3", "mode": "enforce", "fallback": "c1"},
	  {"name": "to-c2", "match": {"headers": {"x-to": "c2"}}, "unit": "c3", "mode": "enforce", "fallback": "c2"}]}`)); err != nil {
		t.Fatal(err)
	}
	b := sdk.NewUnitBalancer("orders", router, nil)
	b.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 2, Instances: []sdk.Instance{
		{Instance: "a", Cluster: "c1", Weight: 100, Healthy: true},
		{Instance: "b", Cluster: "c2", Weight: 0, Healthy: true},
		{Instance: "c", Cluster: "c3", Weight: 100, Healthy: false},
	}}})
	to := func(v string) sdk.UnitFeatures {
		return sdk.UnitFeatures{Header: func(k string) string { return map[string]string{"x-to": v}[k] }}
	}
	if _, err := b.PickFor(to("fail")); !errors.Is(err, sdk.ErrUnitUnavailable) || !errors.Is(err, sdk.ErrNoInstance) {
		t.Errorf("fallback fail: %v", err)
	}
	if in, err := b.PickFor(to("c1")); err != nil || in.Instance != "a" {
		t.Errorf("fallback c1: %v %v", in, err)
	}
	if _, err := b.PickFor(to("c2")); !errors.Is(err, sdk.ErrUnitUnavailable) {
		t.Errorf("fallback to a unit with none either: %v", err)
	}
	for rule, outcome := range map[string]string{"fail": unitrouting.Failed, "to-c1": unitrouting.FellBack, "to-c2": unitrouting.Failed} {
		if n := router.Count(sdk.UnitCount{Callee: "orders", Rule: rule, Unit: "c3", Outcome: outcome}); n != 1 {
			t.Errorf("%s %s: %d, want 1", rule, outcome, n)
		}
	}
}
