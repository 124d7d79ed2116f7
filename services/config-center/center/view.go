package center

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// view is the in-memory copy of configs, pins and dynamic policies, mirrored
// from etcd, that the list, the watch and the Kitex copies are computed from.
//
// A change wakes only the watches it concerns, as etcd's watch fan-out
// does: each watch subscribes to topics (what applies to its service, the
// policy of each service it calls) with a channel of its own, and a change
// sends to the subscribers of its topics without blocking.
type view struct {
	mu       sync.RWMutex
	configs  map[string]api.Entry                // by path under config/
	applying map[string]map[string]bool          // service -> paths of the configs that apply to it
	pins     map[string][]api.Pin                // by service
	policies map[string]json.RawMessage          // by service
	subs     map[string]map[chan<- struct{}]bool // topic -> subscribers
}

func newView() *view {
	return &view{configs: map[string]api.Entry{}, applying: map[string]map[string]bool{}, pins: map[string][]api.Pin{},
		policies: map[string]json.RawMessage{}, subs: map[string]map[chan<- struct{}]bool{}}
}

// Topics of changes: what applies to a service (its configs and pins), and
// a service's dynamic policy.
func appliesTopic(service string) string { return "applies " + service }
func policyTopic(service string) string  { return "policy " + service }

// Subscribe makes ch receive (without blocking: give it room for one) at
// the next change of any of topics, until cancel.
func (v *view) Subscribe(topics []string, ch chan<- struct{}) (cancel func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, t := range topics {
		if v.subs[t] == nil {
			v.subs[t] = map[chan<- struct{}]bool{}
		}
		v.subs[t][ch] = true
	}
	return func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, t := range topics {
			delete(v.subs[t], ch)
			if len(v.subs[t]) == 0 {
				delete(v.subs, t)
			}
		}
	}
}

// wake tells the subscribers of topics (every subscriber when all); mu is held.
func (v *view) wake(topics map[string]bool, all bool) {
	for t, subs := range v.subs {
		if !all && !topics[t] {
			continue
		}
		for ch := range subs {
			select {
			case ch <- struct{}{}:
			default: // already told
			}
		}
	}
}

// PinsOf returns the pins of service.
func (v *view) PinsOf(service string) []api.Pin {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return slices.Clone(v.pins[service])
}

// refOf parses a path under the config directory (api.ConfigPath).
func refOf(path string) (Ref, bool) {
	server, kind, client, ok := api.ParseConfigPath(path)
	if !ok || Kinds[kind] == nil {
		return Ref{}, false
	}
	return Ref{Server: server, Kind: kind, Client: client}, true
}

// Applying lists the configs that apply to service: server-scoped ones of
// which it is the server, client-scoped ones of which it is the client.
func (v *view) Applying(service string) []api.Entry {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]api.Entry, 0, len(v.applying[service]))
	for path := range v.applying[service] {
		out = append(out, v.configs[path])
	}
	slices.SortFunc(out, func(a, b api.Entry) int { return strings.Compare(a.Kind+"/"+a.Scope, b.Kind+"/"+b.Scope) })
	return out
}

// Involving lists the configs that name service as server or client.
func (v *view) Involving(service string) []api.Entry {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []api.Entry
	for path, e := range v.configs {
		if r, ok := refOf(path); ok && (r.Server == service || r.Client == service) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b api.Entry) int { return strings.Compare(a.Kind+"/"+a.Scope, b.Kind+"/"+b.Scope) })
	return out
}

// All lists every config, sorted by kind and scope.
func (v *view) All() []api.Entry {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]api.Entry, 0, len(v.configs))
	for _, e := range v.configs {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b api.Entry) int { return strings.Compare(a.Kind+"/"+a.Scope, b.Kind+"/"+b.Scope) })
	return out
}

// Policy returns the dynamic policy of service as mesh-core stored it.
func (v *view) Policy(service string) json.RawMessage {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.policies[service]
}

// mirrorOf adapts one etcd prefix to the view.
type mirrorOf struct {
	v *view
	// put applies one event (an empty key clears everything) and names the
	// topic it changed ("" for none).
	put func(v *view, ev etcdx.Event) string
}

var _ etcdx.MirrorHandler = mirrorOf{}

func (m mirrorOf) Reset(kvs []etcdx.Event, _ int64) {
	m.v.mu.Lock()
	defer m.v.mu.Unlock()
	m.put(m.v, etcdx.Event{})
	for _, kv := range kvs {
		m.put(m.v, kv)
	}
	m.v.wake(nil, true)
}

func (m mirrorOf) Apply(events []etcdx.Event, _ int64) {
	m.v.mu.Lock()
	defer m.v.mu.Unlock()
	topics := map[string]bool{}
	for _, ev := range events {
		if t := m.put(m.v, ev); t != "" {
			topics[t] = true
		}
	}
	m.v.wake(topics, false)
}

func putConfig(v *view, ev etcdx.Event) string {
	if ev.Key == "" {
		v.configs, v.applying = map[string]api.Entry{}, map[string]map[string]bool{}
		return ""
	}
	r, ok := refOf(ev.Key)
	if !ok {
		return ""
	}
	service := r.appliedBy()
	if ev.Deleted {
		delete(v.configs, ev.Key)
		if delete(v.applying[service], ev.Key); len(v.applying[service]) == 0 {
			delete(v.applying, service)
		}
		return appliesTopic(service)
	}
	var e api.Entry
	if json.Unmarshal(ev.Value, &e) != nil {
		return ""
	}
	e.Revision = ev.ModRevision
	v.configs[ev.Key] = e
	if v.applying[service] == nil {
		v.applying[service] = map[string]bool{}
	}
	v.applying[service][ev.Key] = true
	return appliesTopic(service)
}

func putPins(v *view, ev etcdx.Event) string {
	switch {
	case ev.Key == "":
		v.pins = map[string][]api.Pin{}
		return ""
	case ev.Deleted:
		delete(v.pins, ev.Key)
	default:
		var ps []api.Pin
		if json.Unmarshal(ev.Value, &ps) != nil {
			return ""
		}
		v.pins[ev.Key] = ps
	}
	return appliesTopic(ev.Key)
}

func putPolicy(v *view, ev etcdx.Event) string {
	switch {
	case ev.Key == "":
		v.policies = map[string]json.RawMessage{}
		return ""
	case ev.Deleted:
		delete(v.policies, ev.Key)
	default:
		v.policies[ev.Key] = json.RawMessage(ev.Value)
	}
	return policyTopic(ev.Key)
}

// effective decides what instance of service applies of e.
func effective(e api.Entry, service, instance string, pins []api.Pin) api.Effective {
	return api.EffectiveOf(e, pins, func(percent int) bool { return api.RolloutBucket(instance) < percent })
}
