package center_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// The overview lists what the calculator shards compute, through the
// config-center, with paging, search and sorting; a service's page shows
// its instances as weighed. Two shards, so that the list is a merge.
func TestServicesOverview(t *testing.T) {
	etcd, prefix := testenv.StartEtcd(t), testenv.Prefix(t)
	calcs := []*calculator.Calculator{calculatortest.Start(t, etcd, prefix, "calc-1", nil), calculatortest.Start(t, etcd, prefix, "calc-2", nil)}
	mx := mixertest.Start(t, etcd, prefix, nil)
	srv := centertest.Start(t, etcd, prefix, nil)
	cc := apiClient{t: t, base: "http://" + srv.Addr(), token: centertest.AdminToken}
	mixer := apiClient{t: t, base: "http://" + mx.Addr(), token: testenv.ServiceToken(t, etcd, prefix, "front")}

	// front calls five services; svc-3 fails a third of its calls on one instance.
	report := func() {
		var calls []string
		for i := range 5 {
			for j := range 2 {
				errs := 0
				if i == 3 && j == 1 {
					errs = 100
				}
				calls = append(calls, fmt.Sprintf(`{"callee_service":"svc-%d","callee_instance":"10.0.%d.%d:80","requests":300,"errors":%d,"timeouts":0,"latency_ms_avg":%d,"latency_ms_p99":%d}`,
					i, i, j, errs, 5+i, 9+i))
			}
		}
		body := fmt.Sprintf(`{"reporter":{"service":"front","instance":"10.1.0.1:80"},"window_ms":1000,"timestamp_ms":%d,"calls":[%s]}`,
			time.Now().UnixMilli(), strings.Join(calls, ","))
		if r := mixer.do("POST", "/v1/telemetry", body); r.status != 202 {
			t.Logf("report: %s", r) // the mixer may not know the token yet
		}
	}
	var list center.ServiceList
	testenv.Eventually(t, 20*time.Second, func() error {
		report()
		r := cc.do("GET", "/v1/services", "")
		if r.status != 200 || json.Unmarshal(r.body, &list) != nil {
			return fmt.Errorf("overview %s", r)
		}
		if list.Total != 5 || list.Partial || list.Services[0].Service != "svc-3" || list.Services[0].ErrorRatio == 0 {
			return fmt.Errorf("overview: %s", r)
		}
		return nil
	})
	shards := map[string]bool{}
	for _, s := range list.Services {
		shards[s.Shard] = true
		if s.Instances != 2 || s.RequestsPerS <= 0 || s.LatencyMs <= 0 {
			t.Errorf("%s: %+v", s.Service, s)
		}
	}
	t.Logf("overview: %d services from shards %v; first %+v", list.Total, shards, list.Services[0])

	get := func(path string) center.ServiceList {
		var l center.ServiceList
		if r := cc.do("GET", path, ""); r.status != 200 || json.Unmarshal(r.body, &l) != nil {
			t.Fatalf("%s: %s", path, r)
		}
		return l
	}
	if l := get("/v1/services?search=SVC-4"); l.Total != 1 || l.Services[0].Service != "svc-4" {
		t.Errorf("search svc-4: %+v", l)
	}
	if l := get("/v1/services?sort=name&offset=1&limit=2"); l.Total != 5 || len(l.Services) != 2 ||
		l.Services[0].Service != "svc-1" || l.Services[1].Service != "svc-2" {
		t.Errorf("by name, second page of 2: %+v", l)
	}
	if l := get("/v1/services?offset=9"); l.Total != 5 || len(l.Services) != 0 {
		t.Errorf("past the end: %+v", l)
	}

	var svc api.ServiceInstances
	if r := cc.do("GET", "/v1/services/svc-3", ""); r.status != 200 || json.Unmarshal(r.body, &svc) != nil {
		t.Fatalf("svc-3: %s", r)
	}
	share := 0.0
	for _, in := range svc.Instances {
		share += in.Share
	}
	if len(svc.Instances) != 2 || math.Abs(share-1) > 1e-6 || svc.Instances[1].ErrorRate <= svc.Instances[0].ErrorRate {
		t.Errorf("svc-3: %+v", svc)
	}

	for path, field := range map[string]string{
		"/v1/services?limit=0":      "limit",
		"/v1/services?limit=x":      "limit",
		"/v1/services?offset=-1":    "offset",
		"/v1/services?sort=fastest": "sort",
	} {
		r := cc.do("GET", path, "")
		var e struct {
			Error api.FieldError `json:"error"`
		}
		if r.status != 400 || json.Unmarshal(r.body, &e) != nil || e.Error.Field != field {
			t.Errorf("%s: %s, want 400 naming %s", path, r, field)
		}
	}
	if r := cc.do("GET", "/v1/services/nothing-here", ""); r.status != 404 {
		t.Errorf("an unknown service: %s, want 404", r)
	}
	// The calculator's knobs are a config kind: written here, they reach
	// the shard that computes the service; a bad knob is refused by name.
	if r := cc.do("PUT", "/v1/configs/calculator/svc-1", `{"max_ejection_percent": 20, "blackout_ms": 5000}`); r.status != 200 {
		t.Fatalf("knobs: %s", r)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, c := range calcs {
			if d, ok := c.Decision("svc-1"); ok && d.Knobs.MaxEjectionPercent == 20 && d.Knobs.BlackoutMs == 5000 {
				return nil
			}
		}
		return errors.New("no shard computes svc-1 with the knobs written")
	})
	r := cc.do("PUT", "/v1/configs/calculator/svc-2", `{"panic_utilization": 2}`)
	var bad struct {
		Error api.FieldError `json:"error"`
	}
	if r.status != 400 || json.Unmarshal(r.body, &bad) != nil || bad.Error.Field != "panic_utilization" {
		t.Errorf("a knob out of range: %s, want 400 naming panic_utilization", r)
	}
	var kinds struct {
		Kinds []center.KindInfo `json:"kinds"`
	}
	if r := cc.do("GET", "/v1/kinds", ""); r.status != 200 || json.Unmarshal(r.body, &kinds) != nil || len(kinds.Kinds) != len(center.Kinds) {
		t.Fatalf("kinds: %s", r)
	}
	for _, k := range kinds.Kinds {
		if k.Kind == "calculator" && fmt.Sprint(k.Defaults.(map[string]any)["panic_utilization"]) != "0.9" {
			t.Errorf("calculator defaults: %v", k.Defaults)
		}
	}

	anonymous := apiClient{t: t, base: cc.base}
	for _, path := range []string{"/v1/services", "/v1/services/svc-3"} {
		if r := anonymous.do("GET", path, ""); r.status != 401 {
			t.Errorf("%s without a credential: %s, want 401", path, r)
		}
	}
}
