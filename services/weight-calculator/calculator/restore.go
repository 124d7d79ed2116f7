package calculator

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
)

// PolicyBook follows the policies mesh-core stores in etcd (api.Keys.Policy),
// so that a shard that takes a service over, after a move or a restart,
// continues from the last policy published for it rather than from
// defaults: its weights, its ejections with their remaining time, and its
// overload levels.
type PolicyBook struct {
	log    *slog.Logger
	mu     sync.Mutex
	byName map[string]*api.Policy
	listed atomic.Bool
}

var _ etcdx.MirrorHandler = (*PolicyBook)(nil)

// NewPolicyBook makes an empty book; feed it with an etcdx.Mirror of
// api.Keys.Policies().
func NewPolicyBook(log *slog.Logger) *PolicyBook {
	return &PolicyBook{log: log, byName: map[string]*api.Policy{}}
}

// Listed tells whether the book was listed from etcd at least once.
func (b *PolicyBook) Listed() bool { return b.listed.Load() }

// Last returns the last policy stored for service.
func (b *PolicyBook) Last(service string) (*api.Policy, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.byName[service]
	return p, ok
}

// Reset implements etcdx.MirrorHandler.
func (b *PolicyBook) Reset(kvs []etcdx.Event, _ int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byName = make(map[string]*api.Policy, len(kvs))
	for _, kv := range kvs {
		b.put(kv)
	}
	b.listed.Store(true)
}

// Apply implements etcdx.MirrorHandler.
func (b *PolicyBook) Apply(events []etcdx.Event, _ int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range events {
		b.put(ev)
	}
}

func (b *PolicyBook) put(ev etcdx.Event) {
	if ev.Deleted {
		delete(b.byName, ev.Key)
		return
	}
	var p api.Policy
	if err := json.Unmarshal(ev.Value, &p); err != nil {
		b.log.Warn("ignoring a malformed policy", "service", ev.Key, "err", err)
		return
	}
	b.byName[ev.Key] = &p
}

// restoreMaxAge is the oldest policy a new owner continues from: mesh-core's
// default --policy-ttl, past which mesh-core no longer applies it either.
const restoreMaxAge = 2 * time.Minute

// restore fills the state of a service just taken over from p, the last
// policy published for it, when p is recent enough to be in force: each
// instance's weight (as the smoothed weight the next rounds move from), its
// ejection with the time left and the ejections in a row, and the overload
// levels of the service and of its instances. It tells whether it did.
func restore(st *serviceState, p *api.Policy, k *Knobs, now time.Time) bool {
	if p == nil || now.Sub(time.UnixMilli(p.ComputedAtMs)) > restoreMaxAge {
		return false
	}
	for _, w := range p.Weights {
		iw := &instanceWeight{published: w.Weight, everSent: true, calmSince: now, ejections: int(w.Ejections)}
		if w.Ejected {
			until := time.UnixMilli(w.EjectedUntilMs)
			if w.EjectedUntilMs == 0 { // published without its end: a full ejection from now
				until = now.Add(time.Duration(k.EjectionMs) * time.Millisecond)
			}
			iw.ejectedUntil, iw.ejections = until, max(iw.ejections, 1)
			iw.ejectReason = strings.TrimPrefix(strings.TrimPrefix(w.Reason, ReasonEjected), ":")
		} else {
			iw.smoothed, iw.weighed = float64(w.Weight), true
		}
		st.weights[w.Instance] = iw
	}
	if o := p.Overload; o != nil {
		st.overload = overloadControl{State: o.State, AdmitMinLevel: o.AdmitMinLevel, AdmitMinPriority: o.AdmitMinPriority}
	}
	for id, o := range p.InstanceOverload {
		if o != nil {
			st.instances[id] = &overloadControl{State: o.State, AdmitMinLevel: o.AdmitMinLevel, AdmitMinPriority: o.AdmitMinPriority}
		}
	}
	st.published = restoredPolicy(p)
	st.lastPublish = time.UnixMilli(p.ComputedAtMs)
	st.restoredFrom = p.CalculatorID
	return true
}

// restoredPolicy is p as this shard would have published it, to compare
// the next rounds' policies with.
func restoredPolicy(p *api.Policy) *meshcore.Policy {
	out := &meshcore.Policy{Service: p.Service, Version: p.Version, ComputedAtMs: p.ComputedAtMs, CalculatorId: p.CalculatorID,
		Overload: &meshcore.Overload{State: StateNormal}, InstanceOverload: map[string]*meshcore.Overload{}}
	if o := p.Overload; o != nil {
		out.Overload = &meshcore.Overload{State: o.State, AdmitMinPriority: o.AdmitMinPriority, AdmitMinLevel: o.AdmitMinLevel}
	}
	for _, w := range p.Weights {
		out.Weights = append(out.Weights, &meshcore.InstanceWeight{Instance: w.Instance, Weight: w.Weight, Ejected: w.Ejected,
			Reason: w.Reason, EjectedUntilMs: w.EjectedUntilMs, Ejections: w.Ejections})
	}
	for id, o := range p.InstanceOverload {
		if o != nil {
			out.InstanceOverload[id] = &meshcore.Overload{State: o.State, AdmitMinPriority: o.AdmitMinPriority, AdmitMinLevel: o.AdmitMinLevel}
		}
	}
	return out
}
