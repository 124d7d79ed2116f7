package calculator

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/cloudwego/gopkg/protocol/thrift"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/internal/telemetry/telemetrytest"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
)

// The arguments read as the generated code reads them, parts included; and
// what the store keeps does not change when the parts' buffer is reused.
func TestIngestArgsReadAsGeneratedAndReleased(t *testing.T) {
	now := time.Now()
	rng := rand.New(rand.NewPCG(3, 4))
	var reports []*api.Report
	for i := range 5 {
		r := telemetrytest.Report(rng, i, 20, now.UnixMilli())
		r.DryRunDenials = []api.DryRunDenial{{CalleeService: r.Calls[0].CalleeService, CallerService: r.Reporter.Service, Rule: "r", Count: 2}}
		reports = append(reports, &r)
	}
	batch := reportbatch.Batch(reports...)
	batch.MixerId, batch.BatchId = "mixer-1", 42
	batch.Edges = []*aggregator.CallEdge{{Caller: &aggregator.Reporter{Service: "old", Instance: "i"}, TimestampMs: now.UnixMilli(),
		CalleeService: "legacy-svc", CalleeInstance: "10.0.0.1:1", Requests: 5}}
	wire := thrift.FastMarshal(&aggregator.AggregatorIngestArgs{Batch: batch})

	var want aggregator.AggregatorIngestArgs
	if _, err := want.FastRead(wire); err != nil {
		t.Fatal(err)
	}
	var got ingestArgs
	if n, err := got.FastRead(wire); err != nil || n != len(wire) {
		t.Fatalf("read %d of %d bytes: %v", n, len(wire), err)
	}
	if !reflect.DeepEqual(got.Batch, want.Batch) {
		t.Fatalf("batch read differently:\n got %+v\nwant %+v", got.Batch, want.Batch)
	}

	store := NewStore(time.Second, 10, 1000)
	h := &ingestHandler{c: &Calculator{cfg: Config{Now: func() time.Time { return now }}, store: store,
		metrics: newMetrics(prometheus.NewRegistry(), store)}}
	res := aggregator.NewAggregatorIngestResult()
	buf := got.parts
	if err := serveIngest(context.Background(), h, &got, res); err != nil || res.Err != nil {
		t.Fatal(err, res.Err)
	}
	if got.Batch.Parts != nil || got.parts != nil {
		t.Fatal("the parts' buffer is still held after the call")
	}
	if res.Success.EdgesAccepted != 5*20+1 || res.Success.DenialsAccepted != 5 || res.Success.ServersAccepted != 5 {
		t.Fatalf("accepted %+v", res.Success)
	}
	before := views(store)
	clear((*buf)[:cap(*buf)]) // the next batch's bytes
	if after := views(store); before != after {
		t.Fatalf("what the store keeps changed with the parts' buffer:\n%s\n%s", before, after)
	}

	var short ingestArgs
	if _, err := short.FastRead(wire[:len(wire)/2]); err == nil {
		t.Fatal("half the arguments read without an error")
	}
}

// ingestArgs reads the fields of ReportBatch by id; one added to the IDL
// would be skipped without a word.
func TestIngestArgsKnowEveryBatchField(t *testing.T) {
	known := map[string]bool{"mixer_id,1": true, "batch_id,2": true, "servers,3": true, "edges,4": true,
		"denials,5": true, "parts,6": true, "part_count,7": true}
	typ := reflect.TypeFor[aggregator.ReportBatch]()
	for i := range typ.NumField() {
		if tag := typ.Field(i).Tag.Get("thrift"); !known[tag] {
			t.Errorf("ReportBatch field %s (%q) is not read by ingestArgs.readBatch", typ.Field(i).Name, tag)
		}
	}
}

// views is what s keeps, as JSON: its own bytes, whatever s points into.
func views(s *Store) string {
	var out []ServiceView
	for _, name := range s.Names() {
		v, _ := s.Service(name)
		out = append(out, v)
	}
	b, err := json.Marshal(out)
	if err != nil {
		panic(err)
	}
	return string(b)
}
