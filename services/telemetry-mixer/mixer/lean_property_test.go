package mixer

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cloudwego/gopkg/protocol/thrift"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/telemetry"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// TestLeanPathAggregatesAsReference sends random request bodies through the
// lean path (one reused telemetry.Decoder, the forwarder routing each report
// into per-shard encoded batches, the batches through Thrift as Kitex carries
// them, each shard's calculator store decoding and aggregating them) and
// through a plain reference (encoding/json into api.Report, then loops), and
// wants the same windows, per service, instance and window, and the same
// dry-run denial counts. Every record lies within the windows kept, so none
// may be dropped as late.
func TestLeanPathAggregatesAsReference(t *testing.T) {
	for seed := range uint64(25) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 14))
			now := time.Now()
			bodies := randomBodies(rng, now)
			want := referenceAggregate(t, bodies)
			got := leanAggregate(t, rng, bodies, now)
			compareAggregates(t, got, want)
		})
	}
}

// winKey names one window of one instance of one service.
type winKey struct {
	service, instance string
	startMs           int64
}

// refWindow is what the reference keeps of one window; the averages are
// kept as sums weighted by requests and divided at the end.
type refWindow struct {
	serverRecords, serverRequests, inflight, clientTimeouts int64
	cpuUtil, queueSum, queueP99                             float64
	byPriority, byLevel                                     map[int32]int64

	callRecords, callRequests, callErrors, callTimeouts int64
	latencySum, latencyP99                              float64
}

type aggregates struct {
	windows map[winKey]*refWindow
	denials map[[3]string]int64 // callee service, caller service, rule
}

// window is the length the calculator's stores are made with.
const window = time.Second

// windowsKept is how many windows the calculator's stores keep.
const windowsKept = 10

// randomBodies makes request bodies of random reports: a few reporter
// services with several instances each, edges to a small set of callee
// instances (so that windows are shared and edges repeat within a report),
// denials, server parts with and without levels, timestamps over the
// windows kept (late and repeated windows), bodies of one report or many,
// and some reports sent twice.
func randomBodies(rng *rand.Rand, now time.Time) [][]byte {
	services := 2 + rng.IntN(6)
	name := func(i int) string { return fmt.Sprintf("svc-%d", i) }
	instance := func(i int) string { return fmt.Sprintf("10.0.%d.%d:80", rng.IntN(3), i) }
	var last []api.Report
	var bodies [][]byte
	for range 10 + rng.IntN(40) {
		n := 1 + rng.IntN(4)
		var reports []api.Report
		if len(last) > 0 && rng.IntN(8) == 0 {
			reports = append(reports, last[rng.IntN(len(last))]) // sent again
		}
		for range n {
			reports = append(reports, randomReport(rng, now, services, name, instance))
		}
		last = reports
		var body []byte
		var err error
		if len(reports) == 1 && rng.IntN(2) == 0 {
			body, err = json.Marshal(reports[0])
		} else {
			body, err = json.Marshal(reports)
		}
		if err != nil {
			panic(err)
		}
		bodies = append(bodies, body)
	}
	return bodies
}

func randomReport(rng *rand.Rand, now time.Time, services int, name func(int) string, instance func(int) string) api.Report {
	// Within the windows kept, newest included: older windows arrive late
	// but are not dropped.
	oldest := now.Truncate(window).Add(-(windowsKept - 1) * window)
	ts := oldest.UnixMilli() + rng.Int64N(now.UnixMilli()-oldest.UnixMilli()+1)
	r := api.Report{
		Reporter: &api.Reporter{Service: name(rng.IntN(services)), Instance: instance(rng.IntN(4))},
		WindowMs: 1000, TimestampMs: ts,
	}
	if rng.IntN(2) == 0 {
		r.Reporter.Zone, r.Reporter.Cluster = "z1", "c1"
	}
	if rng.IntN(4) != 0 {
		req := rng.Int64N(5000)
		s := &api.ServerStats{Requests: req, CPUUtil: rng.Float64(), QueueTimeMsAvg: rng.Float64() * 10,
			QueueTimeMsP99: rng.Float64() * 100, Inflight: rng.Int64N(50), ClientTimeouts: rng.Int64N(3)}
		if rng.IntN(3) != 0 {
			s.RequestsByPriority = map[int32]int64{}
			for range 1 + rng.IntN(3) {
				s.RequestsByPriority[rng.Int32N(api.MaxPriority+1)] += rng.Int64N(1000)
			}
		}
		if rng.IntN(3) == 0 {
			s.RequestsByLevel = map[int32]int64{}
			for range 1 + rng.IntN(3) {
				s.RequestsByLevel[rng.Int32N(api.MaxLevel+1)] += rng.Int64N(1000)
			}
		}
		r.Server = s
	}
	for range rng.IntN(30) {
		req := rng.Int64N(2000)
		r.Calls = append(r.Calls, api.Call{
			CalleeService: name(rng.IntN(services)), CalleeInstance: instance(rng.IntN(4)),
			Requests: req, Errors: rng.Int64N(req + 1), Timeouts: rng.Int64N(req/2 + 1),
			LatencyMsAvg: rng.Float64() * 20, LatencyMsP99: rng.Float64() * 200,
		})
	}
	for range rng.IntN(3) {
		r.DryRunDenials = append(r.DryRunDenials, api.DryRunDenial{
			CalleeService: name(rng.IntN(services)), CallerService: r.Reporter.Service,
			Rule: fmt.Sprintf("rule-%d", rng.IntN(2)), Count: rng.Int64N(100),
		})
	}
	return r
}

// referenceAggregate is what the calculator is meant to hold, computed
// plainly.
func referenceAggregate(t *testing.T, bodies [][]byte) aggregates {
	t.Helper()
	agg := aggregates{windows: map[winKey]*refWindow{}, denials: map[[3]string]int64{}}
	at := func(service, instance string, tsMs int64) *refWindow {
		k := winKey{service, instance, tsMs / window.Milliseconds() * window.Milliseconds()}
		if agg.windows[k] == nil {
			agg.windows[k] = &refWindow{}
		}
		return agg.windows[k]
	}
	for _, body := range bodies {
		var reports []api.Report
		if body[0] == '{' {
			var r api.Report
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			reports = []api.Report{r}
		} else if err := json.Unmarshal(body, &reports); err != nil {
			t.Fatal(err)
		}
		for _, r := range reports {
			if s := r.Server; s != nil {
				w := at(r.Reporter.Service, r.Reporter.Instance, r.TimestampMs)
				w.serverRecords++
				w.serverRequests += s.Requests
				w.cpuUtil = max(w.cpuUtil, s.CPUUtil)
				w.queueSum += s.QueueTimeMsAvg * float64(s.Requests)
				w.queueP99 = max(w.queueP99, s.QueueTimeMsP99)
				w.inflight = max(w.inflight, s.Inflight)
				w.clientTimeouts += s.ClientTimeouts
				if w.byPriority == nil {
					w.byPriority, w.byLevel = map[int32]int64{}, map[int32]int64{}
				}
				for p, n := range s.RequestsByPriority {
					w.byPriority[p] += n
				}
				// Without levels, a priority's requests count at the top
				// level of its class.
				if len(s.RequestsByLevel) > 0 {
					for l, n := range s.RequestsByLevel {
						w.byLevel[l] += n
					}
				} else {
					for p, n := range s.RequestsByPriority {
						w.byLevel[api.Level(p, api.UserLevels-1)] += n
					}
				}
			}
			for _, c := range r.Calls {
				w := at(c.CalleeService, c.CalleeInstance, r.TimestampMs)
				w.callRecords++
				w.callRequests += c.Requests
				w.callErrors += c.Errors
				w.callTimeouts += c.Timeouts
				w.latencySum += c.LatencyMsAvg * float64(c.Requests)
				w.latencyP99 = max(w.latencyP99, c.LatencyMsP99)
			}
			for _, d := range r.DryRunDenials {
				agg.denials[[3]string{d.CalleeService, d.CallerService, d.Rule}] += d.Count
			}
		}
	}
	return agg
}

// leanAggregate sends the bodies through the lean path to three shards and
// collects what their stores hold.
func leanAggregate(t *testing.T, rng *rand.Rand, bodies [][]byte, now time.Time) aggregates {
	t.Helper()
	view := shard.NewView([]shard.Shard{{ID: "a", Addr: "127.0.0.1:1"}, {ID: "b", Addr: "127.0.0.1:2"}, {ID: "c", Addr: "127.0.0.1:3"}})
	cfg := DefaultConfig().Forward
	cfg.MaxBatchRecords = 1 + rng.IntN(200) // several batches per shard
	f := NewForwarder(cfg, "m", staticRouter{view}, nil, newMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	stores := map[string]*calculator.Store{}
	for _, sh := range view.Shards {
		stores[sh.Addr] = calculator.NewStore(window, windowsKept, 100_000)
	}
	var dec telemetry.Decoder // reused from body to body, as the pooled ones are
	buf := make([]byte, 0, 1<<16)
	for _, body := range bodies {
		buf = append(buf[:0], body...)
		reports, fe := dec.Decode(buf, telemetry.DefaultLimits(), now)
		if fe != nil {
			t.Fatalf("decode: %v", fe)
		}
		if err := f.Offer(reports); err != nil {
			t.Fatal(err)
		}
		clear(buf) // the request buffer is reused: nothing may point into it
		if rng.IntN(3) == 0 {
			deliver(t, f, stores, now)
		}
	}
	deliver(t, f, stores, now)
	if n := f.Queued(); n != 0 {
		t.Fatalf("%d records still held", n)
	}

	agg := aggregates{windows: map[winKey]*refWindow{}, denials: map[[3]string]int64{}}
	for addr, st := range stores {
		for _, name := range st.Names() {
			if owner, _ := view.Owner(name); owner.Addr != addr {
				t.Errorf("%s holds %s, owned by %s", addr, name, owner.Addr)
			}
			v, _ := st.Service(name)
			for _, iv := range v.Instances {
				for _, w := range iv.Windows {
					k := winKey{name, iv.Instance, w.StartMs}
					if agg.windows[k] != nil {
						t.Errorf("%v held twice", k)
					}
					s, c := w.Server, w.Callers
					agg.windows[k] = &refWindow{
						serverRecords: s.Records, serverRequests: s.Requests, inflight: s.Inflight, clientTimeouts: s.ClientTimeouts,
						cpuUtil: s.CPUUtil, queueSum: s.QueueTimeMsAvg * float64(s.Requests), queueP99: s.QueueTimeMsP99,
						byPriority: s.RequestsByPriority, byLevel: s.RequestsByLevel,
						callRecords: c.Records, callRequests: c.Requests, callErrors: c.Errors, callTimeouts: c.Timeouts,
						latencySum: c.LatencyMsAvg * float64(c.Requests), latencyP99: c.LatencyMsP99,
					}
				}
			}
			for _, d := range v.DryRunDenials {
				agg.denials[[3]string{name, d.CallerService, d.Rule}] += d.Count
			}
		}
	}
	return agg
}

// deliver takes every batch the forwarder holds, carries it through Thrift
// as the Kitex client and server do, and has the shard's store ingest it.
func deliver(t *testing.T, f *Forwarder, stores map[string]*calculator.Store, now time.Time) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, q := range f.queues {
		batches := q.ready
		if q.open != nil {
			batches = append(batches, q.open)
		}
		q.ready, q.open = nil, nil
		for _, b := range batches {
			wire := thrift.FastMarshal(&aggregator.ReportBatch{MixerId: "m", Parts: b.parts, PartCount: b.count})
			var got aggregator.ReportBatch
			if err := thrift.FastUnmarshal(wire, &got); err != nil {
				t.Fatal(err)
			}
			tally, err := stores[addr].Ingest(&got, now)
			if err != nil {
				t.Fatalf("ingest: %v", err)
			}
			if n := tally.NotAccepted(); n > 0 {
				t.Errorf("%d records not accepted: %v", n, tally)
			}
			if tally[calculator.KindServer][calculator.Accepted] != int64(b.records.Servers) ||
				tally[calculator.KindEdge][calculator.Accepted] != int64(b.records.Edges) ||
				tally[calculator.KindDenial][calculator.Accepted] != int64(b.records.Denials) {
				t.Errorf("batch of %+v, accepted %v", b.records, tally)
			}
			f.used.Add(-int64(b.records.Records()))
			f.release(b)
		}
	}
}

func compareAggregates(t *testing.T, got, want aggregates) {
	t.Helper()
	for k, w := range want.windows {
		g := got.windows[k]
		if g == nil {
			t.Errorf("%v: missing; want %+v", k, *w)
			continue
		}
		if d := windowDiff(g, w); d != "" {
			t.Errorf("%v: %s", k, d)
		}
	}
	for k, g := range got.windows {
		if want.windows[k] == nil {
			t.Errorf("%v: not reported, got %+v", k, *g)
		}
	}
	if !maps.Equal(got.denials, want.denials) {
		t.Errorf("dry-run denials: got %v, want %v", got.denials, want.denials)
	}
}

func windowDiff(g, w *refWindow) string {
	ints := []struct {
		name      string
		got, want int64
	}{
		{"server records", g.serverRecords, w.serverRecords}, {"server requests", g.serverRequests, w.serverRequests},
		{"inflight", g.inflight, w.inflight}, {"client timeouts", g.clientTimeouts, w.clientTimeouts},
		{"call records", g.callRecords, w.callRecords}, {"call requests", g.callRequests, w.callRequests},
		{"call errors", g.callErrors, w.callErrors}, {"call timeouts", g.callTimeouts, w.callTimeouts},
	}
	for _, c := range ints {
		if c.got != c.want {
			return fmt.Sprintf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
	// Sums of floats depend on the order of the terms, which the lean path
	// does not keep.
	floats := []struct {
		name      string
		got, want float64
	}{
		{"cpu util", g.cpuUtil, w.cpuUtil}, {"queue time sum", g.queueSum, w.queueSum}, {"queue time p99", g.queueP99, w.queueP99},
		{"latency sum", g.latencySum, w.latencySum}, {"latency p99", g.latencyP99, w.latencyP99},
	}
	for _, c := range floats {
		if math.Abs(c.got-c.want) > 1e-9*max(1, math.Abs(c.want)) {
			return fmt.Sprintf("%s: got %g, want %g", c.name, c.got, c.want)
		}
	}
	if !sameCounts(g.byPriority, w.byPriority) {
		return fmt.Sprintf("requests by priority: got %v, want %v", g.byPriority, w.byPriority)
	}
	if !sameCounts(g.byLevel, w.byLevel) {
		return fmt.Sprintf("requests by level: got %v, want %v", g.byLevel, w.byLevel)
	}
	return ""
}

// sameCounts compares counts by key; no map and an empty one are the same.
func sameCounts(a, b map[int32]int64) bool {
	return len(a) == len(b) && (len(a) == 0 || maps.Equal(a, b))
}
