package center

import (
	"encoding/json"
	"hash/fnv"
	"slices"
	"strings"
	"sync"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// view is the in-memory copy of configs, pins and dynamic policies, mirrored
// from etcd, that the list, the watch and the Kitex copies are computed from.
// Every change closes the current changed channel and opens a new one.
type view struct {
	mu       sync.RWMutex
	configs  map[string]api.Entry       // by path under config/
	pins     map[string][]api.Pin       // by service
	policies map[string]json.RawMessage // by service
	changed  chan struct{}
}

func newView() *view {
	return &view{configs: map[string]api.Entry{}, pins: map[string][]api.Pin{}, policies: map[string]json.RawMessage{}, changed: make(chan struct{})}
}

// Changed is closed at the next change.
func (v *view) Changed() <-chan struct{} {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.changed
}

func (v *view) notify() {
	close(v.changed)
	v.changed = make(chan struct{})
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
	var out []api.Entry
	for path, e := range v.configs {
		r, ok := refOf(path)
		if !ok {
			continue
		}
		if (r.Client == "" && r.Server == service) || r.Client == service {
			out = append(out, e)
		}
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

// Policy returns the dynamic policy of service as mesh-core stored it.
func (v *view) Policy(service string) json.RawMessage {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.policies[service]
}

// mirrorOf adapts one etcd prefix to the view.
type mirrorOf struct {
	v   *view
	put func(v *view, ev etcdx.Event) // an empty key clears
}

var _ etcdx.MirrorHandler = mirrorOf{}

func (m mirrorOf) Reset(kvs []etcdx.Event, _ int64) {
	m.v.mu.Lock()
	defer m.v.mu.Unlock()
	m.put(m.v, etcdx.Event{})
	for _, kv := range kvs {
		m.put(m.v, kv)
	}
	m.v.notify()
}

func (m mirrorOf) Apply(events []etcdx.Event, _ int64) {
	m.v.mu.Lock()
	defer m.v.mu.Unlock()
	for _, ev := range events {
		m.put(m.v, ev)
	}
	m.v.notify()
}

func putConfig(v *view, ev etcdx.Event) {
	switch {
	case ev.Key == "":
		v.configs = map[string]api.Entry{}
	case ev.Deleted:
		delete(v.configs, ev.Key)
	default:
		var e api.Entry
		if json.Unmarshal(ev.Value, &e) == nil {
			e.Revision = ev.ModRevision
			v.configs[ev.Key] = e
		}
	}
}

func putPins(v *view, ev etcdx.Event) {
	switch {
	case ev.Key == "":
		v.pins = map[string][]api.Pin{}
	case ev.Deleted:
		delete(v.pins, ev.Key)
	default:
		var ps []api.Pin
		if json.Unmarshal(ev.Value, &ps) == nil {
			v.pins[ev.Key] = ps
		}
	}
}

func putPolicy(v *view, ev etcdx.Event) {
	switch {
	case ev.Key == "":
		v.policies = map[string]json.RawMessage{}
	case ev.Deleted:
		delete(v.policies, ev.Key)
	default:
		v.policies[ev.Key] = json.RawMessage(ev.Value)
	}
}

// bucket places an instance in [0, 100) by a stable hash of its id, so that
// the same instances stay in a canary as its percentage grows.
func bucket(instance string) int {
	h := fnv.New32a()
	h.Write([]byte(instance))
	return int(h.Sum32() % 100)
}

// effective decides what instance of service applies of e.
func effective(e api.Entry, service, instance string, pins []api.Pin) api.Effective {
	for _, p := range pins {
		if p.Kind == e.Kind && p.Scope == e.Scope {
			return api.Effective{Kind: e.Kind, Scope: e.Scope, Revision: p.Revision, Source: "pinned", Document: p.Document}
		}
	}
	if ro := e.Rollout; ro != nil {
		if bucket(instance) < ro.Percent {
			return api.Effective{Kind: e.Kind, Scope: e.Scope, Revision: e.Revision, Source: "canary", Document: e.Document}
		}
		return api.Effective{Kind: e.Kind, Scope: e.Scope, Revision: ro.PreviousRevision, Source: "previous", Document: ro.Previous}
	}
	return api.Effective{Kind: e.Kind, Scope: e.Scope, Revision: e.Revision, Source: "current", Document: e.Document}
}
