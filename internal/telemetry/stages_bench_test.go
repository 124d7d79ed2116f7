package telemetry_test

import (
	"math/rand/v2"
	"testing"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/jsonx"
	"github.com/sextant-mesh/sextant/internal/telemetry"
	"github.com/sextant-mesh/sextant/internal/telemetry/telemetrytest"
)

// The ingest stages, one report of 50 call edges each (docs/benchmarks.md):
// go test -run '^$' -bench Stage -benchmem ./internal/telemetry ./services/...

func stageBody(b *testing.B) []byte {
	r := telemetrytest.Report(rand.New(rand.NewPCG(1, 2)), 7, 50, now.UnixMilli())
	return mustJSON(r)
}

// BenchmarkStageDecode is what the mixer runs on a body: a pooled
// telemetry.Decoder, whose reports are reused and point into the body. It
// validates too (BenchmarkStageValidate is that part alone).
func BenchmarkStageDecode(b *testing.B) {
	body := stageBody(b)
	lim := telemetry.DefaultLimits()
	var d telemetry.Decoder
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, fe := d.Decode(body, lim, now); fe != nil {
			b.Fatal(fe)
		}
	}
}

func BenchmarkStageValidate(b *testing.B) {
	var r api.Report
	if fe := jsonx.Decode(stageBody(b), &r); fe != nil {
		b.Fatal(fe)
	}
	lim := telemetry.DefaultLimits()
	for b.Loop() {
		if fe := telemetry.Validate(&r, lim, now, ""); fe != nil {
			b.Fatal(fe)
		}
	}
}
