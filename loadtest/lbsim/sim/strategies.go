package sim

import (
	"math/rand/v2"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// Strategy is one way for callers to pick instances.
type Strategy struct {
	Name string
	// Central strategies follow Sextant's policies; local ones see the registry only.
	Central bool
	New     func(c *CallerEnv) sdk.Balancer
	// Zoned callers take the policy's weights zone-aware (sdk.ZoneWeighted,
	// as the SDK's Discovery with a zone does); LocalOnly callers see only
	// the instances of their own zone while it has any.
	Zoned, LocalOnly bool
}

// CallerEnv is what a caller's balancer may use.
type CallerEnv struct {
	Now  func() time.Time
	Rand *rand.Rand
	ORCA *ORCA // the instances' own load reports, for A58
}

// refresher is a balancer that recomputes its weights once a window.
type refresher interface{ refresh(now time.Time) }

// Strategies are every strategy, local baselines first.
func Strategies() []Strategy {
	return []Strategy{
		{Name: "equal", New: func(*CallerEnv) sdk.Balancer { return &sdk.Picker{} }},
		{Name: "a58-wrr", New: func(c *CallerEnv) sdk.Balancer { return &a58{env: c} }},
		{Name: "p2c-ewma", New: func(c *CallerEnv) sdk.Balancer { return newP2C(c, true) }},
		{Name: "least-request", New: func(c *CallerEnv) sdk.Balancer { return newP2C(c, false) }},
		{Name: "sextant-central", Central: true, New: func(*CallerEnv) sdk.Balancer { return &sdk.Picker{} }},
		{Name: "sextant-hybrid", Central: true, New: func(c *CallerEnv) sdk.Balancer {
			return sdk.NewHybridPicker(sdk.HybridOptions{Now: c.Now, Rand: c.Rand})
		}},
	}
}

// ZoneStrategies are the strategies of the zone scenarios: Sextant's
// hybrid without and with zone-aware weights, and the two rules a caller
// can run alone: stay in its zone always, or ignore zones (A58).
func ZoneStrategies() []Strategy {
	hybrid := func(c *CallerEnv) sdk.Balancer {
		return sdk.NewHybridPicker(sdk.HybridOptions{Now: c.Now, Rand: c.Rand})
	}
	return []Strategy{
		{Name: "a58-wrr", New: func(c *CallerEnv) sdk.Balancer { return &a58{env: c} }},
		{Name: "zone-local", LocalOnly: true, New: func(c *CallerEnv) sdk.Balancer { return &a58{env: c} }},
		{Name: "sextant-hybrid", Central: true, New: hybrid},
		{Name: "sextant-zoned", Central: true, Zoned: true, New: hybrid},
	}
}

// StrategyByName returns the strategy called name.
func StrategyByName(name string) (Strategy, bool) {
	for _, s := range Strategies() {
		if s.Name == name {
			return s, true
		}
	}
	return Strategy{}, false
}

// ORCA holds what each instance reports of its own load every window, as
// gRPC backends report it out of band with ORCA (gRFC A51): requests per
// second, utilization, errors per second.
type ORCA struct {
	byID map[string]*orcaReport
}

type orcaReport struct {
	qps, util, eps float64
	nonEmptySince  time.Time // first report of the current run of non-empty ones
	at             time.Time
}

func (o *ORCA) report(id string, now time.Time, qps, util, eps float64) {
	if o.byID == nil {
		o.byID = map[string]*orcaReport{}
	}
	r := o.byID[id]
	if r == nil {
		r = &orcaReport{}
		o.byID[id] = r
	}
	if qps <= 0 || util <= 0 {
		r.nonEmptySince = time.Time{}
	} else if r.nonEmptySince.IsZero() {
		r.nonEmptySince = now
	}
	r.qps, r.util, r.eps, r.at = qps, util, eps, now
}

// a58 is gRPC's weighted_round_robin policy (gRFC A58) as each caller runs
// it locally: weight = qps / (utilization + penalty x eps / qps) from the
// backend's ORCA reports, after a 10 s blackout, expired after 3 min, the
// mean weight for backends without one, refreshed every second; picks by
// weight (smooth WRR, which gives the same shares as A58's EDF scheduler).
type a58 struct {
	env    *CallerEnv
	picker sdk.Picker
	reg    []sdk.Instance
	ver    int64
}

const (
	a58Blackout = 10 * time.Second
	a58Expiry   = 3 * time.Minute
	a58Penalty  = 1.0
)

func (a *a58) Update(snap *sdk.Snapshot) {
	a.reg = append(a.reg[:0], snap.Instances...)
	a.refresh(a.env.Now())
}

func (a *a58) refresh(now time.Time) {
	weights := make([]float64, len(a.reg))
	sum, n := 0.0, 0
	for i, in := range a.reg {
		r := a.env.ORCA.byID[in.Instance]
		if r == nil || r.nonEmptySince.IsZero() || now.Sub(r.nonEmptySince) < a58Blackout || now.Sub(r.at) > a58Expiry {
			continue
		}
		weights[i] = r.qps / (r.util + a58Penalty*r.eps/r.qps)
		sum += weights[i]
		n++
	}
	mean := 1.0
	if n > 0 {
		mean = sum / float64(n)
	}
	best := 0.0
	for i := range weights {
		if weights[i] == 0 {
			weights[i] = mean
		}
		best = max(best, weights[i])
	}
	a.ver++
	snap := &sdk.Snapshot{Discovery: api.Discovery{Version: a.ver, Instances: make([]sdk.Instance, len(a.reg))}}
	for i, in := range a.reg {
		in.Healthy = true
		in.Weight = int32(max(1, 10000*weights[i]/best))
		snap.Instances[i] = in
	}
	a.picker.Update(snap)
}

func (a *a58) Pick() (sdk.Instance, error)      { return a.picker.Pick() }
func (a *a58) Done(string, time.Duration, bool) {}

// p2c is power of two choices over uniformly drawn instances: with ewma, on
// peak-EWMA latency x (in flight + 1) as Linkerd does (10 s decay, 30 ms
// for an instance not measured yet, failures measured like successes);
// without, on requests in flight, as Envoy's least_request with equal weights.
type p2c struct {
	env   *CallerEnv
	ewma  bool
	insts []sdk.Instance
	load  map[string]*p2cLoad
}

type p2cLoad struct {
	latency  sdk.PeakEWMA
	inflight int
}

const (
	linkerdDecay      = 10 * time.Second
	linkerdDefaultRTT = float64(30 * time.Millisecond)
)

func newP2C(env *CallerEnv, ewma bool) *p2c {
	return &p2c{env: env, ewma: ewma, load: map[string]*p2cLoad{}}
}

func (p *p2c) Update(snap *sdk.Snapshot) {
	p.insts = append(p.insts[:0], snap.Instances...)
	for _, in := range p.insts {
		if p.load[in.Instance] == nil {
			p.load[in.Instance] = &p2cLoad{}
		}
	}
}

func (p *p2c) Pick() (sdk.Instance, error) {
	n := len(p.insts)
	if n == 0 {
		return sdk.Instance{}, sdk.ErrNoInstance
	}
	a := p.env.Rand.IntN(n)
	if n > 1 {
		b := p.env.Rand.IntN(n - 1)
		if b >= a {
			b++
		}
		if p.cost(b) < p.cost(a) {
			a = b
		}
	}
	p.load[p.insts[a].Instance].inflight++
	return p.insts[a], nil
}

func (p *p2c) cost(i int) float64 {
	l := p.load[p.insts[i].Instance]
	if !p.ewma {
		return float64(l.inflight)
	}
	lat, ok := l.latency.Value(p.env.Now(), linkerdDecay)
	if !ok {
		lat = linkerdDefaultRTT
	}
	return lat * float64(l.inflight+1)
}

func (p *p2c) Done(instance string, latency time.Duration, _ bool) {
	l := p.load[instance]
	if l == nil {
		return
	}
	l.inflight--
	l.latency.Observe(p.env.Now(), linkerdDecay, float64(latency), false)
}
