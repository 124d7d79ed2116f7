package sdk

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/unitrouting"
)

// Unit routing (docs/units.md): a callee's unit_routing rules, applied by
// its callers. A UnitRouter holds the rules of the services this one calls
// and decides, per request, which unit of the callee's instances it goes
// to; UnitBalancer narrows a Balancer's candidates to that unit before it
// picks, and UnitPublisher chooses a message's subject by the same rules.

// UnitFeatures are the features of a request that unit rules match: HTTP
// method and path, RPC method, and a getter of headers or metainfo values
// (lower-case keys), as for priority rules.
type UnitFeatures = PriorityFeatures

var (
	// ErrUnitDenied: an enforced unit rule refuses the request (deny, or
	// a caller not in allow_callers).
	ErrUnitDenied = errors.New("sextant: refused by a unit routing rule")
	// ErrUnitUnavailable: the request's unit has no healthy instance and
	// the rule's fallback is fail (or its fallback unit has none either).
	ErrUnitUnavailable = fmt.Errorf("sextant: the unit has no healthy instance: %w", ErrNoInstance)
)

// UnitCount names one counter of a UnitRouter: the requests to Callee that
// Rule matched, with the unit it names and what became of them
// (unitrouting.Observed, Routed, Denied, ...).
type UnitCount struct {
	Callee, Rule, Unit, Outcome string
}

// UnitRouter applies the unit_routing rules of the services this one
// calls. Safe for concurrent use; the zero value is not usable: NewUnitRouter.
type UnitRouter struct {
	service string
	rep     *Reporter

	rules  atomic.Pointer[map[string]*unitRules] // by callee
	mu     sync.Mutex                            // serializes updates of rules
	counts sync.Map                              // UnitCount -> *atomic.Int64
}

type unitRules struct {
	r        *unitrouting.Rules
	revision int64
}

// NewUnitRouter makes a router for the calls of service (the caller that
// rules' match.caller and allow_callers name). rep, if not nil, reports
// what the rules decided (Report.UnitRoutes).
func NewUnitRouter(service string, rep *Reporter) *UnitRouter {
	u := &UnitRouter{service: service, rep: rep}
	u.rules.Store(&map[string]*unitRules{})
	return u
}

// Update replaces callee's rules with the unit_routing document doc; a
// document the SDK refuses leaves the rules in force.
func (u *UnitRouter) Update(callee string, doc []byte) error {
	return u.update(callee, doc, 0)
}

func (u *UnitRouter) update(callee string, doc []byte, revision int64) error {
	r, fe := unitrouting.Parse(doc)
	if fe != nil {
		return fe
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	m := maps.Clone(*u.rules.Load())
	m[callee] = &unitRules{r: r, revision: revision}
	u.rules.Store(&m)
	return nil
}

// Clear removes callee's rules.
func (u *UnitRouter) Clear(callee string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := maps.Clone(*u.rules.Load())
	delete(m, callee)
	u.rules.Store(&m)
}

// Rules are callee's compiled rules (nil: none).
func (u *UnitRouter) Rules(callee string) *unitrouting.Rules {
	if r := (*u.rules.Load())[callee]; r != nil {
		return r.r
	}
	return nil
}

// Revision is the config-center revision of callee's rules in force (0:
// none, or rules given with Update).
func (u *UnitRouter) Revision(callee string) int64 {
	if r := (*u.rules.Load())[callee]; r != nil {
		return r.revision
	}
	return 0
}

// Follow keeps the rules those of the unit_routing configs the watcher's
// answers carry for the services it calls (the config-center adds a
// callee's unit_routing to its callers' answers: ConfigWatcherOptions.Calls,
// or a client-scoped config naming the callee): at once from the last
// answer, then from every new one. A callee whose config is gone has no
// rules; a document refused is logged and the rules in force stay. Each
// answer replaces every callee's rules, those given with Update too: a
// router follows one watcher, or is fed by hand.
func (u *UnitRouter) Follow(w *ConfigWatcher) {
	apply := func() {
		a := w.Current()
		if a == nil {
			return
		}
		u.mu.Lock()
		defer u.mu.Unlock()
		old := *u.rules.Load()
		m := map[string]*unitRules{}
		for _, c := range a.Configs {
			if c.Kind != api.KindUnitRouting || c.Scope == w.o.Service {
				continue
			}
			if o := old[c.Scope]; o != nil && o.revision == c.Revision && c.Revision != 0 {
				m[c.Scope] = o
				continue
			}
			r, fe := unitrouting.Parse(c.Document)
			if fe != nil {
				w.o.Logger.Warn("unit_routing refused; keeping the rules in force", "callee", c.Scope, "revision", c.Revision, "err", fe)
				if o := old[c.Scope]; o != nil {
					m[c.Scope] = o
				}
				continue
			}
			m[c.Scope] = &unitRules{r: r, revision: c.Revision}
		}
		u.rules.Store(&m)
	}
	w.OnChange(func(*WatchAnswer) { apply() })
	apply()
}

// Counts are the router's counters since it started.
func (u *UnitRouter) Counts() map[UnitCount]int64 {
	out := map[UnitCount]int64{}
	u.counts.Range(func(k, v any) bool {
		out[k.(UnitCount)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// Count is one counter's value.
func (u *UnitRouter) Count(c UnitCount) int64 {
	if v, ok := u.counts.Load(c); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

func (u *UnitRouter) count(callee string, d *unitrouting.Decision, outcome string) {
	k := UnitCount{Callee: callee, Rule: d.Rule, Unit: d.Unit, Outcome: outcome}
	v, ok := u.counts.Load(k)
	if !ok {
		v, _ = u.counts.LoadOrStore(k, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
	u.rep.unitRoute(k)
}

// Route decides where a request to callee with features f goes, and counts
// it: sel nil means any of callee's instances (no rule matched, the rule
// only observes, or the fallback is any); else the instances sel selects.
// has tells whether a selection has a healthy instance (nil: every
// selection has one, as for a message subject). The error is ErrUnitDenied
// or ErrUnitUnavailable.
func (u *UnitRouter) Route(callee string, f UnitFeatures, has func(api.UnitSelect) bool) (unit string, sel *api.UnitSelect, err error) {
	if u == nil {
		return "", nil, nil
	}
	r := u.Rules(callee)
	if r == nil {
		return "", nil, nil
	}
	d, ok := r.Decide(unitrouting.Features{Features: f, Caller: u.service}, func() int { return rand.IntN(100) })
	if !ok {
		return "", nil, nil
	}
	switch {
	case !d.Enforce && d.Deny:
		u.count(callee, &d, unitrouting.ObservedDenied)
		return "", nil, nil
	case !d.Enforce:
		u.count(callee, &d, unitrouting.Observed)
		return "", nil, nil
	case d.Deny:
		u.count(callee, &d, unitrouting.Denied)
		return d.Unit, nil, fmt.Errorf("%s, rule %s: %w", callee, d.Rule, ErrUnitDenied)
	case has == nil || has(d.Select):
		u.count(callee, &d, unitrouting.Routed)
		return d.Unit, &d.Select, nil
	case d.Fallback == api.UnitFallbackAny:
		u.count(callee, &d, unitrouting.FellBack)
		return "", nil, nil
	case d.Fallback != api.UnitFallbackFail && has(d.FallbackSelect):
		u.count(callee, &d, unitrouting.FellBack)
		return d.Fallback, &d.FallbackSelect, nil
	}
	u.count(callee, &d, unitrouting.Failed)
	return d.Unit, nil, fmt.Errorf("%s, unit %s (rule %s): %w", callee, d.Unit, d.Rule, ErrUnitUnavailable)
}

// NarrowToUnit is the part of snap that sel selects, and whether it has an
// instance a request may go to (healthy with a positive weight; any, for a
// static snapshot).
func NarrowToUnit(snap *Snapshot, sel api.UnitSelect) (*Snapshot, bool) {
	n := &Snapshot{Discovery: snap.Discovery, ReceivedAt: snap.ReceivedAt, Cached: snap.Cached}
	n.Instances = nil
	ok := false
	for i := range snap.Instances {
		in := &snap.Instances[i]
		if !sel.Matches(in) {
			continue
		}
		n.Instances = append(n.Instances, *in)
		ok = ok || snap.Version == 0 || in.Healthy && in.Weight > 0
	}
	return n, ok
}

// RequestBalancer is a Balancer that picks by the request's features too;
// the Hertz and Kitex adapters use PickFor when their balancer has it.
type RequestBalancer interface {
	Balancer
	PickFor(f UnitFeatures) (Instance, error)
}

var _ RequestBalancer = (*UnitBalancer)(nil)

// UnitBalancer composes unit routing with any Balancer: for each request it
// asks the UnitRouter for the request's unit and picks with a Balancer of
// that unit's instances (one per unit, made by newBalancer and fed the
// narrowed snapshots), or with the one of every instance when no enforced
// rule routes the request. Done reaches the Balancer that picked: every
// instance picked is settled with Done, as with any Balancer. Pick,
// without features, is the whole service's.
type UnitBalancer struct {
	callee      string
	router      *UnitRouter
	newBalancer func() Balancer

	mu      sync.Mutex
	snap    *Snapshot
	all     Balancer
	units   map[string]*unitBalancer // by selection
	pending map[string][]Balancer    // instance -> the balancers that picked it, oldest first
}

type unitBalancer struct {
	b       Balancer
	applied *Snapshot // the snapshot its instances were narrowed from
	has     bool
}

// NewUnitBalancer balances the requests to callee within the units router
// decides, with Balancers made by newBalancer (nil: NewHybridPicker with
// default options).
func NewUnitBalancer(callee string, router *UnitRouter, newBalancer func() Balancer) *UnitBalancer {
	if newBalancer == nil {
		newBalancer = func() Balancer { return NewHybridPicker(HybridOptions{}) }
	}
	return &UnitBalancer{callee: callee, router: router, newBalancer: newBalancer, all: newBalancer(),
		units: map[string]*unitBalancer{}, pending: map[string][]Balancer{}}
}

// Update implements Balancer; the units' Balancers are updated when they
// next pick.
func (b *UnitBalancer) Update(snap *Snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.snap = snap
	b.all.Update(snap)
}

// Pick implements Balancer: any instance of the callee.
func (b *UnitBalancer) Pick() (Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pickWith(b.all)
}

// PickFor picks an instance for a request with features f, in its unit.
func (b *UnitBalancer) PickFor(f UnitFeatures) (Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.snap == nil {
		return Instance{}, ErrNoInstance
	}
	_, sel, err := b.router.Route(b.callee, f, func(s api.UnitSelect) bool { return b.unit(s).has })
	if err != nil {
		return Instance{}, err
	}
	if sel == nil {
		return b.pickWith(b.all)
	}
	return b.pickWith(b.unit(*sel).b)
}

// unit is the Balancer of the instances sel selects, up to date with b.snap.
func (b *UnitBalancer) unit(sel api.UnitSelect) *unitBalancer {
	k := selectKey(sel)
	ub := b.units[k]
	if ub == nil {
		ub = &unitBalancer{b: b.newBalancer()}
		b.units[k] = ub
	}
	if ub.applied != b.snap {
		n, has := NarrowToUnit(b.snap, sel)
		ub.b.Update(n)
		ub.applied, ub.has = b.snap, has
	}
	return ub
}

func (b *UnitBalancer) pickWith(bal Balancer) (Instance, error) {
	in, err := bal.Pick()
	if err == nil {
		b.pending[in.Instance] = append(b.pending[in.Instance], bal)
	}
	return in, err
}

// Done implements Balancer: the Balancer that picked the instance learns.
func (b *UnitBalancer) Done(instance string, latency time.Duration, failed bool) {
	b.mu.Lock()
	ps := b.pending[instance]
	var bal Balancer
	if len(ps) > 0 {
		bal = ps[0]
		if len(ps) == 1 {
			delete(b.pending, instance)
		} else {
			b.pending[instance] = ps[1:]
		}
	}
	b.mu.Unlock()
	if bal != nil {
		bal.Done(instance, latency, failed)
	}
}

func selectKey(s api.UnitSelect) string {
	var sb strings.Builder
	sb.WriteString(s.Cluster)
	sb.WriteByte(0)
	sb.WriteString(s.Zone)
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sb.WriteByte(0)
		sb.WriteString(k)
		sb.WriteByte('=')
		sb.WriteString(s.Labels[k])
	}
	return sb.String()
}

// MessagePublisher is what a message broker's client does for a
// UnitPublisher: publish data, with headers, to a subject (a topic).
// sdk/natssdk implements it with NATS.
type MessagePublisher interface {
	PublishMessage(subject string, header map[string]string, data []byte) error
}

// UnitPublisher publishes a producer's messages to the subject of their
// unit: Subject.<unit> when an enforced rule of Service's unit_routing
// routes the message (its headers are the features: tenant key, ...),
// Subject otherwise (no rule, observe mode, outside the percent, or a
// fallback to any). Denials and counts are as for requests; a unit is
// always available (the broker holds the messages).
type UnitPublisher struct {
	Router *UnitRouter
	// Service is the consuming service whose unit_routing applies.
	Service string
	// Subject is the base subject or topic ("orders").
	Subject string
	Broker  MessagePublisher
}

// SubjectFor is the subject of a message with header (nil: none).
func (p *UnitPublisher) SubjectFor(header map[string]string) (string, error) {
	f := UnitFeatures{Header: func(k string) string { return header[k] }}
	unit, sel, err := p.Router.Route(p.Service, f, nil)
	if err != nil {
		return "", err
	}
	if sel == nil {
		return p.Subject, nil
	}
	return p.Subject + "." + unit, nil
}

// Publish sends a message to its unit's subject, which it returns.
func (p *UnitPublisher) Publish(header map[string]string, data []byte) (string, error) {
	subject, err := p.SubjectFor(header)
	if err != nil {
		return "", err
	}
	return subject, p.Broker.PublishMessage(subject, header, data)
}
