package mixer

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"log/slog"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api/write"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/telemetry/telemetrytest"
)

func stageReport() api.Report {
	return telemetrytest.Report(rand.New(rand.NewPCG(1, 2)), 7, 50, time.Now().UnixMilli())
}

// BenchmarkStageRouteEncode is what the forwarder does with one report until
// its records are bytes on the way to a shard: routed (three shards) and
// encoded into the shards' batches.
func BenchmarkStageRouteEncode(b *testing.B) {
	r := stageReport()
	router := staticRouter{shard.NewView([]shard.Shard{{ID: "a", Addr: "127.0.0.1:1"}, {ID: "b", Addr: "127.0.0.1:2"}, {ID: "c", Addr: "127.0.0.1:3"}})}
	f := NewForwarder(DefaultConfig().Forward, "m", router, nil, newMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	f.cfg.QueueRecords = 1 << 40
	f.cfg.MaxBatchRecords = 1 << 40
	reports := []api.Report{r}
	var size int
	for b.Loop() {
		if err := f.Offer(reports); err != nil {
			b.Fatal(err)
		}
		// what a send does with the bytes once the call returned
		f.mu.Lock()
		size = 0
		for _, q := range f.queues {
			size += len(q.open.parts)
			q.open.parts, q.open.count, q.open.records = q.open.parts[:0], 0, reportbatch.Counts{}
		}
		f.mu.Unlock()
		f.used.Store(0)
	}
	b.SetBytes(int64(size))
}

type staticRouter struct{ v *shard.View }

func (s staticRouter) View() *shard.View { return s.v }

// BenchmarkStageLineProtocol is what writing one report's time series costs
// the mixer until it is line protocol.
func BenchmarkStageLineProtocol(b *testing.B) {
	r := stageReport()
	var sb strings.Builder
	for b.Loop() {
		sb.Reset()
		at := time.UnixMilli(r.TimestampMs)
		rep, s := r.Reporter, r.Server
		write.PointToLineProtocolBuffer(influxdb2.NewPoint("server", map[string]string{"service": rep.Service, "instance": rep.Instance, "zone": rep.Zone, "cluster": rep.Cluster},
			map[string]any{"requests": s.Requests, "cpu_util": s.CPUUtil, "queue_time_ms_avg": s.QueueTimeMsAvg,
				"queue_time_ms_p99": s.QueueTimeMsP99, "inflight": s.Inflight, "client_timeouts": s.ClientTimeouts,
				"window_ms": r.WindowMs}, at), &sb, time.Nanosecond)
		for i := range r.Calls {
			c := &r.Calls[i]
			write.PointToLineProtocolBuffer(influxdb2.NewPoint("call", map[string]string{"caller_service": rep.Service, "caller_instance": rep.Instance,
				"callee_service": c.CalleeService, "callee_instance": c.CalleeInstance},
				map[string]any{"requests": c.Requests, "errors": c.Errors, "timeouts": c.Timeouts,
					"latency_ms_avg": c.LatencyMsAvg, "latency_ms_p99": c.LatencyMsP99, "window_ms": r.WindowMs}, at), &sb, time.Nanosecond)
		}
	}
	b.SetBytes(int64(sb.Len()))
}
