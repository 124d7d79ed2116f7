package telemetry_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/sextant-mesh/sextant/internal/telemetry"
)

// FuzzDecode feeds arbitrary bodies to the decoder and validator. They must
// never panic, must return reports or an error (never both, never neither),
// and every report they accept must hold only finite, in-range numbers.
func FuzzDecode(f *testing.F) {
	f.Add(mustJSON(validReport()))
	f.Add(mustJSON([]any{validReport(), validReport()}))
	f.Add([]byte(`{"reporter":{"service":"a","instance":"b"},"window_ms":1000,"timestamp_ms":1763769600000,"calls":[{"callee_service":"x","callee_instance":"y","requests":1e400}]}`))
	f.Add([]byte(`{"server":{"requests_by_priority":{"-1":1,"x":2}}}`))
	f.Add([]byte(`[{"reporter":null},{"calls":[null]}]`))
	f.Add([]byte(`{"reporter":{"service":"\u0000"}}`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`))
	lim := telemetry.DefaultLimits()
	f.Fuzz(func(t *testing.T, body []byte) {
		reports, fe := telemetry.Decode(body, lim, now)
		if (fe == nil) == (reports == nil) {
			t.Fatalf("reports %v and error %v: want exactly one", reports != nil, fe)
		}
		if fe != nil {
			if fe.Code == "" || fe.Message == "" {
				t.Fatalf("error without code or message: %+v", fe)
			}
			return
		}
		for i := range reports {
			// What Decode keeps passes the strict check: bad denials are left out.
			if fe := telemetry.Validate(&reports[i], lim, now, ""); fe != nil {
				t.Fatalf("accepted report %d fails Validate: %v", i, fe)
			}
		}
		for _, r := range reports {
			if r.Reporter == nil || r.Reporter.Service == "" || r.Reporter.Instance == "" {
				t.Fatalf("accepted a report without a reporter: %+v", r)
			}
			if s := r.Server; s != nil {
				if !okFloat(s.CPUUtil) || s.CPUUtil > 1 || !okFloat(s.QueueTimeMsAvg) || !okFloat(s.QueueTimeMsP99) || s.Requests < 0 {
					t.Fatalf("accepted bad server numbers: %+v", s)
				}
			}
			for _, c := range r.Calls {
				if !okFloat(c.LatencyMsAvg) || !okFloat(c.LatencyMsP99) || c.Requests < 0 || c.Errors > c.Requests {
					t.Fatalf("accepted bad call numbers: %+v", c)
				}
			}
		}
	})
}

func okFloat(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
