package mixer

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/telemetry/telemetrytest"
	"github.com/sextant-mesh/sextant/internal/tsdb"
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

// BenchmarkStageLineProtocol is what writing one report's time series
// costs the mixer: its server point as line protocol into the writer's
// buffer (writeReport; the call edges are the calculator's, per window).
// The writer sends its batches, gzip-compressed, to a server that reads and
// discards them: their allocations are counted, their CPU is the flusher's.
func BenchmarkStageLineProtocol(b *testing.B) {
	r := stageReport()
	influx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer influx.Close()
	cfg := tsdb.DefaultConfig()
	cfg.URL, cfg.Queue = influx.URL, 1<<30
	w := tsdb.New(cfg, "telemetry-mixer", slog.New(slog.DiscardHandler))
	defer w.Close(context.Background())
	for b.Loop() {
		writeReport(w, &r)
	}
}
