package mixer

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/gopkg/protocol/thrift"
	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api/write"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/internal/telemetry/telemetrytest"
)

func stageReport() api.Report {
	return telemetrytest.Report(rand.New(rand.NewPCG(1, 2)), 7, 50, time.Now().UnixMilli())
}

// BenchmarkStageRouteEncode is what the forwarder does with one report until
// its records are bytes on the way to a shard.
func BenchmarkStageRouteEncode(b *testing.B) {
	r := stageReport()
	var buf []byte
	for b.Loop() {
		recs := appendRecords(nil, &r, time.Now())
		batch := reportbatch.Batch()
		for _, rec := range recs {
			switch {
			case rec.server != nil:
				batch.Servers = append(batch.Servers, rec.server)
			case rec.edge != nil:
				batch.Edges = append(batch.Edges, rec.edge)
			}
		}
		buf = thrift.FastMarshal(batch)
	}
	b.SetBytes(int64(len(buf)))
}

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
