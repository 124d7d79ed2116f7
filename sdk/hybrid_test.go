package sdk_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// clock is a fake clock; it stands still unless advanced.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time          { return c.now }
func (c *clock) advance(d time.Duration) { c.now = c.now.Add(d) }

func newHybrid(c *clock, instances ...sdk.Instance) *sdk.HybridPicker {
	p := sdk.NewHybridPicker(sdk.HybridOptions{Now: c.Now, Rand: rand.New(rand.NewPCG(1, 2))})
	p.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 1, Instances: instances}})
	return p
}

func inst(id string, weight int32) sdk.Instance {
	return sdk.Instance{Instance: id, Addr: id + ":80", Weight: weight, Healthy: true}
}

// pickDone picks and settles at once, with latency by instance.
func pickDone(t *testing.T, p *sdk.HybridPicker, n int, latency map[string]time.Duration, c *clock) map[string]int {
	t.Helper()
	count := map[string]int{}
	for range n {
		in, err := p.Pick()
		if err != nil {
			t.Fatal(err)
		}
		count[in.Instance]++
		p.Done(in.Instance, latency[in.Instance], false)
		if c != nil {
			c.advance(time.Millisecond)
		}
	}
	return count
}

// With equal latencies and nothing in flight the weights alone choose:
// shares follow them, two instances or more.
func TestHybridCandidateDrawFollowsWeights(t *testing.T) {
	for _, weights := range []map[string]int32{{"a": 900, "b": 100}, {"a": 600, "b": 300, "c": 100}} {
		c := &clock{now: time.Unix(1e9, 0)} // standing still: equal latencies stay equal
		var ins []sdk.Instance
		var total int32
		lat := map[string]time.Duration{}
		for _, id := range []string{"a", "b", "c"} {
			if w, ok := weights[id]; ok {
				ins = append(ins, inst(id, w))
				total += w
				lat[id] = time.Millisecond
			}
		}
		p := newHybrid(c, ins...)
		const n = 20000
		count := pickDone(t, p, n, lat, nil)
		for id, w := range weights {
			want, got := float64(w)/float64(total), float64(count[id])/n
			if math.Abs(got-want) > 0.02 {
				t.Errorf("weights %v: %s's share %.3f, want %.3f", weights, id, got, want)
			}
		}
	}
}

// A slow instance loses to a fast one of equal weight once both are
// measured, until requests pile up on the fast one.
func TestHybridSlowInstanceLosesToFastOne(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	p := newHybrid(c, inst("fast", 100), inst("slow", 100))
	count := pickDone(t, p, 1000, map[string]time.Duration{"fast": time.Millisecond, "slow": 50 * time.Millisecond}, c)
	if count["slow"] > 20 {
		t.Fatalf("picks %v: the slow instance kept %d", count, count["slow"])
	}

	// Requests in flight count: 50 times slower, the slow instance is worth
	// trying again once a few tens of requests wait on the fast one.
	for i := range 200 {
		in, _ := p.Pick()
		if in.Instance == "slow" {
			if i < 10 {
				t.Fatalf("the slow instance was picked with only %d in flight on the fast one", i)
			}
			return
		}
	}
	t.Fatal("200 requests in flight on the fast instance and none went to the slow one")
}

// A failed request raises an instance's estimate when it took longer, and
// never lowers it: failing fast does not attract traffic.
func TestHybridFailuresNeverLowerLatency(t *testing.T) {
	var e sdk.PeakEWMA
	at := time.Unix(1e9, 0)
	e.Observe(at, time.Second, 10e6, false)
	e.Observe(at.Add(time.Second), time.Second, 1e6, true)
	if v, _ := e.Value(at, 0); v != 10e6 {
		t.Fatalf("a fast failure moved the estimate to %v", v)
	}
	e.Observe(at.Add(2*time.Second), time.Second, 30e6, true)
	if v, _ := e.Value(at, 0); v != 30e6 {
		t.Fatalf("a slow failure left the estimate at %v, want the peak 30 ms", v)
	}

	// a measured at 50 ms and b at 5 ms; then, a second apart, a answers in
	// 1 µs and b in 5 ms, a hundred times. Failed, a's answers leave it the
	// slower; succeeded, they make it the faster.
	run := func(failed bool) map[string]int {
		c := &clock{now: time.Unix(1e9, 0)}
		p := newHybrid(c, inst("a", 100), inst("b", 100))
		lat := map[string]time.Duration{"a": 50 * time.Millisecond, "b": 5 * time.Millisecond}
		if n := pickDone(t, p, 20, lat, nil); n["a"] == 0 || n["b"] == 0 {
			t.Fatalf("picks %v: both must be measured", n)
		}
		step := func() {
			c.advance(time.Second)
			p.Done("a", time.Microsecond, failed) // no pick: in-flight stays 0
			p.Done("b", 5*time.Millisecond, false)
		}
		for range 100 {
			step()
		}
		count := map[string]int{}
		for range 100 {
			in, _ := p.Pick()
			count[in.Instance]++
			p.Done(in.Instance, 0, true) // settles the pick, changes no estimate
			step()
		}
		return count
	}
	if n := run(true); n["b"] != 100 {
		t.Fatalf("picks %v: fast failures made a look faster than b", n)
	}
	if n := run(false); n["a"] != 100 {
		t.Fatalf("picks %v: fast successes should have made a the faster", n)
	}
}

// Ejected instances (weight 0, or unhealthy in a mesh-core answer) are never
// picked; when every instance is ejected all count as equal, never none.
func TestHybridNeverPicksEjected(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	sick := inst("sick", 100)
	sick.Healthy = false
	p := newHybrid(c, inst("a", 100), inst("b", 50), sick, inst("zero", 0))
	lat := map[string]time.Duration{"a": time.Millisecond, "b": time.Millisecond, "sick": time.Millisecond, "zero": time.Millisecond}
	count := pickDone(t, p, 1000, lat, c)
	if count["sick"] != 0 || count["zero"] != 0 || count["a"]+count["b"] != 1000 {
		t.Fatalf("picks %v", count)
	}

	p.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 2, Instances: []sdk.Instance{sick, inst("zero", 0)}}})
	count = pickDone(t, p, 100, lat, c)
	if count["sick"] == 0 || count["zero"] == 0 || count["sick"]+count["zero"] != 100 {
		t.Fatalf("all ejected: picks %v, want both", count)
	}
}

func TestHybridSingleInstance(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	p := newHybrid(c, inst("only", 5))
	for i := range 10 {
		in, err := p.Pick()
		if err != nil || in.Instance != "only" || in.Addr != "only:80" {
			t.Fatalf("pick %d: %+v %v", i, in, err)
		}
		if i%2 == 0 {
			p.Done(in.Instance, time.Second, true)
		}
	}
}

func TestHybridEmpty(t *testing.T) {
	p := sdk.NewHybridPicker(sdk.HybridOptions{})
	if _, err := p.Pick(); err != sdk.ErrNoInstance {
		t.Fatalf("never updated: %v", err)
	}
	p.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 1, Instances: []sdk.Instance{inst("a", 1)}}})
	if _, err := p.Pick(); err != nil {
		t.Fatal(err)
	}
	p.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 2}})
	if _, err := p.Pick(); err != sdk.ErrNoInstance {
		t.Fatalf("no instances left: %v", err)
	}
	p.Done("a", time.Millisecond, false) // the request in flight ends after its instance left
	p.Done("unknown", time.Millisecond, false)
}

// Each Pick counts a request in flight until its Done, and between equally
// fast instances of equal weight the count decides: a request goes to an
// instance only while it holds at most twice the other's count plus one
// (the default tolerance). Done makes room
// again; extra Dones do not drive a count below zero; counts outlive Updates.
func TestHybridInFlight(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)} // standing still: the estimates stay put
	p := newHybrid(c, inst("a", 100), inst("b", 100))
	ms := time.Millisecond
	p.Done("a", ms, false) // not in flight: measured, count stays 0
	p.Done("b", ms, false)

	var inflight map[string]int
	pick := func() string {
		t.Helper()
		in, err := p.Pick()
		if err != nil {
			t.Fatal(err)
		}
		id, other := in.Instance, map[string]string{"a": "b", "b": "a"}[in.Instance]
		inflight[id]++
		if inflight[id] > 2*(inflight[other]+1) {
			t.Fatalf("in flight %v after a pick of %s: the counts do not steer", inflight, id)
		}
		return id
	}
	inflight = map[string]int{}
	for range 50 {
		pick()
	}
	for range inflight["a"] {
		p.Done("a", ms, false)
	}
	inflight["a"] = 0
	if id := pick(); id != "a" {
		t.Fatalf("after a's requests ended the next went to %s (in flight %v)", id, inflight)
	}

	// a is removed and comes back: its request in flight still counts,
	// and b's do once they end.
	p.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 2, Instances: []sdk.Instance{inst("b", 100)}}})
	p.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 3, Instances: []sdk.Instance{inst("a", 100), inst("b", 100)}}})
	for range inflight["b"] {
		p.Done("b", ms, false)
	}
	inflight["b"] = 0
	for range 4 {
		pick()
	}

	// Settle everything, with three Dones too many for a: its count stays
	// at zero (at -3 it would take the next three and break the bound).
	for range inflight["a"] + 3 {
		p.Done("a", ms, false)
	}
	for range inflight["b"] {
		p.Done("b", ms, false)
	}
	inflight = map[string]int{}
	for range 20 {
		pick()
	}
}

// An instance that fails every request at once, before any success was
// measured there, does not become the fastest: it keeps no latency estimate
// from failures, and its failure rate multiplies its cost.
func TestHybridFastFailuresRepel(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	p := newHybrid(c, inst("a", 100), inst("b", 100), inst("dead", 100))
	count := map[string]int{}
	for range 3000 {
		in, err := p.Pick()
		if err != nil {
			t.Fatal(err)
		}
		count[in.Instance]++
		if in.Instance == "dead" {
			p.Done(in.Instance, 100*time.Microsecond, true)
		} else {
			p.Done(in.Instance, 5*time.Millisecond, false)
		}
		c.advance(time.Millisecond)
	}
	// Its equal-weight share would be 1000; the round robin proposes it that often.
	if count["dead"] > 300 {
		t.Errorf("the failing instance got %d of 3000 picks (%v), want under 300", count["dead"], count)
	}
}
