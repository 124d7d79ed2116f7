package calculator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cloudwego/gopkg/protocol/thrift"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/internal/telemetry/telemetrytest"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
)

// BenchmarkStageCalculatorIngest decodes reports' records as the
// calculator's Kitex server does (the call's arguments, ingestArgs) and
// aggregates them, counting each in metrics: one report per batch, and a
// batch of 100 reports (of 200 services, as the mixer's batches hold many).
func BenchmarkStageCalculatorIngest(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("reports=%d", n), func(b *testing.B) {
			now := time.Now()
			rng := rand.New(rand.NewPCG(1, 2))
			var reports []*api.Report
			for i := range n {
				r := telemetrytest.Report(rng, 7+i, 50, now.UnixMilli())
				reports = append(reports, &r)
			}
			wire := thrift.FastMarshal(&aggregator.AggregatorIngestArgs{Batch: reportbatch.Batch(reports...)})
			cfg := DefaultConfig()
			store := NewStore(cfg.Window, cfg.Windows, cfg.MaxSeries)
			h := &ingestHandler{c: &Calculator{cfg: Config{Now: func() time.Time { return now }}, store: store,
				metrics: newMetrics(prometheus.NewRegistry(), store)}}
			res := aggregator.NewAggregatorIngestResult()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				var args ingestArgs
				if _, err := args.FastRead(wire); err != nil {
					b.Fatal(err)
				}
				if err := serveIngest(context.Background(), h, &args, res); err != nil || res.Err != nil {
					b.Fatal(err, res.Err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/report")
		})
	}
}
