package sdk

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Balancer picks an instance for each request from a service's snapshot and
// learns how each request went. Picker and HybridPicker implement it.
type Balancer interface {
	// Update replaces the instances with those of snap.
	Update(snap *Snapshot)
	// Pick returns the instance for the next request.
	Pick() (Instance, error)
	// Done reports a picked request's outcome: its latency as the caller
	// measured it, and whether it failed.
	Done(instance string, latency time.Duration, failed bool)
}

var (
	_ Balancer = (*Picker)(nil)
	_ Balancer = (*HybridPicker)(nil)
)

// Done implements Balancer; the weighted picker keeps no local state.
func (p *Picker) Done(string, time.Duration, bool) {}

// HybridPicker combines the central view with this client's own: Sextant's
// weights choose two candidates (the next of a smooth weighted round robin,
// and one drawn at random in proportion to the weights), and
// this client's load on each decides between them per request, as Linkerd's
// power of two choices does with peak-EWMA latency x (requests in flight + 1),
// here per unit of weight:
// the first candidate keeps the request unless its cost is more than
// Tolerance times the second's.
//
// The weights carry what only the central view knows (every caller's errors,
// ejections, each instance's capacity and utilization, slow start); the local
// cost reacts within a request to what the weights cannot see yet (a burst,
// a queue building up on one instance). Ejected instances are never
// candidates. A failed request never lowers an instance's latency estimate,
// and the share of recent requests that failed multiplies its cost, so
// failing fast does not attract traffic. Safe for concurrent use.
type HybridPicker struct {
	o HybridOptions

	mu      sync.Mutex
	version int64
	cands   []hybridCandidate
	total   int64
	local   map[string]*localLoad // by instance id, kept across updates
	// The mean latency measured, refreshed every meanEvery at most.
	mean   float64
	meanAt time.Time
}

const meanEvery = 100 * time.Millisecond

type hybridCandidate struct {
	pickNode // the weights' smooth round robin, as Picker's
	load     *localLoad
}

// localLoad is what this client knows of one instance.
type localLoad struct {
	latency  PeakEWMA
	failures float64 // EWMA of failed (1) and successful (0) requests
	lastDone time.Time
	inflight int
}

// HybridOptions configure a HybridPicker; the zero value is usable.
type HybridOptions struct {
	// Decay is the time constant of the peak-EWMA latency (default 2 s:
	// the weights carry the long run, the local view the last moments;
	// Linkerd, which has nothing else, uses 10 s).
	Decay time.Duration
	// Now is the clock (default time.Now); a simulation passes its own.
	Now func() time.Time
	// Rand draws the candidates (default: randomly seeded).
	Rand *rand.Rand
	// Tolerance: the first candidate keeps the request unless its local
	// cost is more than Tolerance times the second's (default 2). Instances
	// of different sizes have different latencies at the same utilization;
	// without the tolerance the local rule would undo the weights.
	Tolerance float64
}

// NewHybridPicker makes an empty HybridPicker; Update fills it.
func NewHybridPicker(o HybridOptions) *HybridPicker {
	if o.Decay <= 0 {
		o.Decay = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tolerance < 1 {
		o.Tolerance = 2
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &HybridPicker{o: o, local: map[string]*localLoad{}}
}

// Update implements Balancer (a no-op when snap's version was applied already).
func (p *HybridPicker) Update(snap *Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if snap.Version != 0 && snap.Version == p.version {
		return
	}
	p.version = snap.Version
	p.cands = p.cands[:0]
	p.total = 0
	seen := make(map[string]bool, len(snap.Instances))
	for in, w := range Eligible(snap) {
		l := p.local[in.Instance]
		if l == nil {
			l = &localLoad{}
			p.local[in.Instance] = l
		}
		seen[in.Instance] = true
		p.total += w
		p.cands = append(p.cands, hybridCandidate{pickNode: pickNode{inst: in, weight: w}, load: l})
	}
	for id, l := range p.local {
		if !seen[id] && l.inflight == 0 {
			delete(p.local, id)
		}
	}
}

// Pick implements Balancer.
func (p *HybridPicker) Pick() (Instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch len(p.cands) {
	case 0:
		return Instance{}, ErrNoInstance
	case 1:
		p.cands[0].load.inflight++
		return p.cands[0].inst, nil
	}
	a := p.next()
	b := p.draw(a)
	now := p.o.Now()
	if now.Sub(p.meanAt) >= meanEvery {
		p.mean, p.meanAt = p.meanLatency(now), now
	}
	fallback := p.mean
	mean := float64(p.total) / float64(len(p.cands))
	stale := now.Add(-staleAfter * p.o.Decay)
	ca, cb := p.cands[a].cost(fallback, mean, stale), p.cands[b].cost(fallback, mean, stale)
	if ca > p.o.Tolerance*cb {
		a = b
	}
	p.cands[a].load.inflight++
	return p.cands[a].inst, nil
}

// next is the smooth weighted round robin's next candidate (as Picker): the
// weights' shares, evenly spread, which queues less than random draws.
func (p *HybridPicker) next() int {
	return smoothNext(p.cands, func(c *hybridCandidate) *pickNode { return &c.pickNode })
}

// draw picks a candidate in proportion to its weight, other than not.
func (p *HybridPicker) draw(not int) int {
	total := p.total
	if not >= 0 {
		total -= p.cands[not].weight
	}
	if total <= 0 {
		return (not + 1) % len(p.cands)
	}
	x := p.o.Rand.Int64N(total)
	for i := range p.cands {
		if i == not {
			continue
		}
		if x < p.cands[i].weight {
			return i
		}
		x -= p.cands[i].weight
	}
	return len(p.cands) - 1
}

// meanLatency is what an instance without a measurement is assumed to take:
// the mean of those measured, so a new instance is neither flooded nor starved.
func (p *HybridPicker) meanLatency(now time.Time) float64 {
	sum, n := 0.0, 0
	for i := range p.cands {
		if v, ok := p.cands[i].load.latency.Value(now, 0); ok {
			sum += v
			n++
		}
	}
	if n == 0 {
		return 1
	}
	return sum / float64(n)
}

// cost is Linkerd's load, peak-EWMA latency x (requests in flight + 1),
// with the requests in flight counted per unit of weight: an instance of
// twice the mean weight is expected to hold twice the mean requests.
func (c *hybridCandidate) cost(fallback, meanWeight float64, stale time.Time) float64 {
	// Unlike Linkerd's, the estimate does not decay toward 0 while an
	// instance goes unpicked: the weights' round robin proposes every
	// instance anyway, and a decayed estimate would veto the weights at
	// random. What this client has not measured for staleAfter x Decay is
	// forgotten instead, so an instance it once vetoed is tried again.
	lat, failures := fallback, c.load.failures
	if c.load.lastDone.Before(stale) {
		failures = 0
	} else if v, ok := c.load.latency.Value(time.Time{}, 0); ok {
		lat = v
	}
	return lat * (float64(c.load.inflight)*meanWeight/float64(c.weight) + 1) * (1 + failurePenalty*failures)
}

// staleAfter: local state older than this many Decays is forgotten.
const staleAfter = 5

// Failures weigh on the local cost apart from latency, which a fast failure
// would lower: one failing half its requests costs 6x, one failing all 11x.
const (
	failurePenalty = 10
	failureAlpha   = 0.05 // about the last 20 requests
)

// Done implements Balancer.
func (p *HybridPicker) Done(instance string, latency time.Duration, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.local[instance]
	if l == nil {
		return
	}
	l.inflight = max(l.inflight-1, 0)
	l.lastDone = p.o.Now()
	f := 0.0
	if failed {
		f = 1
	}
	l.failures += failureAlpha * (f - l.failures)
	if failed && !l.latency.set {
		return // a failure's latency says nothing of how fast it serves
	}
	l.latency.Observe(p.o.Now(), p.o.Decay, float64(latency), failed)
}

// PeakEWMA is the latency estimate of Linkerd's and Finagle's balancers: a
// sample above the estimate replaces it at once (peak), one below moves it
// by an exponential weight of the time since the last sample, so it forgets
// with time constant decay rather than per sample. Not safe for concurrent
// use on its own.
type PeakEWMA struct {
	value float64 // ns
	at    time.Time
	set   bool
}

// Observe adds a sample of d nanoseconds taken at now. A failed sample
// (keepPeak) may raise the estimate but never lowers it.
func (e *PeakEWMA) Observe(now time.Time, decay time.Duration, d float64, keepPeak bool) {
	switch {
	case !e.set:
		e.value, e.set = d, true
	case d > e.value:
		e.value = d
	case keepPeak:
	default:
		w := math.Exp(-float64(now.Sub(e.at)) / float64(decay))
		e.value = e.value*w + d*(1-w)
	}
	e.at = now
}

// Value is the estimate at now, false before the first sample. With decay
// above 0 an estimate not refreshed decays toward 0 (Linkerd probes an
// instance it has not heard from again that way); 0 keeps it as it is.
func (e *PeakEWMA) Value(now time.Time, decay time.Duration) (float64, bool) {
	if !e.set {
		return 0, false
	}
	if decay <= 0 {
		return e.value, true
	}
	return e.value * math.Exp(-float64(now.Sub(e.at))/float64(decay)), true
}
