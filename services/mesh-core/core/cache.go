package core

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// ErrTooManyServices: the cache holds --max-services services already.
var ErrTooManyServices = errors.New("too many services")

// Cache holds the registry and the policies as mirrored from etcd, and one
// snapshot per service built from them. While etcd is away it keeps serving
// what it last had.
type Cache struct {
	policyTTL   time.Duration
	maxServices int
	log         *slog.Logger
	now         func() time.Time
	onSnapshot  func() // a snapshot changed version; for metrics
	// coalesce is the shortest time between two versions of one service:
	// the first change after a quiet spell is published at once, the
	// changes that follow within the window together, at its end.
	coalesce time.Duration

	mu    sync.Mutex // serializes changes
	regs  map[string]map[string]api.Registration
	kitex map[string]map[string]api.Registration // from kitex-contrib/registry-etcd
	// imports are the instances imported from peer control planes, by
	// service and peer (peering.go): in memory only, never in etcd.
	imports  map[string]map[string][]api.Instance
	policies map[string]*api.Policy
	// ages says how old each policy was when it arrived, on the in-touch
	// clock: a policy ages only while mesh-core follows etcd (policyAge).
	ages map[string]policyArrival
	// The in-touch clock: the time spent following etcd, up to touchedAt,
	// and whether it runs now (SetInTouch).
	inTouch   time.Duration
	touchedAt time.Time
	touching  bool
	// outages are the last spells out of touch (the last one may go on),
	// so that a policy computed before or during an outage and delivered
	// after it arrives with its age in touch only (arrived).
	outages []outage
	holds   map[string]int // pollers waiting, by service
	// published is when each service last got a new version; deferred
	// holds the rebuilds waiting for the end of their window.
	published map[string]time.Time
	deferred  map[string]*time.Timer
	// keptAlive tells whether this replica keeps service's instance alive
	// (it heartbeats here, within its TTL); nil: none. A registration
	// deleted from etcd while it is kept alive here is the lease of a
	// lost session (etcd was away longer than the session TTL): the
	// replica writes it again under a new one (liveness.renew). Its delete
	// is held for deleteGrace (doomed), so that the instance does not
	// leave discovery between the delete and the write.
	keptAlive   func(service, instance string) bool
	deleteGrace time.Duration
	doomed      map[string]*time.Timer // by service/instance

	smu   sync.RWMutex
	snaps map[string]*Snapshot

	// Subscribers to new versions, by service: one non-blocking send each,
	// so that a poll for many services waits on one channel.
	subMu sync.Mutex
	subs  map[string]map[chan<- struct{}]bool
	// Callbacks on new versions, by service (OnChange), and of every
	// service (OnAnyChange).
	calls    map[string]map[*func(string)]bool
	callsAll map[*func(string)]bool
}

// Subscribe makes ch receive (without blocking: give it room for one) when
// any of services gets a new version, until cancel.
func (c *Cache) Subscribe(services []string, ch chan<- struct{}) (cancel func()) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	for _, s := range services {
		if c.subs[s] == nil {
			c.subs[s] = map[chan<- struct{}]bool{}
		}
		c.subs[s][ch] = true
	}
	return func() {
		c.subMu.Lock()
		defer c.subMu.Unlock()
		for _, s := range services {
			if delete(c.subs[s], ch); len(c.subs[s]) == 0 {
				delete(c.subs, s)
			}
		}
	}
}

// OnChange calls f with the service's name when any of services gets a new
// version (after the new snapshot is in place), until cancel. f is called by
// the goroutine that made the change, with the cache locked: it must return
// at once and not call the cache. The poll port is told this way, without a
// goroutine waiting on a channel.
func (c *Cache) OnChange(services []string, f func(service string)) (cancel func()) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	key := &f
	for _, s := range services {
		if c.calls[s] == nil {
			c.calls[s] = map[*func(string)]bool{}
		}
		c.calls[s][key] = true
	}
	return func() {
		c.subMu.Lock()
		defer c.subMu.Unlock()
		for _, s := range services {
			if delete(c.calls[s], key); len(c.calls[s]) == 0 {
				delete(c.calls, s)
			}
		}
	}
}

// OnAnyChange is OnChange for every service, present and future (the xDS
// server follows all of them); a service that loses its snapshot (evicted)
// is told too.
func (c *Cache) OnAnyChange(f func(service string)) (cancel func()) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	key := &f
	c.callsAll[key] = true
	return func() {
		c.subMu.Lock()
		defer c.subMu.Unlock()
		delete(c.callsAll, key)
	}
}

// Snapshots returns the snapshot of every service held now.
func (c *Cache) Snapshots() []*Snapshot {
	c.smu.RLock()
	defer c.smu.RUnlock()
	out := make([]*Snapshot, 0, len(c.snaps))
	for _, s := range c.snaps {
		out = append(out, s)
	}
	return out
}

// Held returns the snapshot of service if one is held (nil if none).
func (c *Cache) Held(service string) *Snapshot {
	c.smu.RLock()
	defer c.smu.RUnlock()
	return c.snaps[service]
}

// notify tells service's subscribers of a new version.
func (c *Cache) notify(service string) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	for ch := range c.subs[service] {
		select {
		case ch <- struct{}{}:
		default: // already told
		}
	}
	for f := range c.calls[service] {
		(*f)(service)
	}
	c.tellAny(service)
}

// tellAny tells the OnAnyChange callbacks; subMu is held.
func (c *Cache) tellAny(service string) {
	for f := range c.callsAll {
		(*f)(service)
	}
}

// appeared tells the OnAnyChange callbacks of a service that got its first
// snapshot or lost its last one: nobody polls a version of it, but the xDS
// server serves it or stops.
func (c *Cache) appeared(service string) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.tellAny(service)
}

// NewCache makes an empty cache.
func NewCache(policyTTL time.Duration, maxServices int, log *slog.Logger) *Cache {
	return &Cache{
		policyTTL: policyTTL, maxServices: maxServices, log: log, now: time.Now, onSnapshot: func() {},
		regs: map[string]map[string]api.Registration{}, kitex: map[string]map[string]api.Registration{}, imports: map[string]map[string][]api.Instance{}, policies: map[string]*api.Policy{},
		ages: map[string]policyArrival{}, touching: true, touchedAt: time.Now(),
		holds: map[string]int{}, snaps: map[string]*Snapshot{},
		published: map[string]time.Time{}, deferred: map[string]*time.Timer{},
		deleteGrace: 5 * time.Second, doomed: map[string]*time.Timer{},
		subs: map[string]map[chan<- struct{}]bool{}, calls: map[string]map[*func(string)]bool{}, callsAll: map[*func(string)]bool{},
	}
}

// SetCoalesce sets the shortest time between two versions of a service (0:
// every change makes a version).
func (c *Cache) SetCoalesce(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.coalesce = d
}

// changed rebuilds service after a change, at once when its last version is
// older than the coalescing window, else once at the window's end with
// every change made meanwhile. mu is held.
func (c *Cache) changed(service string) {
	if c.deferred[service] != nil {
		return // a rebuild is due and will see this change too
	}
	wait := c.coalesce - c.now().Sub(c.published[service])
	if wait <= 0 {
		c.rebuild(service)
		return
	}
	c.deferred[service] = time.AfterFunc(wait, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.deferred, service)
		c.rebuild(service)
	})
}

// Get returns the snapshot of service. A service with no instances and no
// policy answers with an empty snapshot made for the moment: it holds no
// slot, and nobody can wait on it (Hold).
func (c *Cache) Get(service string) *Snapshot {
	c.smu.RLock()
	s := c.snaps[service]
	c.smu.RUnlock()
	if s != nil {
		return s
	}
	return buildSnapshot(service, nil, nil)
}

// Hold returns the snapshot of service and keeps it, and the ones that
// replace it, until release is called, so that a poller can wait on it:
// for a service with no instances and no policy this takes one of the
// --max-services slots (ErrTooManyServices when none is free), given back
// by the last release.
func (c *Cache) Hold(service string) (snap *Snapshot, release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.smu.RLock()
	s, n := c.snaps[service], len(c.snaps)
	c.smu.RUnlock()
	if s == nil && n >= c.maxServices {
		return nil, nil, ErrTooManyServices
	}
	c.holds[service]++
	if s == nil {
		s = c.rebuild(service)
	}
	var once sync.Once
	return s, func() { once.Do(func() { c.release(service) }) }, nil
}

func (c *Cache) release(service string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holds[service]--; c.holds[service] > 0 {
		return
	}
	delete(c.holds, service)
	if !c.keeps(service) {
		c.smu.Lock()
		delete(c.snaps, service) // nobody waits on it
		c.smu.Unlock()
		c.appeared(service)
	}
}

// keeps tells whether service's snapshot is kept: it has instances or a
// policy, or pollers wait on it. mu is held.
func (c *Cache) keeps(service string) bool {
	return len(c.regs[service]) > 0 || len(c.kitex[service]) > 0 || len(c.imports[service]) > 0 || c.policies[service] != nil || c.holds[service] > 0
}

// Services is how many services have a snapshot held: those with instances
// or a policy, and the others while pollers wait on them.
func (c *Cache) Services() int {
	c.smu.RLock()
	defer c.smu.RUnlock()
	return len(c.snaps)
}

// Instances returns the registrations of service (a copy).
func (c *Cache) Instances(service string) map[string]api.Registration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.instances(service)
}

// registration is service's instance as Sextant's own registry holds it.
func (c *Cache) registration(service, instance string) (api.Registration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.regs[service][instance]
	return r, ok
}

// instances merges both registries; Sextant's own registration of an
// instance wins over the Kitex registry's. mu is held.
func (c *Cache) instances(service string) map[string]api.Registration {
	out := make(map[string]api.Registration, len(c.regs[service])+len(c.kitex[service]))
	for k, v := range c.kitex[service] {
		out[k] = v
	}
	for k, v := range c.regs[service] {
		out[k] = v
	}
	return out
}

// rebuild makes service's snapshot from what the cache holds, and keeps it
// only while keeps says so: a service that lost its last instance and has
// no policy and no poller waiting is evicted. mu is held.
func (c *Cache) rebuild(service string) *Snapshot {
	pol := c.policies[service]
	if pol != nil && c.policyAge(service, pol, c.now()) > c.policyTTL {
		pol = nil // too old to apply: static weights
	}
	next := buildSnapshot(service, c.instances(service), pol, c.imported(service)...)
	c.smu.Lock()
	defer c.smu.Unlock()
	prev := c.snaps[service]
	switch {
	case prev == nil:
		defer c.appeared(service)
	case prev.Version == next.Version:
		// Same answer (perhaps a younger policy with the same weights):
		// waiters on the previous one keep waiting on the same channel.
		next.done, next.built = prev.done, prev.built
	default:
		close(prev.done)
		c.onSnapshot()
		c.published[service] = c.now()
		defer c.notify(service) // after the new snapshot is in place
	}
	if c.keeps(service) {
		c.snaps[service] = next
	} else {
		delete(c.snaps, service)
		delete(c.published, service)
	}
	return next
}

// policyArrival is what the cache knows of a policy's age: its age when it
// arrived from etcd, and the in-touch clock then.
type policyArrival struct {
	computedAtMs int64
	age          time.Duration
	clock        time.Duration
}

// SetInTouch tells the cache whether mesh-core follows etcd now. The policy
// TTL counts only the time in touch: while etcd is away nothing can replace
// a policy, so its age says nothing of whether it is out of date, and the
// last good policies are kept however long the outage lasts. A policy that
// is not refreshed while etcd is reachable (its calculator is gone) still
// expires. A new cache is in touch.
func (c *Cache) SetInTouch(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	switch {
	case c.touching && !ok:
		if len(c.outages) == maxOutages {
			c.outages = append(c.outages[:0], c.outages[1:]...)
		}
		c.outages = append(c.outages, outage{from: now})
	case !c.touching && ok && len(c.outages) > 0:
		c.outages[len(c.outages)-1].to = now
	}
	c.inTouch, c.touchedAt, c.touching = c.touchClock(now), now, ok
}

// outage is a spell out of touch with etcd; to is zero while it lasts.
type outage struct{ from, to time.Time }

// maxOutages bounds the outages remembered. Time before the oldest one
// counts as in touch: a policy computed then may expire early, never late.
const maxOutages = 64

// outOfTouch is the time out of touch with etcd between from and to. mu is
// held.
func (c *Cache) outOfTouch(from, to time.Time) time.Duration {
	var d time.Duration
	for _, o := range c.outages {
		end := o.to
		if end.IsZero() || end.After(to) {
			end = to
		}
		start := o.from
		if start.Before(from) {
			start = from
		}
		if end.After(start) {
			d += end.Sub(start)
		}
	}
	return d
}

// touchClock is the time spent in touch with etcd up to now. mu is held.
func (c *Cache) touchClock(now time.Time) time.Duration {
	if c.touching && now.After(c.touchedAt) {
		return c.inTouch + now.Sub(c.touchedAt)
	}
	return c.inTouch
}

// arrived records the age of service's policy as it arrives from etcd; a
// policy already known (the same computation, listed again after an outage)
// keeps its record. A new policy's age is the time in touch since it was
// computed: one that a calculator computed during an outage and delivered
// after it (its publisher retries the newest policy until mesh-core takes
// it) is newer than the one it replaces and must not count the outage, or
// it would arrive expired and put static weights in place of the last good
// ones. mu is held.
func (c *Cache) arrived(service string, pol *api.Policy) {
	if a, ok := c.ages[service]; ok && a.computedAtMs == pol.ComputedAtMs {
		return
	}
	now := c.now()
	c.ages[service] = policyArrival{computedAtMs: pol.ComputedAtMs,
		age: c.touchAge(pol, now), clock: c.touchClock(now)}
}

// touchAge is the time in touch with etcd from pol's computation to now.
// mu is held.
func (c *Cache) touchAge(pol *api.Policy, now time.Time) time.Duration {
	computed := time.UnixMilli(pol.ComputedAtMs)
	return now.Sub(computed) - c.outOfTouch(computed, now)
}

// policyAge is how old service's policy is as the TTL counts it: its age
// when it arrived plus the time in touch with etcd since. mu is held.
func (c *Cache) policyAge(service string, pol *api.Policy, now time.Time) time.Duration {
	a, ok := c.ages[service]
	if !ok || a.computedAtMs != pol.ComputedAtMs {
		return c.touchAge(pol, now)
	}
	return a.age + c.touchClock(now) - a.clock
}

// expirePolicies rebuilds the services whose policy just grew too old.
func (c *Cache) expirePolicies() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for service, pol := range c.policies {
		c.smu.RLock()
		s := c.snaps[service]
		c.smu.RUnlock()
		if s != nil && s.PolicyAtMs == pol.ComputedAtMs && c.policyAge(service, pol, now) > c.policyTTL {
			c.rebuild(service)
		}
	}
}

// registryMirror and policyMirror feed the cache from two etcd prefixes.
type registryMirror struct{ c *Cache }
type policyMirror struct{ c *Cache }

var (
	_ etcdx.MirrorHandler = registryMirror{}
	_ etcdx.MirrorHandler = policyMirror{}
)

// Reset implements etcdx.MirrorHandler for registry/{service}/{instance}.
func (m registryMirror) Reset(kvs []etcdx.Event, _ int64) {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.regs
	c.regs = map[string]map[string]api.Registration{}
	for _, kv := range kvs {
		m.put(kv.Key, kv.Value, false)
	}
	for service, regs := range old {
		for instance, r := range regs {
			if _, listed := c.regs[service][instance]; !listed && m.doom(service, instance) {
				if c.regs[service] == nil {
					c.regs[service] = map[string]api.Registration{}
				}
				c.regs[service][instance] = r
			}
		}
	}
	c.rebuildAll(old)
}

// doom holds the delete of service's instance when this replica keeps it
// alive (see Cache.keptAlive): it is applied after deleteGrace unless the
// registration is written again meanwhile. false when the delete is to be
// applied now. mu is held.
func (m registryMirror) doom(service, instance string) bool {
	c := m.c
	if c.keptAlive == nil || !c.keptAlive(service, instance) {
		return false
	}
	key := service + "/" + instance
	if c.doomed[key] != nil {
		return true
	}
	var t *time.Timer
	t = time.AfterFunc(c.deleteGrace, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.doomed[key] != t {
			return // written again, or doomed anew
		}
		delete(c.doomed, key)
		if regs := c.regs[service]; regs != nil {
			delete(regs, instance)
			if len(regs) == 0 {
				delete(c.regs, service)
			}
			c.changed(service)
		}
	})
	c.doomed[key] = t
	c.log.Info("registration deleted from etcd while kept alive here (a lost session's lease); holding it until it is written again",
		"service", service, "instance", instance, "grace", c.deleteGrace)
	return true
}

// spare cancels the held delete of service's instance: it was written
// again. mu is held.
func (m registryMirror) spare(service, instance string) {
	key := service + "/" + instance
	if t := m.c.doomed[key]; t != nil {
		t.Stop()
		delete(m.c.doomed, key)
	}
}

// Apply implements etcdx.MirrorHandler.
func (m registryMirror) Apply(events []etcdx.Event, _ int64) {
	m.c.applyRegistrations(events, func(ev etcdx.Event) string { return m.put(ev.Key, ev.Value, ev.Deleted) })
}

// applyRegistrations applies registry events with put, which names the
// service each one touched, and rebuilds each touched service once.
func (c *Cache) applyRegistrations(events []etcdx.Event, put func(etcdx.Event) string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	touched := map[string]bool{}
	for _, ev := range events {
		if s := put(ev); s != "" {
			touched[s] = true
		}
	}
	for s := range touched {
		c.changed(s)
	}
}

func (m registryMirror) put(key string, value []byte, deleted bool) string {
	service, instance, ok := strings.Cut(key, "/")
	if !ok {
		return ""
	}
	regs := m.c.regs[service]
	if deleted {
		if _, ok := regs[instance]; ok && m.doom(service, instance) {
			return ""
		}
		delete(regs, instance)
		if len(regs) == 0 {
			delete(m.c.regs, service)
		}
		return service
	}
	var r api.Registration
	if err := json.Unmarshal(value, &r); err != nil {
		m.c.log.Warn("ignoring a malformed registration", "key", key, "err", err)
		return ""
	}
	if regs == nil {
		regs = map[string]api.Registration{}
		m.c.regs[service] = regs
	}
	regs[instance] = r
	m.spare(service, instance)
	return service
}

// Reset implements etcdx.MirrorHandler for policy/{service}.
func (m policyMirror) Reset(kvs []etcdx.Event, _ int64) {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.policies = map[string]*api.Policy{}
	for _, kv := range kvs {
		m.put(kv.Key, kv.Value, false)
	}
	for service := range c.ages {
		if c.policies[service] == nil {
			delete(c.ages, service)
		}
	}
	c.rebuildAll(nil)
}

// Apply implements etcdx.MirrorHandler.
func (m policyMirror) Apply(events []etcdx.Event, _ int64) {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range events {
		m.put(ev.Key, ev.Value, ev.Deleted)
		c.changed(ev.Key)
	}
}

func (m policyMirror) put(service string, value []byte, deleted bool) {
	if deleted {
		delete(m.c.policies, service)
		delete(m.c.ages, service)
		return
	}
	var p api.Policy
	if err := json.Unmarshal(value, &p); err != nil {
		m.c.log.Warn("ignoring a malformed policy", "service", service, "err", err)
		return
	}
	m.c.policies[service] = &p
	m.c.arrived(service, &p)
}

// rebuildAll rebuilds every service known now or before; mu is held.
func (c *Cache) rebuildAll(before map[string]map[string]api.Registration) {
	services := map[string]bool{}
	for s := range c.regs {
		services[s] = true
	}
	for s := range c.kitex {
		services[s] = true
	}
	for s := range c.policies {
		services[s] = true
	}
	for s := range c.imports {
		services[s] = true
	}
	for s := range before {
		services[s] = true
	}
	c.smu.RLock()
	for s := range c.snaps {
		services[s] = true
	}
	c.smu.RUnlock()
	for s := range services {
		c.rebuild(s)
	}
}

// kitexRegistryMirror lists what kitex-contrib/registry-etcd registers at
// {prefix}/{service}/{address}, read-only.
type kitexRegistryMirror struct{ c *Cache }

var _ etcdx.MirrorHandler = kitexRegistryMirror{}

// kitexInstance is registry-etcd's value.
type kitexInstance struct {
	Network string            `json:"network"`
	Address string            `json:"address"`
	Weight  int               `json:"weight"`
	Tags    map[string]string `json:"tags"`
}

// Reset implements etcdx.MirrorHandler.
func (m kitexRegistryMirror) Reset(kvs []etcdx.Event, _ int64) {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.kitex
	c.kitex = map[string]map[string]api.Registration{}
	for _, kv := range kvs {
		m.put(kv)
	}
	c.rebuildAll(before)
}

// Apply implements etcdx.MirrorHandler.
func (m kitexRegistryMirror) Apply(events []etcdx.Event, _ int64) {
	m.c.applyRegistrations(events, m.put)
}

func (m kitexRegistryMirror) put(ev etcdx.Event) string {
	service, addr, ok := strings.Cut(ev.Key, "/")
	if !ok || service == "" || addr == "" {
		return ""
	}
	if ev.Deleted {
		delete(m.c.kitex[service], addr)
		if len(m.c.kitex[service]) == 0 {
			delete(m.c.kitex, service)
		}
		return service
	}
	var ki kitexInstance
	if err := json.Unmarshal(ev.Value, &ki); err != nil || ki.Address == "" {
		m.c.log.Warn("ignoring a malformed kitex registry entry", "key", ev.Key, "err", err)
		return ""
	}
	if m.c.kitex[service] == nil {
		m.c.kitex[service] = map[string]api.Registration{}
	}
	m.c.kitex[service][addr] = api.Registration{Service: service, Instance: addr, Addr: ki.Address,
		StaticWeight: int32(min(max(ki.Weight, 1), 1000)), Metadata: ki.Tags}
	return service
}
