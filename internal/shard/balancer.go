// Package shard decides which weight-calculator shard owns which service, and
// keeps the list of shards in etcd.
//
// Ownership uses rendezvous (highest random weight) hashing on the service
// name. Kitex's own consistent-hash balancer seeds its hash per process
// (hash/maphash), so two mixers, or a mixer and a calculator, would disagree
// on owners; this balancer is deterministic across processes, and it is a
// Kitex loadbalance.Loadbalancer so any Kitex client can route with it.
package shard

import (
	"context"
	"math"

	"github.com/cespare/xxhash/v2"
	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/loadbalance"
)

// IDTag is the instance tag that names a shard; without it the address does.
const IDTag = "id"

type keyCtx struct{}

// WithKey returns a context whose requests the balancer routes by key.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyCtx{}, key)
}

// KeyFromContext is the KeyFunc for contexts made by WithKey.
func KeyFromContext(ctx context.Context, _ any) string {
	k, _ := ctx.Value(keyCtx{}).(string)
	return k
}

// Rendezvous is a Kitex load balancer that sends every request with the same
// key to the same instance, the same way in every process. When an instance
// leaves, only the keys it owned move; when one joins, it takes about 1/N of
// the keys. Instance weights scale the share of keys an instance owns.
type Rendezvous struct {
	key loadbalance.KeyFunc
}

var _ loadbalance.Loadbalancer = (*Rendezvous)(nil)

// NewRendezvous makes a balancer that reads each request's key with key.
func NewRendezvous(key loadbalance.KeyFunc) *Rendezvous { return &Rendezvous{key: key} }

// Name implements loadbalance.Loadbalancer.
func (b *Rendezvous) Name() string { return "sextant_rendezvous" }

// GetPicker implements loadbalance.Loadbalancer.
func (b *Rendezvous) GetPicker(res discovery.Result) loadbalance.Picker {
	p := &RendezvousPicker{key: b.key, nodes: make([]node, 0, len(res.Instances))}
	for _, ins := range res.Instances {
		if ins.Weight() <= 0 {
			continue
		}
		id, ok := ins.Tag(IDTag)
		if !ok || id == "" {
			id = ins.Address().String()
		}
		p.nodes = append(p.nodes, node{ins: ins, idHash: xxhash.Sum64String(id), weight: float64(ins.Weight())})
	}
	return p
}

type node struct {
	ins    discovery.Instance
	idHash uint64
	weight float64
}

// RendezvousPicker picks among a fixed set of instances.
type RendezvousPicker struct {
	key   loadbalance.KeyFunc
	nodes []node
}

var _ loadbalance.Picker = (*RendezvousPicker)(nil)

// Next implements loadbalance.Picker.
func (p *RendezvousPicker) Next(ctx context.Context, request any) discovery.Instance {
	return p.Pick(p.key(ctx, request))
}

// Pick returns the instance that owns key, or nil when there is none.
func (p *RendezvousPicker) Pick(key string) discovery.Instance {
	kh := xxhash.Sum64String(key)
	var best discovery.Instance
	bestScore := math.Inf(-1)
	for _, n := range p.nodes {
		// Weighted rendezvous: score = -w / ln(u), u uniform in (0, 1).
		u := (float64(mix(kh^n.idHash)>>11) + 0.5) / (1 << 53)
		score := -n.weight / math.Log(u)
		if score > bestScore {
			best, bestScore = n.ins, score
		}
	}
	return best
}

// mix is the splitmix64 finalizer: it spreads the bits of a combined hash.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
