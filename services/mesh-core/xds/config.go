package xds

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/priorityrules"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// governanceStore follows the config-center's documents that xDS carries
// (rpc_timeout, retry and circuit_break of each caller and server, and the
// default priority of each server's priority_rules) and the pins, from
// mesh-core's mirrors of etcd. A node applies what an SDK instance of its
// id would (api.EffectiveOf): its service's pins, and during a rollout the
// new document if its node.id falls in the canary (api.RolloutBucket), the
// previous one otherwise.
//
// The nodes of one caller that are in the same canaries (the same class,
// classOf) see the same governance: a class is a node group of its own.
// Without rollouts every node of a caller is in class "".
type governanceStore struct {
	changed func(server, caller string)

	mu      sync.Mutex
	entries map[[2]string]map[string]*api.Entry // (server, caller) -> kind -> entry
	pins    map[string][]api.Pin                // by the service that applies them
	// gov is each pair's governance for class "" (outside every canary).
	gov map[[2]string]*Governance
	// rollouts are the rollouts each caller applies (not overridden by a pin).
	rollouts map[string][]rollout
	priority map[string]int32 // servers' default priority, when not DefaultPriority
	// onPriority is told of a server whose default priority changed (its
	// drop percentage is computed again).
	onPriority func(server string)
}

func newGovernanceStore(changed func(server, caller string)) *governanceStore {
	return &governanceStore{changed: changed, entries: map[[2]string]map[string]*api.Entry{},
		pins: map[string][]api.Pin{}, gov: map[[2]string]*Governance{}, priority: map[string]int32{},
		rollouts: map[string][]rollout{}}
}

// rollout is one running rollout of a caller: the server and kind of the
// config, and its percentage.
type rollout struct {
	server, kind string
	percent      int
}

func (r rollout) key() string { return r.server + "/" + r.kind }

// classOf is the class of caller's node nodeID: the rollouts (server/kind,
// sorted, comma-separated) whose canary it is in; "" when none.
func (g *governanceStore) classOf(caller, nodeID string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	rs := g.rollouts[caller]
	if len(rs) == 0 {
		return ""
	}
	b := api.RolloutBucket(nodeID)
	var in []string
	for _, r := range rs {
		if b < r.percent {
			in = append(in, r.key())
		}
	}
	return strings.Join(in, ",")
}

// view is caller's governance of server for its nodes of class (classOf);
// nil when none.
func (g *governanceStore) view(server, caller, class string) *Governance {
	if class == "" {
		return g.get(server, caller)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.build([2]string{server, caller}, class)
}

// build decodes the pair's documents as a node of class applies them; mu
// is held.
func (g *governanceStore) build(pair [2]string, class string) *Governance {
	in := map[string]bool{}
	for _, k := range strings.Split(class, ",") {
		in[k] = true
	}
	var gov *Governance
	for kind, e := range g.entries[pair] {
		if gov == nil {
			gov = &Governance{}
		}
		key := rollout{server: pair[0], kind: kind}.key()
		eff := api.EffectiveOf(*e, g.pins[pair[1]], func(int) bool { return in[key] })
		gov.Decode(kind, eff.Document)
	}
	if gov.empty() {
		return nil
	}
	return gov
}

// carried are the client-scoped kinds translated to xDS.
var carried = map[string]bool{api.KindRPCTimeout: true, api.KindRetry: true, api.KindCircuitBreak: true}

// get is caller's governance of server (nil when none).
func (g *governanceStore) get(server, caller string) *Governance {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gov[[2]string{server, caller}]
}

// defaultPriority is the business priority server gives requests its rules
// do not match: what its xDS callers' calls count as (DropPerMillion).
func (g *governanceStore) defaultPriority(server string) int32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.priority[server]; ok {
		return p
	}
	return DefaultPriority
}

// recompute builds the governance of a pair again, and its caller's
// rollouts, and says whether either changed (for any class); mu is held.
func (g *governanceStore) recompute(pair [2]string) bool {
	before := g.signature(pair)
	if gov := g.build(pair, ""); gov != nil {
		g.gov[pair] = gov
	} else {
		delete(g.gov, pair)
	}
	caller := pair[1]
	rs := slices.DeleteFunc(g.rollouts[caller], func(r rollout) bool { return r.server == pair[0] })
	for kind, e := range g.entries[pair] {
		if e.Rollout == nil {
			continue
		}
		if eff := api.EffectiveOf(*e, g.pins[caller], func(int) bool { return true }); eff.Source == api.SourcePinned {
			continue // pinned: every node applies the pin
		}
		rs = append(rs, rollout{server: pair[0], kind: kind, percent: e.Rollout.Percent})
	}
	slices.SortFunc(rs, func(a, b rollout) int { return strings.Compare(a.key(), b.key()) })
	if len(rs) == 0 {
		delete(g.rollouts, caller)
	} else {
		g.rollouts[caller] = rs
	}
	return g.signature(pair) != before
}

// signature is what the nodes of the pair's caller may see of it: its
// governance outside and inside the canaries, and the rollouts' percentages.
func (g *governanceStore) signature(pair [2]string) string {
	var canary []string
	for _, r := range g.rollouts[pair[1]] {
		if r.server == pair[0] {
			canary = append(canary, r.key())
		}
	}
	b, _ := json.Marshal([]any{g.gov[pair], g.build(pair, strings.Join(canary, ","))})
	return string(b) + fmt.Sprint(g.rollouts[pair[1]])
}

// ConfigMirror is the handler of mesh-core's mirror of the config prefix.
func (g *governanceStore) ConfigMirror() etcdx.MirrorHandler { return configMirror{g} }

// PinMirror is the handler of mesh-core's mirror of the pins prefix.
func (g *governanceStore) PinMirror() etcdx.MirrorHandler { return pinMirror{g} }

type configMirror struct{ g *governanceStore }

// Reset implements etcdx.MirrorHandler for config/{server}/{kind}[/{client}].
func (m configMirror) Reset(kvs []etcdx.Event, _ int64) {
	g := m.g
	g.mu.Lock()
	touched := map[[2]string]bool{}
	for pair := range g.entries {
		touched[pair] = true
	}
	servers := map[string]bool{}
	for s := range g.priority {
		servers[s] = true
	}
	g.entries, g.priority = map[[2]string]map[string]*api.Entry{}, map[string]int32{}
	for _, kv := range kvs {
		if pair, ok := m.put(kv); ok {
			touched[pair] = true
		} else if s := priorityServer(kv.Key); s != "" {
			servers[s] = true
		}
	}
	changed := g.recomputeAll(touched)
	g.mu.Unlock()
	m.tell(changed, servers)
}

// Apply implements etcdx.MirrorHandler.
func (m configMirror) Apply(events []etcdx.Event, _ int64) {
	g := m.g
	g.mu.Lock()
	touched, servers := map[[2]string]bool{}, map[string]bool{}
	for _, ev := range events {
		if pair, ok := m.put(ev); ok {
			touched[pair] = true
		} else if s := priorityServer(ev.Key); s != "" {
			servers[s] = true
		}
	}
	changed := g.recomputeAll(touched)
	g.mu.Unlock()
	m.tell(changed, servers)
}

func (m configMirror) tell(changed [][2]string, servers map[string]bool) {
	for _, pair := range changed {
		m.g.changed(pair[0], pair[1])
	}
	if m.g.onPriority != nil {
		for s := range servers {
			m.g.onPriority(s)
		}
	}
}

func priorityServer(key string) string {
	if server, kind, client, ok := api.ParseConfigPath(key); ok && kind == api.KindPriorityRules && client == "" {
		return server
	}
	return ""
}

// put records one event; ok is false for keys xDS does not carry (a
// priority_rules document is recorded, but reported as not carried). mu is held.
func (m configMirror) put(ev etcdx.Event) (pair [2]string, ok bool) {
	server, kind, client, parsed := api.ParseConfigPath(ev.Key)
	if !parsed {
		return pair, false
	}
	if kind == api.KindPriorityRules && client == "" {
		delete(m.g.priority, server)
		if !ev.Deleted {
			var e api.Entry
			if json.Unmarshal(ev.Value, &e) == nil {
				if d, fe := priorityrules.Decode(api.StockDocument(kind, server, &e, m.g.pins[server])); fe == nil && d.Default != nil {
					m.g.priority[server] = *d.Default
				}
			}
		}
		return pair, false
	}
	if !carried[kind] || client == "" {
		return pair, false
	}
	pair = [2]string{server, client}
	if ev.Deleted {
		delete(m.g.entries[pair], kind)
		if len(m.g.entries[pair]) == 0 {
			delete(m.g.entries, pair)
		}
		return pair, true
	}
	var e api.Entry
	if err := json.Unmarshal(ev.Value, &e); err != nil {
		return pair, false
	}
	e.Kind, e.Scope = kind, client+"/"+server // what pins name
	if m.g.entries[pair] == nil {
		m.g.entries[pair] = map[string]*api.Entry{}
	}
	m.g.entries[pair][kind] = &e
	return pair, true
}

// recomputeAll recomputes pairs and returns those that changed; mu is held.
func (g *governanceStore) recomputeAll(pairs map[[2]string]bool) [][2]string {
	var out [][2]string
	for pair := range pairs {
		if g.recompute(pair) {
			out = append(out, pair)
		}
	}
	return out
}

type pinMirror struct{ g *governanceStore }

// Reset implements etcdx.MirrorHandler for pins/{service}.
func (m pinMirror) Reset(kvs []etcdx.Event, _ int64) {
	g := m.g
	g.mu.Lock()
	services := map[string]bool{}
	for s := range g.pins {
		services[s] = true
	}
	g.pins = map[string][]api.Pin{}
	for _, kv := range kvs {
		m.put(kv)
		services[kv.Key] = true
	}
	changed := g.recomputeAll(g.pairsOf(services))
	g.mu.Unlock()
	configMirror(m).tell(changed, nil)
}

// Apply implements etcdx.MirrorHandler.
func (m pinMirror) Apply(events []etcdx.Event, _ int64) {
	g := m.g
	g.mu.Lock()
	services := map[string]bool{}
	for _, ev := range events {
		m.put(ev)
		services[ev.Key] = true
	}
	changed := g.recomputeAll(g.pairsOf(services))
	g.mu.Unlock()
	configMirror(m).tell(changed, nil)
}

func (m pinMirror) put(ev etcdx.Event) {
	if ev.Deleted || strings.Contains(ev.Key, "/") {
		delete(m.g.pins, ev.Key)
		return
	}
	var pins []api.Pin
	if json.Unmarshal(ev.Value, &pins) == nil {
		m.g.pins[ev.Key] = pins
	}
}

// pairsOf are the pairs whose caller is one of services; mu is held.
func (g *governanceStore) pairsOf(services map[string]bool) map[[2]string]bool {
	out := map[[2]string]bool{}
	for pair := range g.entries {
		if services[pair[1]] {
			out[pair] = true
		}
	}
	return out
}
