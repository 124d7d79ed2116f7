package sim

import (
	"cmp"
	"container/heap"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// ServiceName is the simulated service.
const ServiceName = "sim-svc"

// Delays of the loop, from a window's close to the callers holding the
// policy computed from it: the report reaches the calculator (reporter,
// mixer, forwarder) after IngestDelay; a policy reaches the callers
// (publish to mesh-core, long-poll answer) PolicyDelay after its round.
// Rounds run in the middle of each window, as the calculator's do.
type Delays struct {
	IngestDelay time.Duration
	PolicyDelay time.Duration
}

// DefaultDelays are what `sextant dev` shows on loopback, rounded up.
var DefaultDelays = Delays{IngestDelay: 150 * time.Millisecond, PolicyDelay: 300 * time.Millisecond}

// Options of one run.
type Options struct {
	Seed   uint64
	Delays Delays
	// Knobs for the calculator (nil: its defaults).
	Knobs *calculator.Knobs
}

// WeightPoint is one instance's weight in a policy the callers received.
type WeightPoint struct {
	At      time.Duration
	Weight  int32
	Ejected bool
	Reason  string
}

// InstanceResult is what one instance went through.
type InstanceResult struct {
	ID          string
	Utilization float64 // busy workers over workers, while measured and present
	Served      int64
	Failed      int64 // requests sent to it after the warm-up that failed or timed out
	MaxQueue    int
}

// Result is one run of one strategy in one scenario.
type Result struct {
	Scenario, Strategy string
	// ms, over every request sent after the warm-up; a failed one counts as
	// the caller's timeout: it got no answer (a fast failure is not a fast answer).
	P50, P99, P999 float64
	ErrorShare     float64 // failed (errors and timeouts) over sent, after the warm-up
	Goodput        float64 // successful requests per second, after the warm-up
	Offered        float64 // requests per second sent, after the warm-up
	Imbalance      float64 // max over mean utilization across instances
	// Central strategies only:
	WeightSpread     float64 // max |w - mean| / mean of identical healthy instances, in steady state
	HealthyEjections int     // ejections of an instance that was healthy then
	Ejections        int
	Timeline         map[string][]WeightPoint
	Instances        []InstanceResult
	// With caller zones: the share of requests sent to another zone, and
	// per caller zone the share that stayed in it.
	CrossZone  float64
	LocalShare map[string]float64
}

// StrictlyBetter tells whether a beats b: fewer failed requests, with a p99
// and a p99.9 no higher (within 5 %, as the goal of being the best is).
func StrictlyBetter(a, b Result) bool {
	return a.ErrorShare < b.ErrorShare && a.P99 <= 1.05*b.P99 && a.P999 <= 1.05*b.P999
}

type eventKind uint8

const (
	evArrival eventKind = iota
	evDone
	evFlushCaller
	evFlushInstance
	evIngest
	evRound
	evDeliver
	evJoin
)

type event struct {
	at    int64
	seq   uint64
	kind  eventKind
	idx   int32
	req   *request
	creq  *chainReq
	batch *aggregator.ReportBatch
	pol   *meshcore.Policy
}

type eventQueue []event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || q[i].at == q[j].at && q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type request struct {
	caller, inst int32
	sent, start  int64
	svc          int64
	failed       bool
}

type instance struct {
	spec     *InstanceSpec
	id       string
	joined   bool
	joinedAt int64
	workers
	queue      fifo[*request]
	rep        *sdk.Reporter
	measureInt float64 // busyInt when measuring started (or at join)
	measureAt  int64
	served     int64
	// this window, for ORCA
	wServed, wErrors int64
	maxQueue         int
	failed           int64
}

type caller struct {
	bal  sdk.Balancer
	rep  *sdk.Reporter
	zone string
	// after the warm-up: requests sent, and those that stayed in the zone
	sent, local int64
}

type simulation struct {
	sc      *Scenario
	st      Strategy
	o       Options
	base    time.Time
	now     int64
	seq     uint64
	q       eventQueue
	rnd     *rand.Rand
	insts   []*instance
	byID    map[string]int
	callers []*caller
	core    *calculator.Core
	orca    ORCA
	policy  *meshcore.Policy
	snapVer int64

	measureFrom int64
	hist        histogram
	sent, ok    int64
	res         Result
	ejected     map[string]bool
}

// Run simulates sc with strategy st.
func Run(sc *Scenario, st Strategy, o Options) Result {
	if o.Delays == (Delays{}) {
		o.Delays = DefaultDelays
	}
	s := &simulation{
		sc: sc, st: st, o: o,
		base:        time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		rnd:         rand.New(rand.NewPCG(o.Seed, 0x5ec7a47)),
		byID:        map[string]int{},
		core:        calculator.NewCore(time.Second),
		measureFrom: int64(sc.Warmup),
		ejected:     map[string]bool{},
	}
	if o.Knobs != nil {
		s.core.SetKnobs(ServiceName, *o.Knobs)
	}
	s.res = Result{Scenario: sc.Name, Strategy: st.Name, Timeline: map[string][]WeightPoint{}}
	for i := range sc.Instances {
		spec := &sc.Instances[i]
		in := &instance{spec: spec, id: spec.ID, workers: workers{size: spec.Workers}}
		in.rep = sdk.NewReporter(sdk.ReporterOptions{Service: ServiceName, Instance: spec.ID, Zone: spec.Zone,
			Now: s.clock, Utilization: func(time.Duration) float64 { return s.takeUtilization(in) }})
		s.byID[spec.ID] = i
		s.insts = append(s.insts, in)
		s.push(event{at: int64(spec.JoinAt), kind: evJoin, idx: int32(i)})
	}
	perCaller := sc.Rate / float64(sc.Callers)
	for i := 0; i < sc.Callers; i++ {
		env := &CallerEnv{Now: s.clock, Rand: rand.New(rand.NewPCG(o.Seed, uint64(i)+1)), ORCA: &s.orca}
		c := &caller{bal: st.New(env)}
		if len(sc.CallerZones) > 0 {
			c.zone = sc.CallerZones[i%len(sc.CallerZones)]
		}
		c.rep = sdk.NewReporter(sdk.ReporterOptions{Service: "caller-" + strconv.Itoa(i), Instance: "caller-" + strconv.Itoa(i),
			Zone: c.zone, Now: s.clock})
		s.callers = append(s.callers, c)
		s.push(event{at: int64(s.rnd.ExpFloat64() / perCaller * 1e9), kind: evArrival, idx: int32(i)})
		// Reporters close windows at their own phase, as processes do.
		s.push(event{at: int64(s.rnd.Float64() * 1e9), kind: evFlushCaller, idx: int32(i)})
	}
	for i := range s.insts {
		s.push(event{at: int64(sc.Instances[i].JoinAt) + int64(s.rnd.Float64()*1e9), kind: evFlushInstance, idx: int32(i)})
	}
	s.push(event{at: int64(500 * time.Millisecond), kind: evRound})

	end := int64(sc.Duration)
	measuring := false
	for s.q.Len() > 0 {
		e := heap.Pop(&s.q).(event)
		if e.at > end {
			break
		}
		if !measuring && e.at >= s.measureFrom {
			measuring = true
			s.startMeasuring(e.at)
		}
		s.advance(e.at)
		s.handle(e, perCaller)
	}
	s.finish(end)
	return s.res
}

func (s *simulation) clock() time.Time { return s.base.Add(time.Duration(s.now)) }

func (s *simulation) push(e event) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
}

func (s *simulation) advance(t int64) { s.now = t }

func (s *simulation) handle(e event, perCaller float64) {
	switch e.kind {
	case evArrival:
		s.push(event{at: s.now + int64(s.rnd.ExpFloat64()/perCaller*1e9), kind: evArrival, idx: e.idx})
		s.send(e.idx)
	case evDone:
		s.done(e.req)
	case evFlushCaller:
		s.push(event{at: s.now + int64(time.Second), kind: evFlushCaller, idx: e.idx})
		c := s.callers[e.idx]
		if r, ok := c.bal.(refresher); ok {
			r.refresh(s.clock())
		}
		s.forward(c.rep.Flush(s.clock()))
	case evFlushInstance:
		s.push(event{at: s.now + int64(time.Second), kind: evFlushInstance, idx: e.idx})
		s.flushInstance(s.insts[e.idx])
	case evIngest:
		s.core.Ingest(e.batch, s.clock())
	case evRound:
		s.push(event{at: s.now + int64(time.Second), kind: evRound})
		if !s.st.Central {
			return // nobody listens; the local strategies run without the calculator
		}
		for _, p := range s.core.Round(s.clock()) {
			s.push(event{at: s.now + int64(s.o.Delays.PolicyDelay), kind: evDeliver, pol: p})
		}
	case evDeliver:
		s.policy = e.pol
		s.observePolicy(e.pol)
		s.updateCallers()
	case evJoin:
		in := s.insts[e.idx]
		in.joined, in.joinedAt, in.lastAt, in.flushAt = true, s.now, s.now, s.now
		in.measureAt = max(s.now, s.measureFrom)
		s.updateCallers()
	}
}

// send: a caller picks an instance and sends it a request.
func (s *simulation) send(ci int32) {
	c := s.callers[ci]
	pick, err := c.bal.Pick()
	if err != nil {
		return
	}
	ii, ok := s.byID[pick.Instance]
	if !ok {
		return
	}
	in := s.insts[ii]
	r := &request{caller: ci, inst: int32(ii), sent: s.now}
	if s.now >= s.measureFrom {
		s.sent++
	}
	b := in.spec.behavior(time.Duration(s.now))
	if b.FastFail > 0 && s.rnd.Float64() < b.FastFail {
		r.failed = true
		s.push(event{at: s.now + int64(time.Millisecond), kind: evDone, req: r})
		return
	}
	if in.busy < in.spec.Workers {
		s.start(in, r)
		return
	}
	in.queue.push(r)
	in.maxQueue = max(in.maxQueue, in.queue.len())
}

func (s *simulation) setBusy(in *instance, busy int) { in.set(s.now, busy) }

func (s *simulation) start(in *instance, r *request) {
	s.setBusy(in, in.busy+1)
	b := in.spec.behavior(time.Duration(s.now))
	r.start = s.now
	r.svc = int64(gammaService(s.rnd, float64(in.spec.Service)*b.Slowdown))
	r.failed = b.ErrRate > 0 && s.rnd.Float64() < b.ErrRate
	s.push(event{at: s.now + r.svc, kind: evDone, req: r})
}

func (s *simulation) done(r *request) {
	in := s.insts[r.inst]
	in.served++
	in.wServed++
	if r.svc == 0 { // failed at once
		in.rep.RecordServed(defaultPriority, 0, 0, int64(in.busy))
	} else {
		s.setBusy(in, in.busy-1)
		in.rep.RecordServed(defaultPriority, time.Duration(r.start-r.sent), time.Duration(r.svc), int64(in.busy+1))
		s.startNext(in)
	}
	if r.failed {
		in.wErrors++
	}
	latency := time.Duration(s.now - r.sent)
	c := s.callers[r.caller]
	crossed := c.zone != "" && c.zone != in.spec.Zone
	if crossed {
		latency += s.sc.CrossZoneRTT
	}
	if c.zone != "" && r.sent >= s.measureFrom {
		c.sent++
		if !crossed {
			c.local++
		}
	}
	timedOut := latency > s.sc.Timeout
	if timedOut {
		latency = s.sc.Timeout
	}
	s.callerDone(in, r, latency, r.failed || timedOut, timedOut)
}

// callerDone: the caller learns how its request went.
func (s *simulation) callerDone(in *instance, r *request, latency time.Duration, failed, timedOut bool) {
	c := s.callers[r.caller]
	c.rep.RecordCall(ServiceName, in.id, latency, failed, timedOut)
	c.bal.Done(in.id, latency, failed)
	if r.sent >= s.measureFrom {
		if !failed {
			s.ok++
			s.hist.add(float64(latency))
		} else {
			in.failed++
			s.hist.add(float64(s.sc.Timeout))
		}
	}
}

// startNext gives a free worker the oldest waiting request whose caller has
// not given up yet; the others are dropped unserved, as a server does that
// sees the propagated deadline has passed (Kitex and gRPC carry it).
func (s *simulation) startNext(in *instance) {
	for {
		next, ok := in.queue.pop()
		if !ok {
			return
		}
		if time.Duration(s.now-next.sent) <= s.sc.Timeout {
			s.start(in, next)
			return
		}
		s.callerDone(in, next, s.sc.Timeout, true, true)
	}
}

// takeUtilization is the instance's busy share since its last report.
func (s *simulation) takeUtilization(in *instance) float64 { return in.report(s.now) }

func (s *simulation) flushInstance(in *instance) {
	if !in.joined {
		return
	}
	span := float64(s.now-in.flushAt) / 1e9
	served, errs := in.wServed, in.wErrors
	in.wServed, in.wErrors = 0, 0
	rep := in.rep.Flush(s.clock()) // reads the utilization, which resets flushAt
	util := 0.0
	if rep != nil && rep.Server != nil {
		util = rep.Server.CPUUtil
	}
	if span > 0 {
		s.orca.report(in.id, s.clock(), float64(served)/span, util, float64(errs)/span)
	}
	s.forward(rep)
}

func (s *simulation) forward(rep *api.Report) {
	if rep == nil {
		return
	}
	// Map order is random; sorted, the calculator sums in the same order every run.
	slices.SortFunc(rep.Calls, func(a, b api.Call) int { return cmp.Compare(a.CalleeInstance, b.CalleeInstance) })
	s.push(event{at: s.now + int64(s.o.Delays.IngestDelay), kind: evIngest, batch: reportbatch.Batch(rep)})
}

// registry is what mesh-core lists for the service without a policy.
func (s *simulation) registry() []sdk.Instance {
	var out []sdk.Instance
	for _, in := range s.insts {
		if in.joined {
			out = append(out, sdk.Instance{Instance: in.id, Addr: in.id, Zone: in.spec.Zone, Weight: 100, StaticWeight: 100, Healthy: true})
		}
	}
	return out
}

// snapshot merges the registry with the policy as mesh-core's buildSnapshot
// does: the policy's weight and health for the instances it lists, the
// median of its weights (not ejected) for the others.
func (s *simulation) snapshot() *sdk.Snapshot {
	s.snapVer++
	snap := &sdk.Snapshot{Discovery: api.Discovery{Service: ServiceName, Version: s.snapVer, Instances: s.registry()}}
	if !s.st.Central || s.policy == nil || len(s.policy.Weights) == 0 {
		return snap
	}
	snap.ZoneRouting = s.policy.ZoneRouting
	byID := map[string]*meshcore.InstanceWeight{}
	var ws []int32
	for _, w := range s.policy.Weights {
		byID[w.Instance] = w
		if !w.Ejected {
			ws = append(ws, w.Weight)
		}
	}
	slices.Sort(ws)
	neutral := int32(0)
	if len(ws) > 0 {
		neutral = ws[len(ws)/2]
	}
	for i := range snap.Instances {
		in := &snap.Instances[i]
		if w, ok := byID[in.Instance]; ok {
			in.Weight, in.Healthy = w.Weight, !w.Ejected
		} else if neutral > 0 {
			in.Weight = neutral
		}
	}
	return snap
}

func (s *simulation) updateCallers() {
	snap := s.snapshot()
	byZone := map[string]*sdk.Snapshot{}
	for _, c := range s.callers {
		mine, ok := byZone[c.zone]
		if !ok {
			switch mine = snap; {
			case s.st.Zoned:
				mine = sdk.ZoneWeighted(snap, c.zone)
			case s.st.LocalOnly:
				mine = localOnly(snap, c.zone)
			}
			byZone[c.zone] = mine
		}
		c.bal.Update(mine)
	}
}

// localOnly keeps the instances of zone, when it has any.
func localOnly(snap *sdk.Snapshot, zone string) *sdk.Snapshot {
	out := *snap
	out.Instances = nil
	for _, in := range snap.Instances {
		if in.Zone == zone {
			out.Instances = append(out.Instances, in)
		}
	}
	if len(out.Instances) == 0 {
		return snap
	}
	return &out
}

// observePolicy records what the callers receive: the weight timeline,
// ejections, and the spread of identical healthy instances' weights.
func (s *simulation) observePolicy(p *meshcore.Policy) {
	at := time.Duration(s.now)
	byClass := map[string][]float64{}
	for _, w := range p.Weights {
		s.res.Timeline[w.Instance] = append(s.res.Timeline[w.Instance], WeightPoint{At: at, Weight: w.Weight, Ejected: w.Ejected, Reason: w.Reason})
		ii, ok := s.byID[w.Instance]
		if !ok {
			continue
		}
		spec := s.insts[ii].spec
		healthy := spec.behavior(at) == Healthy && s.healthySince(spec, at, 30*time.Second)
		if w.Ejected && !s.ejected[w.Instance] {
			s.res.Ejections++
			if healthy {
				s.res.HealthyEjections++
			}
		}
		s.ejected[w.Instance] = w.Ejected
		if healthy && !w.Ejected && w.Reason == calculator.ReasonComputed && at >= s.sc.SteadyAfter {
			byClass[spec.Class] = append(byClass[spec.Class], float64(w.Weight))
		}
	}
	for _, ws := range byClass {
		if len(ws) < 2 {
			continue
		}
		mean := 0.0
		for _, w := range ws {
			mean += w
		}
		mean /= float64(len(ws))
		for _, w := range ws {
			s.res.WeightSpread = max(s.res.WeightSpread, math.Abs(w-mean)/mean)
		}
	}
}

// healthySince tells whether spec behaved nominally over the last d before at
// (sampled every second): what the calculator saw of it was healthy too.
func (s *simulation) healthySince(spec *InstanceSpec, at, d time.Duration) bool {
	for t := at - d; t <= at; t += time.Second {
		if t >= spec.JoinAt && spec.behavior(t) != Healthy {
			return false
		}
	}
	return true
}

func (s *simulation) startMeasuring(at int64) {
	for _, in := range s.insts {
		if in.joined {
			s.now = at
			s.setBusy(in, in.busy)
			in.measureInt, in.measureAt = in.busyInt, at
		}
	}
}

func (s *simulation) finish(end int64) {
	s.now = end
	secs := float64(end-s.measureFrom) / 1e9
	s.res.P50, s.res.P99, s.res.P999 = s.hist.quantile(0.5), s.hist.quantile(0.99), s.hist.quantile(0.999)
	if s.sent > 0 {
		s.res.ErrorShare = 1 - float64(s.ok)/float64(s.sent)
	}
	s.res.Goodput, s.res.Offered = float64(s.ok)/secs, float64(s.sent)/secs
	maxU, sumU, n := 0.0, 0.0, 0
	for _, in := range s.insts {
		ir := InstanceResult{ID: in.id, Served: in.served, Failed: in.failed, MaxQueue: in.maxQueue}
		if in.joined && end > in.measureAt {
			s.setBusy(in, in.busy)
			ir.Utilization = (in.busyInt - in.measureInt) / (float64(end-in.measureAt) * float64(in.spec.Workers))
			maxU, sumU, n = max(maxU, ir.Utilization), sumU+ir.Utilization, n+1
		}
		s.res.Instances = append(s.res.Instances, ir)
	}
	if n > 0 && sumU > 0 {
		s.res.Imbalance = maxU / (sumU / float64(n))
	}
	perZone := map[string][2]int64{} // sent, local
	var sent, local int64
	for _, c := range s.callers {
		if c.zone != "" {
			z := perZone[c.zone]
			perZone[c.zone] = [2]int64{z[0] + c.sent, z[1] + c.local}
			sent, local = sent+c.sent, local+c.local
		}
	}
	if sent > 0 {
		s.res.CrossZone = 1 - float64(local)/float64(sent)
		s.res.LocalShare = map[string]float64{}
		for zone, z := range perZone {
			if z[0] > 0 {
				s.res.LocalShare[zone] = float64(z[1]) / float64(z[0])
			}
		}
	}
}

// defaultPriority is every simulated request's: one class, the highest user priority.
var defaultPriority = sdk.Priority{Business: 64, User: sdk.UserPriorities - 1}
