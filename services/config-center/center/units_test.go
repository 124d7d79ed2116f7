package center_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/internal/testenv"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

func unitRoutingOf(a api.WatchAnswer, scope string) (api.Effective, int) {
	var found api.Effective
	n := 0
	for _, c := range a.Configs {
		if c.Kind == api.KindUnitRouting && c.Scope == scope {
			found = c
			n++
		}
	}
	return found, n
}

// A callee's unit_routing is in the watch answers of the callers that name
// it (calls=), once in its own, in no one else's; writing it releases the
// callers' watches with the new document; a bad document is refused
// naming the field.
func TestCallersGetTheCalleesUnitRouting(t *testing.T) {
	_, _, cc := setup(t, nil)
	watch := func(service, calls string, version int64, wait string) (int, api.WatchAnswer) {
		q := url.Values{"service": {service}, "instance": {"10.0.0.1:80"}, "version": {fmt.Sprint(version)}, "wait": {wait}}
		if calls != "" {
			q.Set("calls", calls)
		}
		r := cc.do("GET", "/v1/watch?"+q.Encode(), "")
		var a api.WatchAnswer
		if r.status == 200 {
			if fe := api.Decode(r.body, &a); fe != nil {
				t.Fatalf("watch answer %s: %v", r.body, fe)
			}
		}
		return r.status, a
	}
	r := cc.do("PUT", "/v1/configs/unit_routing/orders", `{"rules": [{"name": "gold", "match": {"keys": ["acme"]}, "unit": "c2", "mode": "observe"}]}`)
	if r.status != 200 {
		t.Fatal(r)
	}
	var a api.WatchAnswer
	testenv.Eventually(t, 10*time.Second, func() error {
		_, a = watch("front", "orders", 0, "0s")
		if _, n := unitRoutingOf(a, "orders"); n != 1 {
			return fmt.Errorf("front's answer: %+v", a)
		}
		return nil
	})
	if _, got := watch("front", "", 0, "0s"); len(got.Configs) != 0 {
		t.Errorf("a caller that does not name orders got %+v", got.Configs)
	}
	if _, got := watch("orders", "orders", 0, "0s"); func() int { _, n := unitRoutingOf(got, "orders"); return n }() != 1 {
		t.Errorf("orders' own answer: %+v", got.Configs)
	}

	released := make(chan api.WatchAnswer, 1)
	go func() {
		_, got := watch("front", "orders", a.Version, "20s")
		released <- got
	}()
	cur := cc.do("GET", "/v1/configs/unit_routing/orders", "").header.Get("ETag")
	if r := cc.do("PUT", "/v1/configs/unit_routing/orders", `{"rules": [{"name": "gold", "match": {"keys": ["acme"]}, "unit": "c2", "mode": "enforce", "percent": 30}]}`, "If-Match", cur); r.status != 200 {
		t.Fatal(r)
	}
	select {
	case got := <-released:
		e, _ := unitRoutingOf(got, "orders")
		var doc api.UnitRouting
		if json.Unmarshal(e.Document, &doc) != nil || len(doc.Rules) != 1 || doc.Rules[0].Mode != api.ModeEnforce {
			t.Fatalf("released with %+v", got.Configs)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the caller's watch was not released by the callee's unit_routing")
	}

	cur = cc.do("GET", "/v1/configs/unit_routing/orders", "").header.Get("ETag")
	for doc, field := range map[string]string{
		`{"rules": [{"name": "r", "match": {"keys": ["a"]}, "unit": "c2", "mode": "enforce", "percent": 130}]}`:            "rules[0].percent",
		`{"rules": [{"name": "r", "match": {"http": {"path": "orders"}}, "unit": "c2", "mode": "enforce"}]}`:               "rules[0].match.http.path",
		`{"rules": [{"name": "r", "match": {"keys": ["a"]}, "unit": "c2", "mode": "enforce", "fallback": "every where"}]}`: "rules[0].fallback",
	} {
		r := cc.do("PUT", "/v1/configs/unit_routing/orders", doc, "If-Match", cur)
		var e struct {
			Error api.FieldError `json:"error"`
		}
		if r.status != 400 || json.Unmarshal(r.body, &e) != nil || e.Error.Field != field {
			t.Errorf("%s: %d %s, want 400 on %s", doc, r.status, r.body, field)
		}
	}
}

// Unit routes reported in telemetry reach the shard that owns the callee
// (the parts the mixer sends); the config-center shows them per rule,
// unit and outcome next to the rules in force.
func TestUnitsReport(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	calc := calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	srv := centertest.Start(t, etcd, prefix, nil)
	cc := apiClient{t: t, base: "http://" + srv.Addr(), token: centertest.AdminToken}
	if r := cc.do("GET", "/v1/units/report?service=bad%20name", ""); r.status != 400 {
		t.Errorf("a bad service name: %s", r)
	}
	cc.do("PUT", "/v1/configs/unit_routing/orders", `{"rules": [{"name": "gold", "match": {"keys": ["acme"]}, "unit": "c2", "mode": "enforce", "percent": 30}]}`)

	kc, err := aggregatorsvc.NewClient("weight-calculator", client.WithHostPorts(calc.KitexAddr()))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	var reports []*api.Report
	for i, caller := range []string{"front", "front", "mobile"} {
		reports = append(reports, &api.Report{Reporter: &api.Reporter{Service: caller, Instance: fmt.Sprintf("10.0.0.%d:80", i)}, WindowMs: 1000, TimestampMs: now,
			UnitRoutes: []api.UnitRoute{
				{CalleeService: "orders", Rule: "gold", Unit: "c2", Outcome: "routed", Count: 3},
				{CalleeService: "orders", Rule: "gold", Unit: "c2", Outcome: "observed", Count: 7},
				{CalleeService: "orders", Rule: "old-rule", Unit: "c3", Outcome: "failed", Count: 1},
			}})
	}
	if _, err := kc.Ingest(context.Background(), reportbatch.Batch(reports...)); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Revision int64 `json:"revision"`
		Rules    []struct {
			Rule     string                      `json:"rule"`
			Mode     string                      `json:"mode"`
			Percent  *int                        `json:"percent"`
			Outcomes map[string]int64            `json:"outcomes"`
			ByUnit   map[string]map[string]int64 `json:"by_unit"`
		} `json:"rules"`
		Routes []struct {
			CallerService string `json:"caller_service"`
			Count         int64  `json:"count"`
		} `json:"routes"`
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		r := cc.do("GET", "/v1/units/report?service=orders", "")
		if r.status != 200 {
			return fmt.Errorf("%s", r)
		}
		_ = json.Unmarshal(r.body, &got)
		if len(got.Rules) != 2 || got.Revision == 0 || got.Rules[0].Rule != "gold" || got.Rules[0].Mode != "enforce" || got.Rules[0].Percent == nil ||
			got.Rules[0].Outcomes["routed"] != 9 || got.Rules[0].ByUnit["c2"]["observed"] != 21 ||
			got.Rules[1].Rule != "old-rule" || got.Rules[1].Mode != "" || got.Rules[1].ByUnit["c3"]["failed"] != 3 || len(got.Routes) != 6 {
			return fmt.Errorf("report %s", r.body)
		}
		return nil
	})
}
