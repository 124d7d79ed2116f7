package mixer_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// A report whose only fault is in its dry-run denials (a caller without a
// name, more denials than --max-denials-per-report) is accepted: its server
// and call data reach the shard with its good denials, and the denials left
// out are counted by reason, in the answer and in a metric. A report with
// any other fault is still refused whole.
func TestBadDenialsDoNotLoseTheWindow(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	calc := calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	mx := mixertest.Start(t, etcd, prefix, nil) // at most 100 denials a report
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 1)

	rs := reports(1, 3, 1)
	r := &rs[0]
	r.DryRunDenials = append(r.DryRunDenials, api.DryRunDenial{CalleeService: r.Reporter.Service, CallerService: "", Rule: "allow-list", Count: 3})
	for i := 0; i < 101; i++ {
		r.DryRunDenials = append(r.DryRunDenials, api.DryRunDenial{CalleeService: r.Reporter.Service, CallerService: fmt.Sprintf("caller-%d", i), Rule: "allow-list", Count: 1})
	}
	a := post(t, mx.Addr(), mustJSON(t, rs))
	if a.status != http.StatusAccepted {
		t.Fatalf("a report whose only fault is in its denials: %s, want 202", a)
	}
	var body struct {
		Accepted       int `json:"accepted"`
		DenialsDropped int `json:"denials_dropped"`
	}
	if err := json.Unmarshal(a.body, &body); err != nil || body.Accepted != 1 || body.DenialsDropped != 2 {
		t.Fatalf("answer %s: want 1 accepted, 2 denials dropped (%v)", a.body, err)
	}
	testenv.WaitMetric(t, mx.Addr(), `sextant_mixer_records_forwarded_total{kind="server"}`, 1)
	testenv.WaitMetric(t, mx.Addr(), `sextant_mixer_records_forwarded_total{kind="edge"}`, 3)
	testenv.WaitMetric(t, mx.Addr(), `sextant_mixer_records_forwarded_total{kind="denial"}`, 100)
	for reason, want := range map[string]float64{api.CodeMissingField: 1, api.CodeTooMany: 1} {
		if n := testenv.Metric(t, mx.Addr(), fmt.Sprintf(`sextant_mixer_denials_dropped_total{reason=%q}`, reason)); n != want {
			t.Errorf("denials dropped for %s: %v, want %v", reason, n, want)
		}
	}
	if v, ok := calc.Windows(r.Reporter.Service); !ok || len(v.Instances) == 0 {
		t.Errorf("the shard holds no server data of %s", r.Reporter.Service)
	}

	// Any other fault refuses the request, denials or not.
	r.Server.CPUUtil = 7
	a = post(t, mx.Addr(), mustJSON(t, rs))
	if a.status != http.StatusBadRequest {
		t.Fatalf("a bad cpu_util beside bad denials: %s, want 400", a)
	}
	if e := decodeError(t, a); e.Error.Field != "[0].server.cpu_util" {
		t.Fatalf("error %+v, want out_of_range on [0].server.cpu_util", e.Error)
	}
	if n := testenv.Metric(t, mx.Addr(), `sextant_mixer_denials_dropped_total{reason="too_many"}`); n != 1 {
		t.Errorf("a refused request counted dropped denials: %v", n)
	}
}
