package sdk_test

import (
	"testing"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

func TestPickerFollowsWeightsSmoothly(t *testing.T) {
	var p sdk.Picker
	p.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 1, Instances: []sdk.Instance{
		{Instance: "a", Weight: 500, Healthy: true}, {Instance: "b", Weight: 300, Healthy: true},
		{Instance: "c", Weight: 200, Healthy: true}, {Instance: "x", Weight: 0, Healthy: false},
	}}})
	count := map[string]int{}
	run, maxRun, last := 0, 0, ""
	for i := 0; i < 1000; i++ {
		in, err := p.Pick()
		if err != nil {
			t.Fatal(err)
		}
		count[in.Instance]++
		if in.Instance == last {
			run++
		} else {
			run, last = 1, in.Instance
		}
		maxRun = max(maxRun, run)
	}
	if count["a"] != 500 || count["b"] != 300 || count["c"] != 200 || count["x"] != 0 {
		t.Fatalf("picks %v, want 500/300/200 and none for the ejected", count)
	}
	if maxRun > 2 {
		t.Fatalf("%d picks in a row of one instance: not smooth", maxRun)
	}
}

func TestPickerTreatsMissingWeightsAsEqual(t *testing.T) {
	var p sdk.Picker
	// Static instances (no mesh-core answer yet) carry no weights.
	p.Update(&sdk.Snapshot{Discovery: api.Discovery{Instances: []sdk.Instance{{Instance: "a"}, {Instance: "b"}}}})
	count := map[string]int{}
	for i := 0; i < 100; i++ {
		in, _ := p.Pick()
		count[in.Instance]++
	}
	if count["a"] != 50 || count["b"] != 50 {
		t.Fatalf("picks %v", count)
	}
	var empty sdk.Picker
	if _, err := empty.Pick(); err != sdk.ErrNoInstance {
		t.Fatalf("pick from nothing: %v", err)
	}
}

func TestAccessRules(t *testing.T) {
	rules := &sdk.AccessRules{Rules: []api.AccessRule{
		{Name: "allow-list", Type: "allow", Callers: []string{"feed-api"}, Mode: "enforce"},
		{Name: "no-refunds", Type: "deny", Callers: []string{"feed-api"}, Methods: []string{"Refund"}, Mode: "enforce"},
		{Name: "trial", Type: "deny", Callers: []string{"feed-api"}, Methods: []string{"Get"}, Mode: "dry_run"},
	}}
	for _, tc := range []struct {
		caller, method string
		denied         bool
		rule           string
		dryRun         bool
	}{
		{"feed-api", "List", false, "", false},
		{"feed-api", "Refund", true, "no-refunds", false},
		{"feed-api", "Get", true, "trial", true},
		{"batch-job", "List", true, "allow-list", false},
	} {
		d, r, dry := rules.Check(tc.caller, tc.method)
		if d != tc.denied || r != tc.rule || dry != tc.dryRun {
			t.Errorf("%s.%s: denied %v by %q (dry run %v), want %v %q %v", tc.caller, tc.method, d, r, dry, tc.denied, tc.rule, tc.dryRun)
		}
	}
}

func TestParsePriority(t *testing.T) {
	for in, want := range map[string]int32{"": 64, "0": 0, "127": 127, "128": 64, "-1": 64, "high": 64} {
		if got := sdk.ParsePriority(in, 64); got != want {
			t.Errorf("%q: %d, want %d", in, got, want)
		}
	}
}

// One rule of eligibility for every balancer: static instances given without
// a weight count as weight 1; from mesh-core, ejected (weight 0, unhealthy)
// instances are left out; with nothing eligible, every instance, equal.
func TestEligibleIsOneRule(t *testing.T) {
	collect := func(s *sdk.Snapshot) map[string]int64 {
		out := map[string]int64{}
		for in, w := range sdk.Eligible(s) {
			out[in.Instance] = w
		}
		return out
	}
	static := &sdk.Snapshot{Discovery: api.Discovery{Instances: []sdk.Instance{{Instance: "a"}, {Instance: "b", Weight: 3}}}}
	if got := collect(static); len(got) != 2 || got["a"] != 1 || got["b"] != 3 {
		t.Fatalf("static fallback: %v", got)
	}
	central := &sdk.Snapshot{Discovery: api.Discovery{Version: 5, Instances: []sdk.Instance{
		{Instance: "a", Weight: 0, Healthy: false}, {Instance: "b", Weight: 2, Healthy: true}, {Instance: "c", Weight: 4, Healthy: false}}}}
	if got := collect(central); len(got) != 1 || got["b"] != 2 {
		t.Fatalf("from mesh-core: %v", got)
	}
	allOut := &sdk.Snapshot{Discovery: api.Discovery{Version: 5, Instances: []sdk.Instance{{Instance: "a"}, {Instance: "b"}}}}
	if got := collect(allOut); len(got) != 2 || got["a"] != 1 || got["b"] != 1 {
		t.Fatalf("nothing eligible: %v", got)
	}
}
