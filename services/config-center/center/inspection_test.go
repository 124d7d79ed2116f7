package center_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// The inspection reads the callers that data planes reported, through the
// mixer and the calculator, against the service's access rules: who is
// allowed, who is denied by which rule, which rules no caller uses, and
// which callers no rule names.
func TestAccessInspection(t *testing.T) {
	etcd, prefix := testenv.StartEtcd(t), testenv.Prefix(t)
	calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	mx := mixertest.Start(t, etcd, prefix, nil)
	srv := centertest.Start(t, etcd, prefix, nil)
	cc := apiClient{t: t, base: "http://" + srv.Addr(), token: centertest.AdminToken}
	if r := cc.do("PUT", "/v1/configs/access_control/pay-svc", `{"rules": [
		{"name": "known", "type": "allow", "callers": ["checkout", "refunds"], "mode": "enforce"},
		{"name": "no-batch", "type": "deny", "callers": ["batch-job"], "mode": "dry_run"},
		{"name": "stale", "type": "deny", "callers": ["retired-svc"], "mode": "enforce"}]}`); r.status != 200 {
		t.Fatalf("rules: %s", r)
	}
	// Three callers report their calls to pay-svc, each with its own token.
	mixer := apiClient{t: t, base: "http://" + mx.Addr()}
	for i, caller := range []string{"checkout", "batch-job", "newcomer"} {
		mixer.token = testenv.ServiceToken(t, etcd, prefix, caller)
		body := fmt.Sprintf(`{"reporter":{"service":%q,"instance":"10.0.%d.1:80"},"window_ms":1000,"timestamp_ms":%d,
			"calls":[{"callee_service":"pay-svc","callee_instance":"10.9.0.1:80","requests":%d,"errors":0,"timeouts":0,"latency_ms_avg":5,"latency_ms_p99":9}]}`,
			caller, i, time.Now().UnixMilli(), 10*(i+1))
		testenv.Eventually(t, 10*time.Second, func() error { // the mixer learns the token from etcd
			if r := mixer.do("POST", "/v1/telemetry", body); r.status != 202 {
				return fmt.Errorf("report of %s: %s", caller, r)
			}
			return nil
		})
	}
	var got center.Inspection
	testenv.Eventually(t, 10*time.Second, func() error {
		r := cc.do("GET", "/v1/access/inspection?service=pay-svc", "")
		got = center.Inspection{} // a field an answer omits must not keep an earlier answer's value
		// The rules reach the inspection through the config-center's
		// mirror of etcd, the callers through the calculator.
		if r.status != 200 || json.Unmarshal(r.body, &got) != nil || len(got.Callers) != 3 || len(got.Rules) != 3 {
			return fmt.Errorf("inspection %s", r)
		}
		return nil
	})
	want := map[string]string{"batch-job": "denied known", "checkout": "allowed ", "newcomer": "denied known"}
	for _, c := range got.Callers {
		if v := c.Verdict + " " + c.Rule; v != want[c.Service] {
			t.Errorf("%s: %q, want %q", c.Service, v, want[c.Service])
		}
	}
	if c := got.Callers[0]; c.Service != "batch-job" || c.Requests != 20 || len(c.NamedBy) != 1 || c.NamedBy[0] != "no-batch" {
		t.Errorf("batch-job: %+v", c)
	}
	if fmt.Sprint(got.UnusedRules) != "[stale]" || fmt.Sprint(got.Uncovered) != "[newcomer]" {
		t.Errorf("unused rules %v (want [stale]), uncovered callers %v (want [newcomer])", got.UnusedRules, got.Uncovered)
	}
	// A data plane's token may read the inspection too (an owner's view).
	cc.token = testenv.ServiceToken(t, etcd, prefix, "pay-svc")
	testenv.Eventually(t, 10*time.Second, func() error {
		if r := cc.do("GET", "/v1/access/inspection?service=pay-svc", ""); r.status != 200 {
			return fmt.Errorf("with the service's own token: %s", r)
		}
		return nil
	})
}
