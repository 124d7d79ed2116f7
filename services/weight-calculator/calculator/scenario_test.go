package calculator_test

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// instanceModel is one simulated instance of a service.
type instanceModel struct {
	id      string
	cost    float64 // CPU and latency per request, 1 = normal
	errRate float64
	silent  bool // sends nothing and gets nothing
}

// serviceModel turns the published weights into one window of telemetry:
// callers spread qps over instances by weight (missing weights count as the
// mean, as a data plane with equal static weights does); an instance's CPU
// and latency grow with its cost.
type serviceModel struct {
	name      string
	qps       float64
	capacity  float64 // requests/s an instance of cost 1 serves at full CPU
	instances []*instanceModel
}

func newServiceModel(name string, n int) *serviceModel {
	m := &serviceModel{name: name, qps: 10_000, capacity: 2_000}
	for i := 0; i < n; i++ {
		m.instances = append(m.instances, &instanceModel{id: fmt.Sprintf("10.0.0.%d:9000", i+1), cost: 1})
	}
	return m
}

func (m *serviceModel) batch(weights map[string]int32) *aggregator.ReportBatch {
	share := map[string]float64{}
	var known, sum float64
	var nKnown int
	for _, in := range m.instances {
		if w, ok := weights[in.id]; ok && !in.silent {
			known += float64(w)
			nKnown++
		}
	}
	mean := 1000.0
	if nKnown > 0 {
		mean = known / float64(nKnown)
	}
	for _, in := range m.instances {
		if in.silent {
			continue
		}
		w, ok := weights[in.id]
		share[in.id] = mean
		if ok {
			share[in.id] = float64(w)
		}
		sum += share[in.id]
	}
	b := &aggregator.ReportBatch{}
	for _, in := range m.instances {
		if in.silent {
			continue
		}
		qps := math.Round(m.qps * share[in.id] / sum)
		rep := &aggregator.Reporter{Service: m.name, Instance: in.id}
		b.Servers = append(b.Servers, &aggregator.ServerRecord{
			Reporter: rep, Requests: int64(qps), CpuUtil: math.Min(1, math.Max(0.01, qps*in.cost/m.capacity)),
			QueueTimeMsAvg: 1, QueueTimeMsP99: 3, RequestsByPriority: map[int32]int64{64: int64(qps)},
		})
		for c := 0; c < 4; c++ {
			req := int64(qps / 4)
			b.Edges = append(b.Edges, &aggregator.CallEdge{
				Caller:        &aggregator.Reporter{Service: "front", Instance: fmt.Sprintf("10.9.0.%d:1", c)},
				CalleeService: m.name, CalleeInstance: in.id, Requests: req,
				Errors: int64(math.Round(float64(req) * in.errRate)), LatencyMsAvg: 10 * in.cost, LatencyMsP99: 30 * in.cost,
			})
		}
	}
	return b
}

func (m *serviceModel) run(s *scenario) calculator.Decision {
	return s.window(m.name, m.batch(s.published(m.name)))
}

func weightOf(d calculator.Decision, id string) (int32, string, bool) {
	for _, w := range d.Weights {
		if w.Instance == id {
			return w.Weight, w.Reason, true
		}
	}
	return 0, "", false
}

// medianOthers is the median weight of every instance but id.
func medianOthers(d calculator.Decision, id string) float64 {
	var ws []float64
	for _, w := range d.Weights {
		if w.Instance != id {
			ws = append(ws, float64(w.Weight))
		}
	}
	slices.Sort(ws)
	return ws[len(ws)/2]
}

func testKnobs() calculator.Knobs {
	k := calculator.DefaultKnobs()
	k.EjectionMs = 3000
	k.BlackoutMs = 5000
	k.WeightExpiryMs = 3000
	return k
}

// (a) One of 10 instances becomes 5x slower with 10 % errors: within 3
// windows its weight is below 30 % of the median; after it recovers its
// weight comes back over several publishes, not in one step.
func TestScenarioSlowInstanceLosesWeightAndRegainsItGradually(t *testing.T) {
	s := newScenario(t, map[string]calculator.Knobs{"comment-svc": testKnobs()})
	m := newServiceModel("comment-svc", 10)
	for i := 0; i < 8; i++ {
		d := m.run(s)
		if i == 7 {
			if w, _, _ := weightOf(d, "10.0.0.3:9000"); float64(w) < 0.8*medianOthers(d, "10.0.0.3:9000") {
				t.Fatalf("healthy instance at %d, median %v", w, medianOthers(d, "10.0.0.3:9000"))
			}
		}
	}
	if s.sink.count("comment-svc") == 0 {
		t.Fatal("nothing published after 8 windows")
	}
	slow := m.instances[2]
	slow.cost, slow.errRate = 5, 0.10
	low := false
	for i := 1; i <= 3 && !low; i++ {
		d := m.run(s)
		w, reason, _ := weightOf(d, slow.id)
		low = float64(w) < 0.3*medianOthers(d, slow.id)
		t.Logf("slow window %d: weight %d (%s), median of others %.0f", i, w, reason, medianOthers(d, slow.id))
	}
	if !low {
		t.Fatal("the slow instance kept more than 30 % of the median weight for 3 windows")
	}
	for i := 0; i < 3; i++ {
		m.run(s)
	}

	slow.cost, slow.errRate = 1, 0
	var path []int32
	for i := 0; i < 30; i++ {
		m.run(s)
		w := s.published("comment-svc")[slow.id]
		path = append(path, w)
		if float64(w) >= 0.9*float64(medianOf(s.published("comment-svc"))) {
			break
		}
	}
	t.Logf("published weights after recovery: %v", path)
	if last := path[len(path)-1]; float64(last) < 0.9*float64(medianOf(s.published("comment-svc"))) {
		t.Fatalf("the recovered instance did not come back within 30 windows: %v", path)
	}
	rises := 0
	for i := 1; i < len(path); i++ {
		if path[i] > path[i-1] {
			rises++
		}
	}
	if rises < 3 {
		t.Fatalf("the weight came back in %d steps, want a gradual return: %v", rises, path)
	}
}

func medianOf(ws map[string]int32) int32 {
	var vs []int32
	for _, w := range ws {
		vs = append(vs, w)
	}
	slices.Sort(vs)
	return vs[len(vs)/2]
}

// (b) A new instance does not get full weight before its blackout ends.
func TestScenarioNewInstanceRampsUpOverItsBlackout(t *testing.T) {
	s := newScenario(t, map[string]calculator.Knobs{"comment-svc": testKnobs()})
	m := newServiceModel("comment-svc", 5)
	for i := 0; i < 8; i++ {
		m.run(s)
	}
	fresh := &instanceModel{id: "10.0.0.99:9000", cost: 1}
	m.instances = append(m.instances, fresh)
	var ramp []int32
	for i := 0; i < 4; i++ { // blackout is 5 windows
		d := m.run(s)
		w, reason, ok := weightOf(d, fresh.id)
		if !ok || reason != calculator.ReasonBlackout {
			t.Fatalf("window %d of blackout: weight %d, reason %q", i+1, w, reason)
		}
		if float64(w) >= medianOthers(d, fresh.id) {
			t.Fatalf("window %d of blackout: full weight %d (median %.0f)", i+1, w, medianOthers(d, fresh.id))
		}
		ramp = append(ramp, w)
	}
	if !slices.IsSorted(ramp) || ramp[0] == ramp[len(ramp)-1] {
		t.Fatalf("blackout weights %v should ramp up", ramp)
	}
	var d calculator.Decision
	for i := 0; i < 4; i++ {
		d = m.run(s)
	}
	if w, reason, _ := weightOf(d, fresh.id); reason != calculator.ReasonComputed || float64(w) < 0.7*medianOthers(d, fresh.id) {
		t.Fatalf("after blackout: weight %d (%s), median %.0f", w, reason, medianOthers(d, fresh.id))
	}
}

// (c) A service whose reports stop keeps its last weights until the expiry,
// then falls back to static weights: a policy without dynamic weights.
func TestScenarioSilentServiceFallsBackToStaticWeights(t *testing.T) {
	s := newScenario(t, map[string]calculator.Knobs{"comment-svc": testKnobs()})
	m := newServiceModel("comment-svc", 4)
	m.instances[0].cost = 2
	for i := 0; i < 8; i++ {
		m.run(s)
	}
	if len(s.published("comment-svc")) != 4 {
		t.Fatalf("published %v", s.published("comment-svc"))
	}
	for _, in := range m.instances {
		in.silent = true
	}
	// Expiry is 3 s: one more window still carries weights.
	d := m.run(s)
	if len(d.Weights) != 4 {
		t.Fatalf("weights dropped %d windows after the reports stopped: %+v", 1, d.Weights)
	}
	for i := 0; i < 4; i++ {
		d = m.run(s)
	}
	if len(d.Weights) != 0 {
		t.Fatalf("weights still computed after the expiry: %+v", d.Weights)
	}
	p := s.sink.latest("comment-svc")
	if p == nil || len(p.Weights) != 0 || p.Overload.State != calculator.StateNormal {
		t.Fatalf("mesh-core holds %+v, want a policy with no dynamic weights", p)
	}
}

// (d) 4 of 10 instances bad, ejection capped at 30 %: never more than 3
// ejected, and the cap is used.
func TestScenarioEjectionIsCapped(t *testing.T) {
	k := testKnobs()
	k.EjectionMs = 60_000
	s := newScenario(t, map[string]calculator.Knobs{"comment-svc": k})
	m := newServiceModel("comment-svc", 10)
	for i := 0; i < 6; i++ {
		m.run(s)
	}
	for _, in := range m.instances[:4] {
		in.errRate = 0.3
	}
	most := 0
	for i := 0; i < 10; i++ {
		d := m.run(s)
		ejected := 0
		for _, w := range d.Weights {
			if w.Ejected {
				ejected++
			}
		}
		if ejected > 3 {
			t.Fatalf("window %d: %d of 10 ejected with a 30 %% cap", i, ejected)
		}
		pub := 0
		for _, w := range s.published("comment-svc") {
			if w == 0 {
				pub++
			}
		}
		if pub > 3 {
			t.Fatalf("window %d: %d weights of 0 published", i, pub)
		}
		most = max(most, ejected)
	}
	if most != 3 {
		t.Fatalf("at most %d ejected; 4 bad instances should fill the cap of 3", most)
	}
}
