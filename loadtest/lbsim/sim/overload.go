package sim

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// ChainScenario is a call chain front -> A -> B in which B is the
// bottleneck, every tier admitting through the SDK's Gate, every caller
// shedding before sending by what its callee answered (sdk.Downstreams) and
// what its policy says, and the calculator's own code deciding every
// service's admission level from the tiers' reports.
type ChainScenario struct {
	Name        string
	Description string
	// Classes of business priority with their share of the requests
	// (what priority rules at the front give them).
	Classes []Class
	// Load is the offered load over B's capacity, over time.
	Load     func(t time.Duration) float64
	Duration time.Duration
	Warmup   time.Duration // not measured
	// Measured until: after it the load drops and recovery is watched.
	MeasureUntil time.Duration
	Timeout      time.Duration
}

// Class is one business priority and its share of the requests.
type Class struct {
	Priority int32
	Share    float64
}

// Tiers of the chain.
const (
	tierFront = iota
	tierA
	tierB
	tiers
)

var tierNames = [tiers]string{"front", "svc-a", "svc-b"}

// tierSpec: instances, workers each, mean service time.
var tierSpecs = [tiers]struct {
	n, workers int
	service    time.Duration
}{
	tierFront: {2, 64, time.Millisecond},
	tierA:     {4, 32, 5 * time.Millisecond},
	tierB:     {4, 8, 20 * time.Millisecond}, // 1,600 requests/s in all
}

// BCapacity is B's capacity in requests per second.
func BCapacity() float64 {
	s := tierSpecs[tierB]
	return float64(s.n*s.workers) / s.service.Seconds()
}

// ChainResult is what a chain run measured.
type ChainResult struct {
	Scenario string
	// Over the measured span:
	Goodput      float64  // requests/s that B served and the front answered in time
	GoodputShare float64  // over B's capacity
	P99          float64  // ms, of the requests admitted all the way
	UnloadedP99  float64  // ms, the same chain at half B's capacity
	Shed         [4]int64 // by place: shedFront, shedAGate, shedABeforeB, shedBGate
	ShedAtFront  float64  // of the requests shed, the share shed at the front before any work
	Success      map[int32]float64
	Sent         map[int32]int64
	// After the load drops:
	RecoveredAfter time.Duration // from the drop until the last request shed
	MaxLevel       int32         // B's highest admission level
}

// shed places: at the front (its gate, by the level its callees answered
// with, or before sending), at A's gate, at A before calling B (after A's
// work), at B's gate.
const (
	shedFront = iota
	shedAGate
	shedABeforeB
	shedBGate
)

// shedAtGate is the place of a request shed at each tier's Gate (or its
// queue for a worker).
var shedAtGate = [tiers]int{tierFront: shedFront, tierA: shedAGate, tierB: shedBGate}

// ChainScenarios are the overload scenarios.
func ChainScenarios() []ChainScenario {
	double := func(t time.Duration) float64 {
		if t < 120*time.Second {
			return 2
		}
		return 0.5
	}
	return []ChainScenario{
		{Name: "overload", Description: "front -> A -> B at twice B's capacity, one business priority, then half its capacity from 120 s",
			Classes: []Class{{64, 1}}, Load: double, Duration: 240 * time.Second, Warmup: 30 * time.Second, MeasureUntil: 120 * time.Second, Timeout: time.Second},
		{Name: "overload-3", Description: "the same with three business priorities from URL rules: 20 % at 100, 30 % at 64, 50 % at 20",
			Classes: []Class{{100, 0.2}, {64, 0.3}, {20, 0.5}}, Load: double, Duration: 240 * time.Second, Warmup: 30 * time.Second, MeasureUntil: 120 * time.Second, Timeout: time.Second},
	}
}

type chainReq struct {
	id       uint64
	p        sdk.Priority
	sent     int64 // at the front
	arrived  int64 // at the current tier
	tier     int   // the tier it is at
	inst     [tiers]int
	adm      [tiers]*sdk.Admission
	ctx      [tiers]context.Context // the context each tier serves it with
	measured bool
}

type chainInstance struct {
	tier, idx int
	id        string
	workers
	// Requests waiting for a worker, served and trimmed as a Gate with a
	// concurrency bound does (the highest level first; the low end of a
	// standing queue shed). The simulated Gate itself bounds nothing: it
	// admits a request when it gets a worker, so a trimmed request is not
	// in the instance's arrivals by level, as it would be at a real Gate.
	queue sdk.SlotQueue[*chainReq]
	gate  *sdk.Gate
	rep   *sdk.Reporter
	down  *sdk.Downstreams // what this instance learned of the next tier
}

type chainSim struct {
	sc     *ChainScenario
	base   time.Time
	now    int64
	seq    uint64
	q      eventQueue
	rnd    *rand.Rand
	core   *calculator.Core
	insts  [tiers][]*chainInstance
	rr     [tiers]int
	nextID uint64
	policy [tiers]*meshcore.Policy
	res    ChainResult
	lat    histogram
	ok     int64
	// after the load drops: the last request shed anywhere
	lastShedAt int64
}

// RunChain simulates sc, and the same chain at half B's capacity for the
// unloaded p99.
func RunChain(sc *ChainScenario, seed uint64) ChainResult {
	r := runChain(sc, seed, sc.Load)
	r.UnloadedP99 = runChain(sc, seed, func(time.Duration) float64 { return 0.5 }).P99
	return r
}

func runChain(sc *ChainScenario, seed uint64, load func(time.Duration) float64) ChainResult {
	s := &chainSim{sc: sc, base: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), rnd: rand.New(rand.NewPCG(seed, 0xd460)),
		core: calculator.NewCore(time.Second)}
	s.res = ChainResult{Scenario: sc.Name, Success: map[int32]float64{}, Sent: map[int32]int64{}}
	for t := range tiers {
		spec := tierSpecs[t]
		for i := range spec.n {
			in := &chainInstance{tier: t, idx: i, id: fmt.Sprintf("%s-%d", tierNames[t], i), down: sdk.NewDownstreams(0, s.clock),
				workers: workers{size: spec.workers}}
			in.rep = sdk.NewReporter(sdk.ReporterOptions{Service: tierNames[t], Instance: in.id, Now: s.clock,
				Utilization: func(time.Duration) float64 { return s.takeUtil(in) }})
			tier, id := t, in.id
			in.gate = sdk.NewGate(sdk.GateOptions{Reporter: in.rep, Now: s.clock,
				Threshold: func() int32 { return policyLevel(s.policy[tier], id) }})
			s.insts[t] = append(s.insts[t], in)
			s.push(event{at: int64(s.rnd.Float64() * 1e9), kind: evFlushInstance, idx: int32(t*100 + i)})
		}
	}
	s.push(event{at: 0, kind: evArrival})
	s.push(event{at: int64(500 * time.Millisecond), kind: evRound})
	end := int64(sc.Duration)
	for s.q.Len() > 0 {
		e := heap.Pop(&s.q).(event)
		if e.at > end {
			break
		}
		s.now = e.at
		switch e.kind {
		case evArrival:
			rate := load(time.Duration(s.now)) * BCapacity()
			s.push(event{at: s.now + int64(s.rnd.ExpFloat64()/rate*1e9), kind: evArrival})
			s.arrive()
		case evDone:
			s.served(e.creq)
		case evFlushInstance:
			s.push(event{at: s.now + int64(time.Second), kind: evFlushInstance, idx: e.idx})
			in := s.insts[e.idx/100][e.idx%100]
			if rep := in.rep.Flush(s.clock()); rep != nil {
				s.push(event{at: s.now + int64(DefaultDelays.IngestDelay), kind: evIngest, batch: reportbatch.Batch(rep)})
			}
		case evIngest:
			s.core.Ingest(e.batch, s.clock())
		case evRound:
			s.push(event{at: s.now + int64(time.Second), kind: evRound})
			for _, p := range s.core.Round(s.clock()) {
				s.push(event{at: s.now + int64(DefaultDelays.PolicyDelay), kind: evDeliver, pol: p})
			}
		case evDeliver:
			for t := range tiers {
				if tierNames[t] == e.pol.Service {
					s.policy[t] = e.pol
					if t == tierB && e.pol.Overload != nil {
						s.res.MaxLevel = max(s.res.MaxLevel, e.pol.Overload.AdmitMinLevel)
					}
				}
			}
		}
	}
	s.finish()
	return s.res
}

func (s *chainSim) clock() time.Time { return s.base.Add(time.Duration(s.now)) }

func (s *chainSim) push(e event) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
}

// arrive: a request enters the mesh at the front and gets its priority as
// the front's Edge gives it: a class by its URL, a user priority by its
// request id.
func (s *chainSim) arrive() {
	s.nextID++
	r := &chainReq{id: s.nextID, sent: s.now}
	x, cum := s.rnd.Float64(), 0.0
	r.p.Business = s.sc.Classes[len(s.sc.Classes)-1].Priority
	for _, c := range s.sc.Classes {
		if cum += c.Share; x < cum {
			r.p.Business = c.Priority
			break
		}
	}
	r.p.User = sdk.UserPriority(strconv.FormatUint(r.id, 10), s.clock())
	r.measured = r.sent >= int64(s.sc.Warmup) && r.sent < int64(s.sc.MeasureUntil)
	if r.measured {
		s.res.Sent[r.p.Business]++
	}
	s.toTier(r, tierFront)
}

// toTier sends r to the next instance of tier t (round robin).
func (s *chainSim) toTier(r *chainReq, t int) {
	in := s.insts[t][s.rr[t]%len(s.insts[t])]
	s.rr[t]++
	r.tier, r.inst[t], r.arrived = t, in.idx, s.now
	if in.busy < in.size && in.queue.Len() == 0 {
		s.start(in, r)
		return
	}
	in.queue.Push(r, r.p.Level(), s.clock())
	s.trim(in)
}

// trim sheds the low end of in's queue once it stands, as a Gate does.
func (s *chainSim) trim(in *chainInstance) {
	w := in.queue.Trim(s.clock(), sdk.StandingBound(sdk.DefaultQueueTime))
	if w == nil {
		return
	}
	s.unwind(w.Value, in.tier, in.gate.AdmitLevel("Call"), shedAtGate[in.tier])
}

func (s *chainSim) parentCtx(r *chainReq, t int) context.Context {
	if t == 0 {
		return sdk.ContextWithPriority(context.Background(), r.p)
	}
	return r.ctx[t-1]
}

// start: a worker takes r: the Gate admits it (queueing time counted from
// its arrival at the tier) or sheds it at once.
func (s *chainSim) start(in *chainInstance, r *chainReq) {
	t := in.tier
	if time.Duration(s.now-r.sent) > s.sc.Timeout {
		s.unwind(r, t, -1, -1) // its caller gave up: dropped unserved, no answer
		return
	}
	a, err := in.gate.Enter(s.parentCtx(r, t), s.base.Add(time.Duration(r.arrived)), r.p, "", "Call")
	if err != nil {
		s.unwind(r, t, in.gate.AdmitLevel("Call"), shedAtGate[t])
		s.next(in)
		return
	}
	r.adm[t], r.ctx[t] = a, a.Context(s.parentCtx(r, t))
	s.setBusy(in, in.busy+1)
	svc := int64(gammaService(s.rnd, float64(tierSpecs[t].service)))
	s.push(event{at: s.now + svc, kind: evDone, creq: r})
}

// served: r's work at its tier is done; it calls the next tier, unless the
// instance knows the next tier would shed it, or it was the last tier.
func (s *chainSim) served(r *chainReq) {
	t := r.tier
	in := s.insts[t][r.inst[t]]
	s.setBusy(in, in.busy-1)
	defer s.next(in)
	if t == tierB {
		r.adm[t].Done()
		s.unwind(r, t, in.gate.AdmitLevel("Call"), -1)
		s.succeed(r)
		return
	}
	callee := t + 1
	if shed, level := in.down.ShedBeforeSending(tierNames[callee], r.p, policyLevel(s.policy[callee], "")); shed {
		sdk.ObserveDownstream(r.ctx[t], level)
		r.adm[t].Done()
		where := shedABeforeB
		if t == tierFront {
			where = shedFront
		}
		s.unwind(r, t, in.gate.AdmitLevel("Call"), where)
		return
	}
	s.toTier(r, callee)
}

// unwind answers r from tier t (which answered with level) up the chain:
// each caller learns the level (Downstreams, ObserveDownstream), ends its
// admission and answers its own caller with its Gate's level. where is the
// place r was shed (-1: not shed); level -1: no answer (the caller gave up).
func (s *chainSim) unwind(r *chainReq, t int, level int32, where int) {
	for k := t - 1; k >= 0; k-- {
		in := s.insts[k][r.inst[k]]
		if level >= 0 {
			in.down.Observe(tierNames[k+1], level)
			sdk.ObserveDownstream(r.ctx[k], level)
		}
		r.adm[k].Done()
		if level >= 0 {
			level = in.gate.AdmitLevel("Call")
		}
	}
	if where >= 0 {
		if r.measured {
			s.res.Shed[where]++
		}
		if s.now >= int64(s.sc.MeasureUntil) {
			s.lastShedAt = s.now
		}
	}
}

func (s *chainSim) next(in *chainInstance) {
	s.trim(in)
	for in.busy < in.size {
		w := in.queue.Pop()
		if w == nil {
			return
		}
		s.start(in, w.Value)
	}
}

func (s *chainSim) succeed(r *chainReq) {
	lat := s.now - r.sent
	if !r.measured || time.Duration(lat) > s.sc.Timeout {
		return
	}
	s.ok++
	s.res.Success[r.p.Business]++
	s.lat.add(float64(lat))
}

func (s *chainSim) setBusy(in *chainInstance, busy int) { in.set(s.now, busy) }

func (s *chainSim) takeUtil(in *chainInstance) float64 { return in.report(s.now) }

func (s *chainSim) finish() {
	secs := (s.sc.MeasureUntil - s.sc.Warmup).Seconds()
	s.res.Goodput = float64(s.ok) / secs
	s.res.GoodputShare = s.res.Goodput / BCapacity()
	s.res.P99 = s.lat.quantile(0.99)
	var shed int64
	for _, n := range s.res.Shed {
		shed += n
	}
	if shed > 0 {
		s.res.ShedAtFront = float64(s.res.Shed[shedFront]) / float64(shed)
	}
	for p, n := range s.res.Sent {
		if n > 0 {
			s.res.Success[p] /= float64(n)
		}
	}
	s.res.RecoveredAfter = max(0, time.Duration(s.lastShedAt)-s.sc.MeasureUntil)
}

// policyLevel is the admission level a policy sets for instance (the
// service's, or the instance's own when higher), as sdk.Snapshot.Threshold.
func policyLevel(p *meshcore.Policy, instance string) int32 {
	if p == nil || p.Overload == nil {
		return 0
	}
	o := sdk.Overload{AdmitMinPriority: p.Overload.AdmitMinPriority, AdmitMinLevel: p.Overload.AdmitMinLevel}
	l := o.Level()
	if p.Overload.State != "" && p.Overload.State != calculator.StateNormal {
		return l // the service's control governs every instance (as sdk.Snapshot.Threshold)
	}
	if io, ok := p.InstanceOverload[instance]; ok && io != nil {
		ins := sdk.Overload{AdmitMinPriority: io.AdmitMinPriority, AdmitMinLevel: io.AdmitMinLevel}
		l = max(l, ins.Level())
	}
	return l
}
