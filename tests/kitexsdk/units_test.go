package kitexsdk_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bytedance/gopkg/cloud/metainfo"

	"github.com/sextant-mesh/sextant/api/unitrouting"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/kitexsdk"
)

// Through WithUnits, a Kitex client sends a tenant's calls (metainfo) to
// its unit among real Kitex servers in two clusters (cluster and metadata
// reaching the balancer through the resolver's tags), refuses a call a
// rule denies with sdk.ErrUnitDenied, and leaves other calls as they were.
func TestKitexClientRoutesByUnit(t *testing.T) {
	var instances []sdk.Instance
	for _, id := range []string{"c1-a", "c1-b", "c2-a", "c2-b"} {
		cluster, _, _ := strings.Cut(id, "-")
		instances = append(instances, sdk.Instance{Instance: id, Addr: startBackend(t, &backend{id: id}), Weight: 100, Healthy: true,
			Cluster: cluster, Metadata: map[string]string{"rack": "r-" + id}})
	}
	d := discovery(t, instances)
	router := sdk.NewUnitRouter("front", nil)
	if err := router.Update(service, []byte(`{"rules": [
	  {"name": "drills", "match": {"method": "Get", "headers": {"x-drill": "yes"}}, "unit": "c1", "mode": "enforce", "deny": true},
	  {"name": "vip", "match": {"method": "Get", "keys": ["t-vip"]}, "unit": "c2", "mode": "enforce"},
	  {"name": "rack", "match": {"keys": ["t-rack"]}, "unit": "rack-c1-b", "select": {"labels": {"rack": "r-c1-b"}}, "mode": "enforce"}]}`)); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, d, []kitexsdk.Option{kitexsdk.WithUnits(router)})
	get := func(kv ...string) (string, error) {
		ctx := context.Background()
		for i := 0; i+1 < len(kv); i += 2 {
			ctx = metainfo.WithPersistentValue(ctx, kv[i], kv[i+1])
		}
		resp, err := c.Get(ctx, &demo.GetRequest{Id: "1"})
		if err != nil {
			return "", err
		}
		return resp.Instance, nil
	}
	others := map[string]int{}
	for range 20 {
		if id, err := get("x-tenant-id", "t-vip"); err != nil || !strings.HasPrefix(id, "c2-") {
			t.Fatalf("t-vip served by %q: %v", id, err)
		}
		if id, err := get("x-tenant-id", "t-rack"); err != nil || id != "c1-b" {
			t.Fatalf("t-rack served by %q: %v", id, err)
		}
		if _, err := get("x-tenant-id", "t-1", "x-drill", "yes"); !errors.Is(err, sdk.ErrUnitDenied) {
			t.Fatalf("a drill call: %v, want sdk.ErrUnitDenied", err)
		}
		id, err := get("x-tenant-id", "t-1")
		if err != nil {
			t.Fatal(err)
		}
		others[id]++
	}
	if len(others) != 4 {
		t.Errorf("calls no rule matches went to %v, want all 4 instances", others)
	}
	for _, c := range []struct {
		rule, unit, outcome string
	}{{"vip", "c2", unitrouting.Routed}, {"rack", "rack-c1-b", unitrouting.Routed}, {"drills", "c1", unitrouting.Denied}} {
		if n := router.Count(sdk.UnitCount{Callee: service, Rule: c.rule, Unit: c.unit, Outcome: c.outcome}); n != 20 {
			t.Errorf("%s %s: %d, want 20", c.rule, c.outcome, n)
		}
	}
}
