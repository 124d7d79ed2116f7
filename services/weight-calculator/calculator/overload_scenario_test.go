package calculator_test

import (
	"fmt"
	"testing"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// hotService simulates instances that serve `capacity` requests a window:
// requests arrive spread evenly over priorities 0..127, data planes admit
// those at or above the published admit_min_priority, and queueing time
// jumps to 50 ms when the admitted load passes capacity.
type hotService struct {
	name        string
	instances   int
	perPriority int64 // arrivals per priority per instance per window
	capacity    int64
}

func (h *hotService) admitted(threshold int32) int64 {
	return h.perPriority * int64(128-threshold)
}

func (h *hotService) batch(threshold int32) *aggregator.ReportBatch {
	admitted := h.admitted(threshold)
	queue := 2.0
	if admitted > h.capacity {
		queue = 50
	}
	b := &aggregator.ReportBatch{}
	for i := 0; i < h.instances; i++ {
		byPrio := map[int32]int64{}
		for p := int32(0); p < 128; p++ {
			byPrio[p] = h.perPriority
		}
		b.Servers = append(b.Servers, &aggregator.ServerRecord{
			Reporter: &aggregator.Reporter{Service: h.name, Instance: fmt.Sprintf("10.0.1.%d:9000", i)},
			Requests: admitted, CpuUtil: 0.6, QueueTimeMsAvg: queue, QueueTimeMsP99: 2 * queue,
			RequestsByPriority: byPrio,
		})
	}
	return b
}

// (e) Queueing time of 50 ms at twice the capacity: admit_min_priority rises
// until the admitted load fits the capacity, shedding the lowest priorities
// first and never the highest; when the load drops it decays slowly.
func TestScenarioOverloadShedsLowPriorityFirstAndRecoversSlowly(t *testing.T) {
	s := newScenario(t, map[string]calculator.Knobs{"hot-svc": testKnobs()})
	h := &hotService{name: "hot-svc", instances: 4, perPriority: 20, capacity: 20 * 64} // arrivals: 2x capacity

	threshold := int32(0)
	fitAt := -1
	for i := 0; i < 40; i++ {
		d := s.window(h.name, h.batch(threshold))
		prev := threshold
		if p := s.sink.latest(h.name); p != nil {
			threshold = p.Overload.AdmitMinPriority
		}
		if threshold > 127 || threshold < 0 {
			t.Fatalf("window %d: threshold %d sheds the highest priority", i, threshold)
		}
		if threshold < prev && d.Overload.State == calculator.StateOverloaded {
			t.Fatalf("window %d: threshold fell from %d to %d while overloaded", i, prev, threshold)
		}
		if fitAt < 0 && h.admitted(threshold) <= h.capacity {
			fitAt = i
			t.Logf("window %d: admitted %d of capacity %d at threshold %d (%s)", i, h.admitted(threshold), h.capacity, threshold, d.Overload.State)
		}
	}
	if fitAt < 0 {
		t.Fatalf("admitted load never fit the capacity; threshold %d", threshold)
	}
	// Around the capacity the control may probe above it by a step, but it
	// keeps the admitted load within one shed step (5 % of the load) of it.
	if over := h.admitted(threshold) - h.capacity; float64(over) > 0.05*float64(h.perPriority*128)+float64(h.perPriority) {
		t.Fatalf("after 40 windows admitted %d, capacity %d", h.admitted(threshold), h.capacity)
	}
	if inst := s.sink.latest(h.name).InstanceOverload; len(inst) == 0 {
		t.Fatal("no per-instance overload published for overloaded instances")
	}

	// The load drops to half the capacity: the threshold decays, about 1 % of
	// the load a window, never all at once.
	h.perPriority = 5
	shed := func(th int32) float64 { return float64(th) / 128 }
	windows := 0
	for threshold > 0 && windows < 200 {
		d := s.window(h.name, h.batch(threshold))
		prev := threshold
		threshold = s.sink.latest(h.name).Overload.AdmitMinPriority
		if drop := shed(prev) - shed(threshold); drop > 0.01+1.0/128+1e-9 {
			t.Fatalf("window %d of recovery: shed share fell by %.3f at once (%d -> %d, %s)", windows, drop, prev, threshold, d.Overload.State)
		}
		windows++
	}
	if threshold != 0 {
		t.Fatalf("threshold still %d after 200 windows of light load", threshold)
	}
	if windows < 30 {
		t.Fatalf("threshold decayed to 0 in %d windows; want a slow decay", windows)
	}
	if st := s.sink.latest(h.name).Overload.State; st != calculator.StateNormal {
		t.Fatalf("state %q after recovery", st)
	}
	t.Logf("recovered to normal in %d windows", windows)
}

// A window without server reports (data planes starved, their reports
// late) does not drop a shedding service's level to 0: it is held for a few
// rounds, then the service is idle (normal, level 0).
func TestOverloadHoldsItsLevelThroughMissingReports(t *testing.T) {
	s := newScenario(t, map[string]calculator.Knobs{"hot-svc": testKnobs()})
	h := &hotService{name: "hot-svc", instances: 4, perPriority: 20, capacity: 20 * 64}
	threshold := int32(0)
	for range 15 {
		s.window(h.name, h.batch(threshold))
		if p := s.sink.latest(h.name); p != nil {
			threshold = p.Overload.AdmitMinPriority
		}
	}
	d := s.window(h.name, h.batch(threshold))
	level := d.Overload.AdmitMinLevel
	if d.Overload.State == calculator.StateNormal || level == 0 {
		t.Fatalf("not shedding after 16 windows at twice the capacity: %+v", d.Overload)
	}
	for i := range 3 {
		if d := s.window(h.name, &aggregator.ReportBatch{}); d.Overload.AdmitMinLevel != level {
			t.Fatalf("silent window %d: level %d, want %d held", i+1, d.Overload.AdmitMinLevel, level)
		}
	}
	if d := s.window(h.name, &aggregator.ReportBatch{}); d.Overload.State != calculator.StateNormal || d.Overload.AdmitMinLevel != 0 {
		t.Fatalf("after 4 silent windows: %+v, want normal at level 0", d.Overload)
	}
}
