package calculator

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cloudwego/gopkg/protocol/thrift"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/internal/telemetry/telemetrytest"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
)

// BenchmarkStageCalculatorIngest decodes one report's records as the
// calculator's Kitex server does (the call's arguments, ingestArgs) and
// aggregates them, counting each in metrics.
func BenchmarkStageCalculatorIngest(b *testing.B) {
	now := time.Now()
	r := telemetrytest.Report(rand.New(rand.NewPCG(1, 2)), 7, 50, now.UnixMilli())
	wire := thrift.FastMarshal(&aggregator.AggregatorIngestArgs{Batch: reportbatch.Batch(&r)})
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
}
