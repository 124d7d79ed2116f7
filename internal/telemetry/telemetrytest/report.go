// Package telemetrytest makes plausible telemetry reports for benchmarks and
// load tests: the shape the project measures ingest with.
package telemetrytest

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/sextant-mesh/sextant/api"
)

// Report is one data plane's window: a server part with three priorities
// and edges to different callee instances, with plausible, varied values.
// id picks the reporter (of 200 services) and the callees.
func Report(rng *rand.Rand, id, edges int, nowMs int64) api.Report {
	req := 1000 + rng.Int64N(9000)
	r := api.Report{
		Reporter: &api.Reporter{
			Service:  fmt.Sprintf("svc-%03d", id%200),
			Instance: fmt.Sprintf("10.%d.%d.%d:8080", id%250, rng.IntN(250), rng.IntN(250)),
			Cluster:  fmt.Sprintf("c%d", id%3),
			Zone:     fmt.Sprintf("z%d", id%4),
		},
		WindowMs:    1000,
		TimestampMs: nowMs - rng.Int64N(2000),
		Server: &api.ServerStats{
			Requests: req, CPUUtil: round2(rng.Float64()), Inflight: rng.Int64N(64), ClientTimeouts: rng.Int64N(5),
			QueueTimeMsAvg: round2(rng.Float64() * 10), QueueTimeMsP99: round2(10 + rng.Float64()*40),
			RequestsByPriority: map[int32]int64{0: req / 10, 64: req * 8 / 10, 127: req - req/10 - req*8/10},
		},
		Calls: make([]api.Call, edges),
	}
	for k := range r.Calls {
		calls := 10 + rng.Int64N(2000)
		r.Calls[k] = api.Call{
			CalleeService:  fmt.Sprintf("svc-%03d", (id+k+1)%200),
			CalleeInstance: fmt.Sprintf("10.%d.%d.%d:9000", k%250, rng.IntN(250), rng.IntN(250)),
			Requests:       calls, Errors: rng.Int64N(calls/100 + 1), Timeouts: rng.Int64N(calls/200 + 1),
			LatencyMsAvg: round2(1 + rng.Float64()*20), LatencyMsP99: round2(20 + rng.Float64()*200),
		}
	}
	return r
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
