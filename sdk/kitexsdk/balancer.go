package kitexsdk

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/rpcinfo"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// LoadBalancer is a Kitex load balancer that picks through a Sextant
// sdk.Balancer, by default an sdk.HybridPicker. Kitex asks for a picker on
// every request, so it keeps one sdk.Balancer per discovery target (the
// Result's CacheKey) for what it learns of each instance to last; a Result
// that is not cacheable gets a new one each time. The Balancer sees the
// Result's instances as healthy, weighted by Instance.Weight(), identified
// by their InstanceTag tag (else their address).
//
// The client needs Middleware too (ClientOptions adds it): it is what tells
// the Balancer how each attempt went; without it in-flight counts only grow.
type LoadBalancer struct {
	newBalancer func() sdk.Balancer
	units       *sdk.UnitRouter

	mu      sync.Mutex // serializes newBalancer and target creation
	targets sync.Map   // Result.CacheKey -> *target
}

var (
	_ loadbalance.Loadbalancer = (*LoadBalancer)(nil)
	_ loadbalance.Rebalancer   = (*LoadBalancer)(nil)
)

// NewLoadBalancer balances with an sdk.Balancer per target made by
// newBalancer; nil means NewHybridBalancer's default.
func NewLoadBalancer(newBalancer func() sdk.Balancer) *LoadBalancer {
	if newBalancer == nil {
		return NewHybridBalancer(sdk.HybridOptions{})
	}
	return &LoadBalancer{newBalancer: newBalancer}
}

// NewHybridBalancer balances with an sdk.HybridPicker per target, made with
// o. A given o.Rand only seeds each target's own generator, since a
// rand.Rand is not safe for concurrent use.
func NewHybridBalancer(o sdk.HybridOptions) *LoadBalancer {
	seed := o.Rand
	return NewLoadBalancer(func() sdk.Balancer {
		o := o
		if seed != nil {
			o.Rand = rand.New(rand.NewPCG(seed.Uint64(), seed.Uint64()))
		}
		return sdk.NewHybridPicker(o)
	})
}

// WithUnits makes lb apply the callees' unit_routing rules that r holds:
// each target's balancers are an sdk.UnitBalancer over newBalancer's, and
// each request picks in its unit, by its method and metainfo (a request
// its rules refuse gets no instance: Kitex fails it as it does when a
// service has none). Call it before the client is built.
func (lb *LoadBalancer) WithUnits(r *sdk.UnitRouter) *LoadBalancer {
	lb.units = r
	return lb
}

// balancerFor makes the Balancer of the target whose cache key is key:
// Kitex's lbcache keys a target by the resolver's name and the service
// ("sextant:orders").
func (lb *LoadBalancer) balancerFor(key string) sdk.Balancer {
	if lb.units != nil {
		return sdk.NewUnitBalancer(strings.TrimPrefix(key, (*Resolver)(nil).Name()+":"), lb.units, lb.newBalancer)
	}
	return lb.newBalancer()
}

// Name implements loadbalance.Loadbalancer.
func (lb *LoadBalancer) Name() string { return "sextant" }

// GetPicker implements loadbalance.Loadbalancer.
func (lb *LoadBalancer) GetPicker(res discovery.Result) loadbalance.Picker {
	t := lb.target(res)
	t.apply(res.Instances)
	return t
}

func (lb *LoadBalancer) target(res discovery.Result) *target {
	if res.Cacheable {
		if v, ok := lb.targets.Load(res.CacheKey); ok {
			return v.(*target)
		}
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if !res.Cacheable {
		return &target{b: lb.balancerFor(res.CacheKey)}
	}
	if v, ok := lb.targets.Load(res.CacheKey); ok {
		return v.(*target)
	}
	t := &target{b: lb.balancerFor(res.CacheKey)}
	lb.targets.Store(res.CacheKey, t)
	return t
}

// Rebalance implements loadbalance.Rebalancer: nothing to do, GetPicker
// sees the new Result on the next request.
func (lb *LoadBalancer) Rebalance(discovery.Change) {}

// Delete implements loadbalance.Rebalancer: Kitex dropped an idle target.
func (lb *LoadBalancer) Delete(ch discovery.Change) { lb.targets.Delete(ch.Result.CacheKey) }

// target is one discovery target's balancer and the Result it was last fed.
type target struct {
	b sdk.Balancer

	mu      sync.RWMutex // Update and the id lookup after Pick see the same instances
	applied []discovery.Instance
	byID    map[string]discovery.Instance
	version int64
}

// apply feeds b the instances when they are not the ones it has. lbcache
// stores a new Result on every refresh, so the slice's identity tells.
func (t *target) apply(insts []discovery.Instance) {
	t.mu.RLock()
	same := sameSlice(t.applied, insts)
	t.mu.RUnlock()
	if same {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if sameSlice(t.applied, insts) {
		return
	}
	t.version++
	snap := &sdk.Snapshot{Discovery: api.Discovery{Version: t.version, Instances: make([]sdk.Instance, 0, len(insts))}}
	byID := make(map[string]discovery.Instance, len(insts))
	for _, in := range insts {
		id := instanceID(in)
		addr := ""
		if a := in.Address(); a != nil {
			addr = a.String()
		}
		w := int32(min(max(in.Weight(), 0), math.MaxInt32))
		si := sdk.Instance{Instance: id, Addr: addr, Weight: w, StaticWeight: w, Healthy: true}
		si.Cluster, _ = in.Tag(ClusterTag)
		si.Zone, _ = in.Tag(ZoneTag)
		if md, ok := in.Tag(MetadataTag); ok {
			_ = json.Unmarshal([]byte(md), &si.Metadata)
		}
		snap.Instances = append(snap.Instances, si)
		byID[id] = in
	}
	t.b.Update(snap)
	t.applied, t.byID = insts, byID
}

func sameSlice(a, b []discovery.Instance) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func instanceID(in discovery.Instance) string {
	if id, ok := in.Tag(InstanceTag); ok && id != "" {
		return id
	}
	if a := in.Address(); a != nil {
		return a.String()
	}
	return ""
}

// Next implements loadbalance.Picker. Kitex calls it once per attempt, and
// tries again within a call only after a retryable error (no connection, or
// a circuit breaker's refusal), so a new pick settles the previous attempt
// of the call as failed.
func (t *target) Next(ctx context.Context, _ any) discovery.Instance {
	now := time.Now()
	c, _ := ctx.Value(callKey{}).(*call)
	if c != nil {
		c.settle(now, true)
	}
	t.mu.RLock()
	var in sdk.Instance
	var err error
	if rb, ok := t.b.(sdk.RequestBalancer); ok {
		f := sdk.UnitFeatures{Header: func(k string) string { return metainfoValue(ctx, k) }}
		if ri := rpcinfo.GetRPCInfo(ctx); ri != nil && ri.To() != nil {
			f.Method = ri.To().Method()
		}
		in, err = rb.PickFor(f)
		if err != nil && c != nil {
			c.refuse(err) // the Middleware returns it with Kitex's error
		}
	} else {
		in, err = t.b.Pick()
	}
	var picked discovery.Instance
	if err == nil {
		picked = t.byID[in.Instance]
	}
	t.mu.RUnlock()
	if err != nil {
		return nil
	}
	if picked == nil { // cannot happen: Update and byID change together
		t.b.Done(in.Instance, 0, true)
		return nil
	}
	if c != nil {
		c.start(t.b, in.Instance, now)
	}
	return picked
}

type callKey struct{}

// call is the attempt of one call still waiting for its outcome.
type call struct {
	mu      sync.Mutex
	refused error // why unit routing gave no instance
	pending bool
	b       sdk.Balancer
	id      string
	at      time.Time
}

func (c *call) start(b sdk.Balancer, id string, at time.Time) {
	c.mu.Lock()
	c.pending, c.b, c.id, c.at = true, b, id, at
	c.mu.Unlock()
}

func (c *call) refuse(err error) {
	c.mu.Lock()
	c.refused = err
	c.mu.Unlock()
}

func (c *call) settle(now time.Time, failed bool) {
	c.mu.Lock()
	pending, b, id, at := c.pending, c.b, c.id, c.at
	c.pending, c.b = false, nil
	c.mu.Unlock()
	if pending {
		b.Done(id, now.Sub(at), failed)
	}
}

// Middleware is client middleware that reports every attempt of a call to
// the sdk.Balancer that picked its instance, exactly once: its latency from
// the pick, failed when it is followed by another attempt, or, for the last
// one, when the call returns an error or the callee shed it (biz status
// ShedCode). Attempts a circuit breaker refused count as failed too, so
// in-flight counts return to zero whatever happens. Kitex's own retries
// (retry policies, backup requests) each pass through it. For a streaming
// call the outcome is that of opening the stream.
func (lb *LoadBalancer) Middleware() endpoint.Middleware {
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req, resp any) (err error) {
			c := new(call)
			returned := false
			defer func() { c.settle(time.Now(), !returned || err != nil || shedByCallee(ctx)) }()
			err = next(context.WithValue(ctx, callKey{}, c), req, resp)
			returned = true
			if err != nil {
				c.mu.Lock()
				refused := c.refused
				c.mu.Unlock()
				if refused != nil {
					err = fmt.Errorf("%w (%w)", err, refused)
				}
			}
			return err
		}
	}
}

// shedByCallee: a shed request answers with a biz status, which Kitex turns
// into the call's error only outside the middlewares.
func shedByCallee(ctx context.Context) bool {
	ri := rpcinfo.GetRPCInfo(ctx)
	if ri == nil || ri.Invocation() == nil {
		return false
	}
	bse := ri.Invocation().BizStatusErr()
	return bse != nil && bse.BizStatusCode() == ShedCode
}
