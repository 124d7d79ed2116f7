package calculator

import (
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/overloadconf"
	"github.com/sextant-mesh/sextant/api/weightknobs"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// Knobs tune the weight and overload computation of one service (the
// config-center's calculator kind, docs/weights.md).
type Knobs = weightknobs.Knobs

// DefaultKnobs are the documented defaults.
func DefaultKnobs() Knobs { return weightknobs.Defaults() }

// ParseKnobs decodes a service's knobs over the defaults.
func ParseKnobs(data []byte) (Knobs, *api.FieldError) { return weightknobs.Parse(data) }

// KnobsKind is the config kind of a service's knobs (api.Keys.Config).
const KnobsKind = api.KindCalculator

// KnobStore follows every service's knobs in etcd: the calculator kind (raw
// knobs) and the config-center's overload kind (its document in force
// overrides the overload knobs it sets). Services without knobs, or with
// documents that do not validate, get the defaults.
type KnobStore struct {
	log      *slog.Logger
	mu       sync.Mutex
	byName   map[string]Knobs
	overload map[string]*overloadconf.Config
	view     atomic.Pointer[map[string]Knobs]
}

// NewKnobStore makes an empty store; feed it with an etcdx.Mirror of config/.
func NewKnobStore(log *slog.Logger) *KnobStore {
	s := &KnobStore{log: log, byName: map[string]Knobs{}, overload: map[string]*overloadconf.Config{}}
	s.publish()
	return s
}

// For returns the knobs of service.
func (s *KnobStore) For(service string) Knobs {
	if k, ok := (*s.view.Load())[service]; ok {
		return k
	}
	return DefaultKnobs()
}

// Reset implements etcdx.MirrorHandler.
func (s *KnobStore) Reset(kvs []etcdx.Event, _ int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byName = map[string]Knobs{}
	s.overload = map[string]*overloadconf.Config{}
	for _, kv := range kvs {
		s.put(kv.Key, kv.Value, false)
	}
	s.publish()
}

// Apply implements etcdx.MirrorHandler.
func (s *KnobStore) Apply(events []etcdx.Event, _ int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range events {
		s.put(ev.Key, ev.Value, ev.Deleted)
	}
	s.publish()
}

// put takes a key relative to config/: {service}/calculator or {service}/overload.
func (s *KnobStore) put(key string, value []byte, deleted bool) {
	service, kind, client, ok := api.ParseConfigPath(key)
	if !ok || client != "" {
		return
	}
	if kind == api.KindOverload {
		s.putOverload(service, value, deleted)
		return
	}
	if kind != KnobsKind {
		return
	}
	if deleted {
		delete(s.byName, service)
		return
	}
	doc, err := documentInForce(value)
	if err != nil {
		s.log.Warn("unreadable calculator knobs; using the defaults", "service", service, "err", err)
		delete(s.byName, service)
		return
	}
	k, fe := ParseKnobs(doc)
	if fe != nil {
		s.log.Warn("invalid calculator knobs; using the defaults", "service", service, "err", fe)
		delete(s.byName, service)
		return
	}
	s.byName[service] = k
}

// documentInForce is the document the calculator applies from a stored
// config: the config-center's entry (docs/config-center.md, storage), or
// bare knobs as written before the calculator kind was served (and by
// tests). A rollout is for data planes, which each fall on one side of
// it; the calculator serves the whole service, so it keeps the previous
// document until the rollout is promoted to everyone.
func documentInForce(value []byte) ([]byte, error) {
	var entry struct {
		Document json.RawMessage `json:"document"`
		Rollout  *api.Rollout    `json:"rollout"`
	}
	if err := json.Unmarshal(value, &entry); err != nil {
		return nil, err
	}
	switch {
	case entry.Document == nil:
		return value, nil
	case entry.Rollout != nil:
		return entry.Rollout.Previous, nil
	}
	return entry.Document, nil
}

// putOverload takes the config-center's entry of a service's overload
// config: its document in force (docs/config-center.md, storage).
func (s *KnobStore) putOverload(service string, value []byte, deleted bool) {
	if deleted {
		delete(s.overload, service)
		return
	}
	doc, err := documentInForce(value)
	if err != nil {
		s.log.Warn("unreadable overload config; using the defaults", "service", service, "err", err)
		delete(s.overload, service)
		return
	}
	c, fe := overloadconf.Parse(doc)
	if fe != nil {
		s.log.Warn("invalid overload config; using the defaults", "service", service, "err", fe)
		delete(s.overload, service)
		return
	}
	s.overload[service] = c
}

func (s *KnobStore) publish() {
	m := make(map[string]Knobs, len(s.byName)+len(s.overload))
	for k, v := range s.byName {
		m[k] = v
	}
	for service, c := range s.overload {
		k, ok := m[service]
		if !ok {
			k = DefaultKnobs()
		}
		set := func(dst *float64, v *float64) {
			if v != nil {
				*dst = *v
			}
		}
		set(&k.OverloadQueueTimeMs, c.QueueTimeMs)
		set(&k.OverloadCPU, c.CPU)
		set(&k.OverloadTimeoutRatio, c.TimeoutRatio)
		set(&k.ShedStep, c.ShedStep)
		set(&k.RecoverStep, c.RecoverStep)
		m[service] = k
	}
	s.view.Store(&m)
}
