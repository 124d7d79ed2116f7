package shard

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cloudwego/kitex/pkg/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// Shard is one weight-calculator as registered in etcd (the contract's type).
type Shard = api.Shard

// Membership is the live set of shards, mirrored from etcd. It keeps the last
// set it saw while etcd is away.
type Membership struct {
	mirror *etcdx.Mirror
	log    *slog.Logger

	mu     sync.Mutex // serializes Reset/Apply
	shards map[string]Shard
	view   atomic.Pointer[View]
}

// View is an immutable set of shards and the owner function over it.
type View struct {
	Shards []Shard // sorted by ID
	picker *RendezvousPicker
	byAddr map[string]Shard
}

// Owner returns the shard that owns service, false when there are no shards.
func (v *View) Owner(service string) (Shard, bool) {
	ins := v.picker.Pick(service)
	if ins == nil {
		return Shard{}, false
	}
	s, ok := v.byAddr[ins.Address().String()]
	return s, ok
}

// ShardAt returns the shard at addr, if the view holds one there.
func (v *View) ShardAt(addr string) (Shard, bool) {
	s, ok := v.byAddr[addr]
	return s, ok
}

// Has tells whether the view holds the shard with this id.
func (v *View) Has(id string) bool {
	_, ok := slices.BinarySearchFunc(v.Shards, id, func(s Shard, id string) int { return strings.Compare(s.ID, id) })
	return ok
}

// NewMembership follows shard registrations under the Sextant prefix.
func NewMembership(cli *clientv3.Client, prefix string, log *slog.Logger) *Membership {
	m := &Membership{shards: map[string]Shard{}, log: log}
	m.publish()
	m.mirror = etcdx.NewMirror(cli, api.Keys{Prefix: prefix}.Shards(), m, log)
	return m
}

// Run follows etcd until ctx ends.
func (m *Membership) Run(ctx context.Context) { m.mirror.Run(ctx) }

// Synced tells whether the view follows etcd right now.
func (m *Membership) Synced() bool { return m.mirror.Synced() }

// Listed tells whether the view was ever listed from etcd: before, it is
// empty for want of an answer, not because no shard is registered.
func (m *Membership) Listed() bool { return m.mirror.Revision() > 0 }

// View returns the current set of shards.
func (m *Membership) View() *View { return m.view.Load() }

// Reset implements etcdx.MirrorHandler.
func (m *Membership) Reset(kvs []etcdx.Event, _ int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.shards = map[string]Shard{}
	for _, kv := range kvs {
		m.put(kv.Key, kv.Value)
	}
	m.publish()
}

// Apply implements etcdx.MirrorHandler.
func (m *Membership) Apply(events []etcdx.Event, _ int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ev := range events {
		if ev.Deleted {
			delete(m.shards, ev.Key)
			continue
		}
		m.put(ev.Key, ev.Value)
	}
	m.publish()
}

func (m *Membership) put(key string, value []byte) {
	var s Shard
	if err := json.Unmarshal(value, &s); err != nil || s.Addr == "" {
		m.log.Warn("ignoring malformed shard registration", "key", key, "err", err)
		return
	}
	if s.ID == "" {
		s.ID = key
	}
	m.shards[key] = s
}

var balancer = NewRendezvous(KeyFromContext)

// NewView makes the view of a set of shards.
func NewView(shards []Shard) *View {
	v := &View{Shards: slices.Clone(shards), byAddr: make(map[string]Shard, len(shards))}
	slices.SortFunc(v.Shards, func(a, b Shard) int { return strings.Compare(a.ID, b.ID) })
	instances := make([]discovery.Instance, 0, len(shards))
	for _, s := range v.Shards {
		v.byAddr[s.Addr] = s
		instances = append(instances, discovery.NewInstance("tcp", s.Addr, 1, map[string]string{IDTag: s.ID}))
	}
	v.picker = balancer.GetPicker(discovery.Result{Instances: instances}).(*RendezvousPicker)
	return v
}

func (m *Membership) publish() {
	v := NewView(slices.Collect(maps.Values(m.shards)))
	if old := m.view.Load(); old == nil || !slices.Equal(old.Shards, v.Shards) {
		m.log.Info("calculator shards", "shards", len(v.Shards), "ids", ids(v.Shards))
	}
	m.view.Store(v)
}

func ids(shards []Shard) []string {
	out := make([]string, len(shards))
	for i, s := range shards {
		out[i] = s.ID
	}
	return out
}

// resolveAddr makes sure an address parses as host:port, for registration.
func resolveAddr(addr string) error {
	_, _, err := net.SplitHostPort(addr)
	return err
}
