package calculator

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
)

// BenchmarkRound is one computation round of a shard owning 1,000 services
// of 100 instances each, with three windows of server and caller data per
// instance. Allocations per instance = allocs/op / 100,000.
func BenchmarkRound(b *testing.B) {
	const services, instances = 1000, 100
	start := time.UnixMilli(1_763_769_600_500)
	store := NewStore(time.Second, 10, services*instances)
	for s := 0; s < services; s++ {
		svc := fmt.Sprintf("svc-%04d", s)
		for i := 0; i < instances; i++ {
			rep := &aggregator.Reporter{Service: svc, Instance: fmt.Sprintf("10.%d.%d.%d:9000", s/250, s%250, i)}
			for w := 0; w < 3; w++ {
				ts := start.Add(time.Duration(w-3) * time.Second).UnixMilli()
				store.AddServer(&aggregator.ServerRecord{Reporter: rep, TimestampMs: ts, Requests: 1000 + int64(i),
					CpuUtil: 0.3 + float64(i%10)/20, QueueTimeMsAvg: 2, RequestsByPriority: map[int32]int64{0: 100, 64: 800, 127: 100}}, start.Add(-time.Minute))
				store.AddEdge(&aggregator.CallEdge{CalleeService: svc, CalleeInstance: rep.Instance, TimestampMs: ts,
					Requests: 1000, Errors: int64(i % 3), LatencyMsAvg: 5 + float64(i%7), LatencyMsP99: 20}, start.Add(-time.Minute))
			}
		}
	}
	pub := NewPublisher(nil, "", time.Second, newPublishMetrics(prometheus.NewRegistry()), logx.Discard())
	e := newEngine("bench", store, NewKnobStore(logx.Discard()), func(string) bool { return true }, pub, time.Second)
	e.round(start.Add(-time.Minute)) // owned long ago: rounds run past the ownership warm-up
	e.round(start)                   // the first publish of every service
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.round(start.Add(time.Duration(5+i%2) * time.Millisecond))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(services*instances), "ns/instance")
}
