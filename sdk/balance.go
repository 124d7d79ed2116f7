package sdk

import (
	"errors"
	"iter"
	"sync"
)

// ErrNoInstance: the service has no instance to send a request to.
var ErrNoInstance = errors.New("sextant: no instance available")

// Picker picks instances in proportion to their weights with the smooth
// weighted round robin of nginx: over any run of sum(weights) picks each
// instance gets exactly its share, interleaved rather than in bursts.
// Ejected instances (weight 0, unhealthy) are skipped; when no instance has
// a dynamic weight they all count as equal. Safe for concurrent use.
type Picker struct {
	mu      sync.Mutex
	nodes   []pickNode
	version int64
}

type pickNode struct {
	inst    Instance
	weight  int64
	current int64
}

// Update replaces the instances with those of snap (a no-op when its
// version was applied already).
func (p *Picker) Update(snap *Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if snap.Version != 0 && snap.Version == p.version {
		return
	}
	p.version = snap.Version
	p.nodes = p.nodes[:0]
	for in, w := range Eligible(snap) {
		p.nodes = append(p.nodes, pickNode{inst: in, weight: w})
	}
}

// Eligible yields the instances of snap a request may go to, with their
// weights: from mesh-core, the healthy ones with a positive weight; from the
// static fallback (version 0), every instance, those given without a weight
// at weight 1. When none is eligible, every instance, equal: a balancer
// never picks from nothing. Every SDK balancer (and the Kitex resolver)
// picks by this one rule.
func Eligible(snap *Snapshot) iter.Seq2[Instance, int64] {
	return func(yield func(Instance, int64) bool) {
		any := false
		for _, in := range snap.Instances {
			w := int64(in.Weight)
			if snap.Version == 0 && w <= 0 {
				w = 1 // a static instance without a weight
			}
			if w <= 0 || !in.Healthy && snap.Version != 0 {
				continue // ejected
			}
			any = true
			if !yield(in, w) {
				return
			}
		}
		if any {
			return
		}
		for _, in := range snap.Instances {
			if !yield(in, 1) {
				return
			}
		}
	}
}

// Pick returns the next instance.
func (p *Picker) Pick() (Instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.nodes) == 0 {
		return Instance{}, ErrNoInstance
	}
	best := smoothNext(p.nodes, func(n *pickNode) *pickNode { return n })
	return p.nodes[best].inst, nil
}

// smoothNext is the next pick of nginx's smooth weighted round robin over
// items (their pickNode), which it advances: every weight is added to its
// node's score, the highest score wins and gives back the total.
func smoothNext[T any](items []T, node func(*T) *pickNode) int {
	var total int64
	best := -1
	for i := range items {
		n := node(&items[i])
		n.current += n.weight
		total += n.weight
		if best < 0 || n.current > node(&items[best]).current {
			best = i
		}
	}
	node(&items[best]).current -= total
	return best
}
