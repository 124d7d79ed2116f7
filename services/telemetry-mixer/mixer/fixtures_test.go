package mixer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// traffic is what a test posted, per service, to compare with what the
// calculator shards hold.
type traffic struct {
	reports      int
	records      int
	edges        map[string]int64 // callee service -> call edges
	edgeRequests map[string]int64 // callee service -> requests in those edges
	servers      map[string]int64 // reporter service -> server parts
}

func newTraffic() *traffic {
	return &traffic{edges: map[string]int64{}, edgeRequests: map[string]int64{}, servers: map[string]int64{}}
}

func (tr *traffic) add(r api.Report) {
	tr.reports++
	tr.records += r.Records()
	if r.Server != nil {
		tr.servers[r.Reporter.Service]++
	}
	for _, c := range r.Calls {
		tr.edges[c.CalleeService]++
		tr.edgeRequests[c.CalleeService] += c.Requests
	}
}

func (tr *traffic) services() []string {
	seen := map[string]bool{}
	var out []string
	for s := range tr.edges {
		seen[s] = true
		out = append(out, s)
	}
	for s := range tr.servers {
		if !seen[s] {
			out = append(out, s)
		}
	}
	return out
}

// reports makes n reports from caller services front-0.. to callee services
// svc-0..svc-(callees-1), each with a server part and one call per callee.
func reports(n, callees int, seed int) []api.Report {
	now := time.Now().UnixMilli()
	out := make([]api.Report, n)
	for i := range out {
		r := api.Report{
			Reporter:    &api.Reporter{Service: fmt.Sprintf("front-%d", i%3), Instance: fmt.Sprintf("10.0.%d.%d:8080", seed%250, i%250)},
			WindowMs:    1000,
			TimestampMs: now,
			Server:      &api.ServerStats{Requests: int64(100 + i), CPUUtil: 0.5, QueueTimeMsAvg: 1, RequestsByPriority: map[int32]int64{64: int64(100 + i)}},
		}
		for c := 0; c < callees; c++ {
			r.Calls = append(r.Calls, api.Call{
				CalleeService: fmt.Sprintf("svc-%d", c), CalleeInstance: fmt.Sprintf("10.1.%d.%d:9000", c, i%4),
				Requests: int64(10 + (i+c)%7), Errors: int64((i + c) % 2), LatencyMsAvg: 5, LatencyMsP99: 20,
			})
		}
		out[i] = r
	}
	return out
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, a.body) }

func post(t testing.TB, addr string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/telemetry", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func do(t testing.TB, req *http.Request) answer {
	t.Helper()
	resp, err := testenv.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// postAll posts reports in requests of batch, all of which must be accepted.
func postAll(t testing.TB, addr string, rs []api.Report, batch int, tr *traffic) {
	t.Helper()
	for i := 0; i < len(rs); i += batch {
		chunk := rs[i:min(i+batch, len(rs))]
		if a := post(t, addr, mustJSON(t, chunk)); a.status != http.StatusAccepted {
			t.Fatalf("post: %s", a)
		}
		for _, r := range chunk {
			tr.add(r)
		}
	}
}

// totals sums what the given shards hold about service.
func totals(shards []*calculator.Calculator, service string) (calculator.Totals, []string) {
	var sum calculator.Totals
	var holders []string
	for _, c := range shards {
		v, ok := c.Windows(service)
		if !ok {
			continue
		}
		holders = append(holders, c.ID())
		for _, iv := range v.Instances {
			sum.EdgeRecords += iv.Totals.EdgeRecords
			sum.EdgeRequests += iv.Totals.EdgeRequests
			sum.ServerRecords += iv.Totals.ServerRecords
			sum.LateRecords += iv.Totals.LateRecords
		}
	}
	return sum, holders
}

// matches compares what shards hold with what was posted, service by service.
func matches(shards []*calculator.Calculator, tr *traffic) error {
	for _, svc := range tr.services() {
		got, _ := totals(shards, svc)
		if got.EdgeRecords != tr.edges[svc] || got.EdgeRequests != tr.edgeRequests[svc] || got.ServerRecords != tr.servers[svc] {
			return fmt.Errorf("%s: shards hold %d edges / %d requests / %d server parts, posted %d / %d / %d",
				svc, got.EdgeRecords, got.EdgeRequests, got.ServerRecords, tr.edges[svc], tr.edgeRequests[svc], tr.servers[svc])
		}
	}
	return nil
}
