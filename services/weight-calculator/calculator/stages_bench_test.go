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

// BenchmarkStageCalculatorIngest decodes one report's records as Kitex
// hands them to the handler and aggregates them, counting each in metrics.
func BenchmarkStageCalculatorIngest(b *testing.B) {
	now := time.Now()
	r := telemetrytest.Report(rand.New(rand.NewPCG(1, 2)), 7, 50, now.UnixMilli())
	wire := thrift.FastMarshal(reportbatch.Batch(&r))
	cfg := DefaultConfig()
	store := NewStore(cfg.Window, cfg.Windows, cfg.MaxSeries)
	h := &ingestHandler{c: &Calculator{cfg: Config{Now: func() time.Time { return now }}, store: store,
		metrics: newMetrics(prometheus.NewRegistry(), store)}}
	b.SetBytes(int64(len(wire)))
	for b.Loop() {
		var batch aggregator.ReportBatch
		if err := thrift.FastUnmarshal(wire, &batch); err != nil {
			b.Fatal(err)
		}
		if _, err := h.Ingest(context.Background(), &batch); err != nil {
			b.Fatal(err)
		}
	}
}
