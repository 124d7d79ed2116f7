package calculator

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
)

var t0 = time.UnixMilli(1_763_769_600_000)

func edge(svc, ins string, ts time.Time, req, errs int64, lat float64) *aggregator.CallEdge {
	return &aggregator.CallEdge{Caller: &aggregator.Reporter{Service: "caller", Instance: "c:1"},
		WindowMs: 1000, TimestampMs: ts.UnixMilli(), CalleeService: svc, CalleeInstance: ins,
		Requests: req, Errors: errs, LatencyMsAvg: lat, LatencyMsP99: lat * 3}
}

func TestStoreMergesCallersPerWindow(t *testing.T) {
	s := NewStore(time.Second, 10, 100)
	// Two callers in the same second, one in the next.
	for _, e := range []*aggregator.CallEdge{
		edge("svc", "i1", t0, 100, 1, 10),
		edge("svc", "i1", t0.Add(300*time.Millisecond), 300, 3, 20),
		edge("svc", "i1", t0.Add(time.Second), 50, 0, 5),
	} {
		if o := s.AddEdge(e, t0); o != Accepted {
			t.Fatalf("outcome %v", o)
		}
	}
	v, ok := s.Service("svc")
	if !ok || len(v.Instances) != 1 {
		t.Fatalf("service view %+v", v)
	}
	iv := v.Instances[0]
	if len(iv.Windows) != 2 {
		t.Fatalf("%d windows, want 2", len(iv.Windows))
	}
	newest, first := iv.Windows[0], iv.Windows[1]
	if newest.StartMs != t0.Add(time.Second).UnixMilli() || newest.Callers.Requests != 50 {
		t.Fatalf("newest window %+v", newest)
	}
	// Latency is weighted by requests: (100*10 + 300*20) / 400 = 17.5.
	if first.Callers.Requests != 400 || first.Callers.Errors != 4 || math.Abs(first.Callers.LatencyMsAvg-17.5) > 1e-9 ||
		first.Callers.LatencyMsP99 != 60 || first.Callers.Records != 2 {
		t.Fatalf("merged window %+v", first.Callers)
	}
	if iv.Totals.EdgeRecords != 3 || iv.Totals.EdgeRequests != 450 {
		t.Fatalf("totals %+v", iv.Totals)
	}
}

func TestStoreDropsLateRecordsAndCountsThem(t *testing.T) {
	s := NewStore(time.Second, 3, 100)
	now := t0.Add(10 * time.Second)
	s.AddEdge(edge("svc", "i1", t0.Add(10*time.Second), 1, 0, 1), now)
	if o := s.AddEdge(edge("svc", "i1", t0, 1, 0, 1), now); o != Late {
		t.Fatalf("a record 10 windows old with 3 kept: %v, want Late", o)
	}
	// Within the last three windows it is still merged.
	if o := s.AddEdge(edge("svc", "i1", t0.Add(8*time.Second), 1, 0, 1), now); o != Accepted {
		t.Fatalf("a record 2 windows old: %v", o)
	}
	v, _ := s.Service("svc")
	if v.Instances[0].Totals.LateRecords != 1 || len(v.Instances[0].Windows) != 2 {
		t.Fatalf("view %+v", v.Instances[0])
	}
}

// A record minutes ahead of the calculator's clock (a caller whose clock
// is off, through a mixer that could not correct it) is dropped and
// counted as future: kept, it moved the series' newest window minutes
// ahead, and every record of the present, from every other data plane,
// then counted as late.
func TestStoreDropsRecordsFromTheFutureAndCountsThem(t *testing.T) {
	s := NewStore(time.Second, 10, 100)
	if o := s.AddEdge(edge("svc", "i1", t0.Add(3*time.Minute), 1, 0, 1), t0); o != Future {
		t.Fatalf("a record 3 min ahead: %v, want Future", o)
	}
	if o := s.AddEdge(edge("svc", "i1", t0.Add(MaxAheadWindows*time.Second), 1, 0, 1), t0); o != Accepted {
		t.Fatalf("a record %d windows ahead: %v, want Accepted", MaxAheadWindows, o)
	}
	for i := range 5 {
		if o := s.AddServer(&aggregator.ServerRecord{Reporter: &aggregator.Reporter{Service: "svc", Instance: "i1"},
			TimestampMs: t0.Add(time.Duration(i) * time.Second).UnixMilli(), Requests: 10}, t0.Add(time.Duration(i)*time.Second)); o != Accepted {
			t.Fatalf("a record of the present after one from the future: %v, want Accepted", o)
		}
	}
	v, _ := s.Service("svc")
	if tot := v.Instances[0].Totals; tot.FutureRecords != 1 || tot.LateRecords != 0 || tot.ServerRecords != 5 {
		t.Fatalf("totals %+v, want 1 future, 0 late, 5 server records", tot)
	}
}

func TestStoreBoundsSeries(t *testing.T) {
	s := NewStore(time.Second, 10, 3)
	for i, ins := range []string{"a", "b", "c", "d", "e"} {
		want := Accepted
		if i >= 3 {
			want = Refused
		}
		if o := s.AddEdge(edge("svc", ins, t0, 1, 0, 1), t0); o != want {
			t.Fatalf("series %d: %v, want %v", i, o, want)
		}
	}
	// Known series still take data at the limit.
	if o := s.AddEdge(edge("svc", "a", t0, 1, 0, 1), t0); o != Accepted {
		t.Fatalf("known series at the limit: %v", o)
	}
	if s.Series() != 3 {
		t.Fatalf("series %d", s.Series())
	}
	// Expiry frees room.
	if n := s.Expire(t0.Add(time.Second)); n != 3 {
		t.Fatalf("expired %d", n)
	}
	if _, ok := s.Service("svc"); ok {
		t.Fatal("service with no instances left is still listed")
	}
	if o := s.AddEdge(edge("svc", "e", t0, 1, 0, 1), t0); o != Accepted {
		t.Fatalf("after expiry: %v", o)
	}
}

func TestStoreRejectsInvalidRecords(t *testing.T) {
	s := NewStore(time.Second, 10, 10)
	bad := []*aggregator.CallEdge{
		edge("", "i", t0, 1, 0, 1),
		edge("svc", "", t0, 1, 0, 1),
		edge("svc", "i", t0, -1, 0, 1),
		edge("svc", "i", t0, 1, 0, math.NaN()),
		edge("svc", "i", t0, 1, 0, math.Inf(1)),
	}
	for i, e := range bad {
		if o := s.AddEdge(e, t0); o != Invalid {
			t.Fatalf("bad edge %d: %v", i, o)
		}
	}
	if o := s.AddServer(&aggregator.ServerRecord{TimestampMs: t0.UnixMilli()}, t0); o != Invalid {
		t.Fatalf("server record without reporter: %v", o)
	}
	if s.Series() != 0 {
		t.Fatalf("invalid records made %d series", s.Series())
	}
}

func TestStoreServerWindow(t *testing.T) {
	s := NewStore(time.Second, 10, 10)
	rep := &aggregator.Reporter{Service: "svc", Instance: "i1"}
	s.AddServer(&aggregator.ServerRecord{Reporter: rep, TimestampMs: t0.UnixMilli(), Requests: 100, CpuUtil: 0.5,
		QueueTimeMsAvg: 2, QueueTimeMsP99: 9, RequestsByPriority: map[int32]int64{0: 10, 64: 90}}, t0)
	s.AddServer(&aggregator.ServerRecord{Reporter: rep, TimestampMs: t0.UnixMilli(), Requests: 300, CpuUtil: 0.7,
		QueueTimeMsAvg: 6, QueueTimeMsP99: 4, RequestsByPriority: map[int32]int64{64: 300}}, t0)
	v, _ := s.Service("svc")
	w := v.Instances[0].Windows[0].Server
	if w.Requests != 400 || w.CPUUtil != 0.7 || w.QueueTimeMsAvg != 5 || w.QueueTimeMsP99 != 9 ||
		w.RequestsByPriority[64] != 390 || w.RequestsByPriority[0] != 10 {
		t.Fatalf("server window %+v", w)
	}
}

// Ingest, expiry, ownership drops and the debug listing run at once without
// deadlock, and the series count ends equal to what is held.
func TestStoreConcurrentUse(t *testing.T) {
	s := NewStore(time.Second, 10, 1_000_000)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				s.AddEdge(edge(fmt.Sprintf("svc-%d", i%7), fmt.Sprintf("i%d", i%13), t0, 1, 0, 1), t0.Add(time.Duration(i%3)*time.Second))
				s.AddDenial(&aggregator.DryRunDenial{CalleeService: fmt.Sprintf("svc-%d", i%7), CallerService: "c", Rule: "r", Count: 1}, t0)
			}
		}()
	}
	for i := 0; i < 300; i++ {
		s.Expire(t0.Add(time.Second))
		s.Drop(fmt.Sprintf("svc-%d", i%7))
		s.Services()
	}
	close(done)
	wg.Wait()
	held := 0
	for _, sum := range s.Services() {
		held += sum.Instances
	}
	if held != s.Series() {
		t.Fatalf("series count %d, but %d instances held", s.Series(), held)
	}
}
