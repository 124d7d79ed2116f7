package calculator

import (
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/tsdb"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
)

// engine runs the rounds: every window, for every service this shard owns,
// it turns the windows into weights and an overload decision, and hands the
// policy to the publisher when it changed enough.
type engine struct {
	id     string
	store  *Store
	knobs  *KnobStore
	owns   func(service string) bool
	pub    policySink
	window time.Duration
	series *tsdb.Writer
	// last returns the last policy published for a service (PolicyBook),
	// which a service taken over continues from; nil: start from defaults.
	last func(service string) (*api.Policy, bool)

	mu       sync.Mutex
	services map[string]*serviceState
	// Reused between rounds.
	stats      []InstanceStats
	lastWindow []InstanceStats
	newest     []InstanceStats
	current    []InstanceStats
	hist       LevelHistogram
	load       loadByLevel
	inputs     []weighInput
	decisions  []weightDecision
}

// policySink takes the policies the rounds decide: the Publisher delivers
// them to mesh-core; the Core keeps them for its caller.
type policySink interface {
	Publish(*meshcore.Policy)
	Status(service string) PublishStatus
	Forget(service string)
}

var _ policySink = (*Publisher)(nil)

// serviceState is what the engine keeps about one owned service.
type serviceState struct {
	ownedSince time.Time
	weights    map[string]*instanceWeight
	overload   overloadControl
	instances  map[string]*overloadControl
	// silentRounds counts the rounds in a row whose newest window holds no
	// server report of the service (see maxSilentRounds).
	silentRounds int
	lastPublish  time.Time
	published    *meshcore.Policy
	decision     Decision
	// restoredFrom is the shard whose last published policy this state
	// continues ("" when it started from defaults).
	restoredFrom string
	// The last zone routing computed, and when: kept through rounds
	// without the data for one (late reports), as weights are.
	zoneRouting   map[string]map[string]float64
	zoneRoutingAt time.Time
}

// maxSilentRounds is how many rounds in a row an overloaded or recovering
// service without server reports keeps its admission level.
const maxSilentRounds = 3

// Decision is the last round's outcome for a service, as /debug/policy shows it.
type Decision struct {
	Service         string `json:"service"`
	Shard           string `json:"shard"`
	RoundAtMs       int64  `json:"round_at_ms"`
	OwnedSinceMs    int64  `json:"owned_since_ms"`
	OwnershipWarmup bool   `json:"ownership_warmup"` // too soon after taking the service over to publish
	// RestoredFrom is the shard whose last published policy the state
	// continues, when the service was taken over with a policy in force.
	RestoredFrom     string                     `json:"restored_from,omitempty"`
	Weights          []weightDecision           `json:"weights"`
	Overload         overloadControl            `json:"overload"`
	InstanceOverload map[string]overloadControl `json:"instance_overload"`
	// ZoneRouting is the zone-aware routing the policy carries: for
	// callers in each zone, each zone's share; empty when off or unknown.
	ZoneRouting map[string]map[string]float64 `json:"zone_routing,omitempty"`
	Published   bool                          `json:"published"` // this round handed a policy to the publisher
	Publishing  PublishStatus                 `json:"publishing"`
	Knobs       Knobs                         `json:"knobs"`
}

func newEngine(id string, store *Store, knobs *KnobStore, owns func(string) bool, pub policySink, window time.Duration) *engine {
	return &engine{id: id, store: store, knobs: knobs, owns: owns, pub: pub, window: window, services: map[string]*serviceState{}}
}

// round computes every owned service at now.
func (e *engine) round(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	names := e.store.Names()
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		seen[name] = true
		if !e.owns(name) {
			// Records of a service this shard never owned arrive while the
			// mixers' view of the shards is ahead of this shard's: they are
			// kept (and expire if it never owns the service). A service it
			// owned and lost is forgotten.
			if _, ok := e.services[name]; ok {
				e.disown(name)
			}
			continue
		}
		st := e.services[name]
		if st == nil {
			st = &serviceState{ownedSince: now, weights: map[string]*instanceWeight{}, instances: map[string]*overloadControl{}}
			if e.last != nil {
				if p, ok := e.last(name); ok {
					k := e.knobs.For(name)
					restore(st, p, &k, now)
				}
			}
			e.services[name] = st
		}
		e.compute(name, st, now)
	}
	// Services whose every series expired: publish the fall-back to static
	// weights once, then forget them.
	for name, st := range e.services {
		if seen[name] {
			continue
		}
		if !e.owns(name) {
			e.disown(name)
			continue
		}
		if st.published != nil && len(st.published.Weights) == 0 && !e.pub.Status(name).Pending {
			e.disown(name) // its fall-back to static weights is delivered
			continue
		}
		e.compute(name, st, now)
	}
}

// disown forgets a service this shard no longer owns: if it owns it again
// later, it starts from clean windows.
func (e *engine) disown(name string) {
	if _, ok := e.services[name]; ok {
		delete(e.services, name)
		e.pub.Forget(name)
	}
	e.store.Drop(name)
}

func (e *engine) compute(name string, st *serviceState, now time.Time) {
	k := e.knobs.For(name)
	last := e.store.WindowIndex(now) - 1 // the newest complete window
	e.recordCalls(name, last)
	warmup := time.Duration(k.EvalWindows+1) * e.window
	d := Decision{Service: name, Shard: e.id, RoundAtMs: now.UnixMilli(), OwnedSinceMs: st.ownedSince.UnixMilli(), Knobs: k,
		RestoredFrom: st.restoredFrom}
	if st.restoredFrom != "" && now.Before(st.ownedSince.Add(warmup)) {
		// Taken over with a policy in force: that policy is what mesh-core
		// serves, and the state continues from it, unchanged, until this
		// shard holds an evaluation span of its own (partial windows would
		// drop the overload level and move the weights on little data).
		// Ejections end on time meanwhile; the first round after weighs
		// the instance back.
		d.OwnershipWarmup, d.Overload = true, st.overload
		for _, w := range st.published.Weights {
			d.Weights = append(d.Weights, weightDecision{Instance: w.Instance, Weight: w.Weight, Ejected: w.Ejected, Reason: w.Reason})
		}
		d.Publishing = e.pub.Status(name)
		st.decision = d
		return
	}

	// Weights from the evaluation span, for instances reported recently.
	expiry := time.Duration(k.WeightExpiryMs) * time.Millisecond
	// Each instance's newest own report: in the window in progress when it
	// has reported there already (reports are placed by the end of the
	// window they cover), else in the last complete one.
	// The newest complete window, read once: for the weights' drops here and,
	// with arrivals by level, for the overload control below.
	clear(e.hist[:])
	e.lastWindow = e.store.Stats(e.lastWindow[:0], name, last, last, &e.hist)
	e.newest = append(e.newest[:0], e.lastWindow...)
	e.current = e.store.Stats(e.current[:0], name, last+1, last+1, nil)
	for _, c := range e.current {
		if j, ok := slices.BinarySearchFunc(e.newest, c.Instance, byInstance); ok && c.ServerWindows > 0 {
			e.newest[j] = c
		}
	}
	e.stats = e.store.Stats(e.stats[:0], name, last-int64(k.EvalWindows)+1, last, nil)
	e.inputs = e.inputs[:0]
	span := time.Duration(k.EvalWindows) * e.window
	live := map[string]bool{}
	for _, s := range e.stats {
		if now.Sub(s.LastSeen) > expiry {
			continue
		}
		if s.FirstSeen.Before(st.ownedSince.Add(warmup)) {
			// Known before this shard took the service over: not a new instance.
			s.FirstSeen = time.Time{}
		}
		live[s.Instance] = true
		in := weighInput{stats: s, span: span, window: e.window}
		if j, ok := slices.BinarySearchFunc(e.newest, s.Instance, byInstance); ok {
			in.newest = e.newest[j]
		}
		e.inputs = append(e.inputs, in)
	}
	for id, w := range st.weights {
		switch {
		case live[id]:
		case now.Before(w.ejectedUntil.Add(expiry)):
			// Ejected, or back from ejection without traffic yet: it has
			// nothing to report, yet leaving it out of the policy would hand
			// it the neutral weight at once. It stays, with no data.
			e.inputs = append(e.inputs, weighInput{stats: InstanceStats{Instance: id}, span: span, window: e.window})
		default:
			delete(st.weights, id) // expired: back to its static weight
		}
	}
	slices.SortFunc(e.inputs, func(a, b weighInput) int { return strings.Compare(a.stats.Instance, b.stats.Instance) })
	e.decisions = computeWeights(e.inputs, st.weights, &k, now, e.decisions)
	d.Weights = append([]weightDecision(nil), e.decisions...)
	if k.ZoneAware && len(live) >= k.ZoneAwareMinInstances {
		switch r := e.zoneRouting(name, last, span, &k); {
		case r != nil:
			st.zoneRouting, st.zoneRoutingAt = r, now
		case now.Sub(st.zoneRoutingAt) > expiry:
			st.zoneRouting = nil // no demand by zone for that long: callers route as usual
		}
		d.ZoneRouting = st.zoneRouting
	} else {
		st.zoneRouting = nil
	}

	// Overload from the newest complete window.
	e.load.fill(&e.hist)
	var sig overloadSignals
	var cpuSum, queueSum float64
	var reqs, timeouts int64
	servers := 0
	d.InstanceOverload = map[string]overloadControl{}
	reporting := func(s InstanceStats) bool { return s.ServerWindows > 0 && live[s.Instance] }
	for _, s := range e.lastWindow {
		if reporting(s) {
			servers++
			cpuSum += s.CPUUtil
			queueSum += s.QueueTimeMsAvg * float64(s.ServerRequests)
			reqs += s.ServerRequests
			timeouts += s.ClientTimeouts
		}
	}
	for _, s := range e.lastWindow {
		if !reporting(s) {
			continue
		}
		ic := st.instances[s.Instance]
		if ic == nil {
			ic = &overloadControl{}
			st.instances[s.Instance] = ic
		}
		// The arrivals by level are the service's: so is what was served.
		ic.step(overloadSignals{queueTimeMs: s.QueueTimeMsAvg, cpu: s.CPUUtil, timeoutRatio: ratio(s.ClientTimeouts, s.ServerRequests), load: &e.load, served: reqs}, &k)
		if ic.State != StateNormal {
			d.InstanceOverload[s.Instance] = *ic
		}
	}
	for id := range st.instances {
		if !live[id] {
			delete(st.instances, id)
		}
	}
	if servers > 0 {
		sig = overloadSignals{cpu: cpuSum / float64(servers), timeoutRatio: ratio(timeouts, reqs), load: &e.load, served: reqs}
		if reqs > 0 {
			sig.queueTimeMs = queueSum / float64(reqs)
		}
	} else {
		sig = overloadSignals{load: &e.load}
	}
	// A window without any server report says nothing of the load: reports
	// late from starved data planes look the same as no traffic. A shedding
	// service holds its level for a few such rounds rather than dropping it
	// to 0 and taking the whole load at once; then it is idle.
	if servers == 0 && st.overload.State != StateNormal && st.silentRounds < maxSilentRounds {
		st.silentRounds++
	} else {
		st.silentRounds = 0
		st.overload.step(sig, &k)
	}
	d.Overload = st.overload

	policy := e.policy(name, st, now)
	policy.ZoneRouting = d.ZoneRouting
	switch {
	case now.Before(st.ownedSince.Add(warmup)):
		d.OwnershipWarmup = true
	case st.published == nil || changed(st.published, policy, k.PublishThreshold) ||
		now.Sub(st.lastPublish) >= time.Duration(k.RepublishMs)*time.Millisecond:
		e.pub.Publish(policy)
		e.record(d, now)
		st.published, st.lastPublish, d.Published = policy, now, true
		for _, w := range policy.Weights {
			if s := st.weights[w.Instance]; s != nil {
				s.published, s.everSent = w.Weight, true
			}
		}
	}
	d.Publishing = e.pub.Status(name)
	st.decision = d
}

func (e *engine) policy(name string, st *serviceState, now time.Time) *meshcore.Policy {
	p := &meshcore.Policy{
		Service:          name,
		Overload:         &meshcore.Overload{State: st.overload.State, AdmitMinPriority: st.overload.AdmitMinPriority, AdmitMinLevel: st.overload.AdmitMinLevel},
		InstanceOverload: map[string]*meshcore.Overload{},
		ComputedAtMs:     now.UnixMilli(),
		CalculatorId:     e.id,
	}
	for _, d := range e.decisions {
		w := &meshcore.InstanceWeight{Instance: d.Instance, Weight: d.Weight, Ejected: d.Ejected, Reason: d.Reason}
		// The ejection's end and the backoff travel with the policy: a
		// shard that takes the service over continues from them.
		if s := st.weights[d.Instance]; s != nil {
			if d.Ejected {
				w.EjectedUntilMs = s.ejectedUntil.UnixMilli()
			}
			w.Ejections = int32(s.ejections)
		}
		p.Weights = append(p.Weights, w)
	}
	for id, c := range st.instances {
		if c.State != StateNormal {
			p.InstanceOverload[id] = &meshcore.Overload{State: c.State, AdmitMinPriority: c.AdmitMinPriority, AdmitMinLevel: c.AdmitMinLevel}
		}
	}
	return p
}

// recordCalls writes what the callers of service reported about each of its
// instances in window index, summed over callers: measurement `call`
// (docs/timeseries.md). Each round writes the window it just completed.
func (e *engine) recordCalls(service string, index int64) {
	if e.series == nil || !e.series.Enabled() {
		return
	}
	windowMs := e.window.Milliseconds()
	at := time.UnixMilli(index * windowMs)
	e.store.EachCallerWindow(service, index, func(instance string, a CallerAgg) {
		if l := e.series.Begin("call"); l != nil {
			l.Tag("callee_instance", instance).Tag("callee_service", service).
				Int("errors", a.Errors).Float("latency_ms_avg", a.LatencyMsAvg).Float("latency_ms_p99", a.LatencyMsP99).
				Int("records", a.Records).Int("requests", a.Requests).Int("timeouts", a.Timeouts).Int("window_ms", windowMs).End(at)
		}
	})
}

// stateCodes let dashboards plot the overload state.
var stateCodes = map[string]int{StateNormal: 0, StateRecovering: 1, StateOverloaded: 2}

// record writes a published decision to the time series: measurement
// `weight` per instance and `overload` per service (docs/timeseries.md).
func (e *engine) record(d Decision, now time.Time) {
	if e.series == nil || !e.series.Enabled() {
		return
	}
	for _, w := range d.Weights {
		e.series.Write("weight", map[string]string{"service": d.Service, "instance": w.Instance},
			map[string]any{"weight": w.Weight, "ejected": w.Ejected, "reason": w.Reason, "target": w.Target,
				"qps": w.QPS, "utilization": w.Util, "error_rate": w.ErrorRate, "latency_ms": w.LatencyMs}, now)
	}
	o := d.Overload
	e.series.Write("overload", map[string]string{"service": d.Service},
		map[string]any{"state": o.State, "state_code": stateCodes[o.State], "admit_min_priority": o.AdmitMinPriority, "admit_min_level": o.AdmitMinLevel,
			"shed_target": o.ShedTarget, "queue_time_ms": o.QueueTimeMs, "cpu": o.CPU, "timeout_ratio": o.TimeoutRatio}, now)
}

// changed tells whether next differs enough from prev to be published.
func changed(prev, next *meshcore.Policy, threshold float64) bool {
	if len(prev.Weights) != len(next.Weights) || len(prev.InstanceOverload) != len(next.InstanceOverload) ||
		prev.Overload.State != next.Overload.State || prev.Overload.AdmitMinLevel != next.Overload.AdmitMinLevel {
		return true
	}
	for i, w := range next.Weights {
		p := prev.Weights[i]
		if p.Instance != w.Instance || p.Ejected != w.Ejected {
			return true
		}
		if math.Abs(float64(w.Weight-p.Weight)) > threshold*float64(max(p.Weight, w.Weight)) {
			return true
		}
	}
	for id, o := range next.InstanceOverload {
		if p, ok := prev.InstanceOverload[id]; !ok || p.State != o.State || p.AdmitMinLevel != o.AdmitMinLevel {
			return true
		}
	}
	if len(prev.ZoneRouting) != len(next.ZoneRouting) {
		return true
	}
	for from, to := range next.ZoneRouting {
		was := prev.ZoneRouting[from]
		if len(was) != len(to) {
			return true
		}
		for zone, share := range to {
			if p, ok := was[zone]; !ok || math.Abs(share-p) > threshold*max(share, p) {
				return true
			}
		}
	}
	return false
}

// zoneRouting computes the service's zone-aware routing from this round's
// weights (an instance's capacity: its requests over its utilization, the
// median of the others' without both; none while ejected) and the callers'
// demand by zone over the evaluation span.
func (e *engine) zoneRouting(name string, last int64, span time.Duration, k *Knobs) map[string]map[string]float64 {
	requests := e.store.ZoneDemand(name, last-int64(k.EvalWindows)+1, last)
	if len(requests) == 0 {
		return nil
	}
	demand := make(map[string]float64, len(requests))
	for z, n := range requests {
		demand[z] = float64(n) / span.Seconds()
	}
	zoneOf := make(map[string]string, len(e.stats))
	for _, s := range e.stats {
		zoneOf[s.Instance] = s.Zone
	}
	var known []float64
	caps := make([]float64, len(e.decisions))
	for i, d := range e.decisions {
		if !d.Ejected && d.QPS > 0 && d.Util > 0.05 {
			caps[i] = d.QPS / d.Util
			known = append(known, caps[i])
		}
	}
	if len(known) == 0 {
		return nil
	}
	slices.Sort(known)
	median := known[len(known)/2]
	capacity := map[string]float64{}
	for i, d := range e.decisions {
		switch {
		case d.Ejected:
		case caps[i] > 0:
			capacity[zoneOf[d.Instance]] += caps[i]
		default:
			capacity[zoneOf[d.Instance]] += median
		}
	}
	return zoneRouting(capacity, demand, k.ZoneHeadroom)
}

// decision returns the last decision for service.
func (e *engine) decision(service string) (Decision, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st, ok := e.services[service]
	if !ok {
		return Decision{}, false
	}
	d := st.decision
	d.Publishing = e.pub.Status(service)
	return d, true
}

// owned lists the services the engine computes.
func (e *engine) owned() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.services))
	for name := range e.services {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

func byInstance(s InstanceStats, id string) int { return strings.Compare(s.Instance, id) }

func ratio(a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}
