// Package kitexsdk plugs Sextant into Kitex the way Kitex is extended: a
// discovery.Resolver fed by mesh-core, a load balancer that picks with
// sdk.HybridPicker (central weights choose two candidates, this client's
// latency and in-flight count decide) and client middleware that reports
// calls (ClientOptions), and a server suite that sheds low-priority requests
// under overload, applies access rules and reports what the server sees
// (ServerSuite).
//
// Request priority travels in the Kitex metainfo key x-sextant-priority
// (sdk.PriorityKey) over TTHeader, which both option sets turn on; set it
// with WithPriority.
package kitexsdk

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/loadbalance/lbcache"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/pkg/transmeta"
	"github.com/cloudwego/kitex/server"
	"github.com/cloudwego/kitex/transport"

	"github.com/sextant-mesh/sextant/sdk"
)

// InstanceTag is the Kitex instance tag holding the Sextant instance id.
const InstanceTag = "sextant_instance"

// ShedCode is the biz status code of a request shed by overload admission
// (retryable); DeniedCode that of one an access rule blocks.
const (
	ShedCode   int32 = 503
	DeniedCode int32 = 403
)

// WithPriority sets the priority (0..127) of the calls made with ctx.
func WithPriority(ctx context.Context, p int32) context.Context {
	return metainfo.WithValue(ctx, sdk.PriorityKey, strconv.Itoa(int(p)))
}

// Resolver resolves a Kitex service name to the instances mesh-core lists,
// weighted by their dynamic weights. Ejected instances are left out; with no
// answer from mesh-core yet, the static instances given to Watch are used.
type Resolver struct {
	d      *sdk.Discovery
	static map[string][]sdk.Instance
}

var _ discovery.Resolver = (*Resolver)(nil)

// NewResolver resolves through d; static are per-service fallbacks.
func NewResolver(d *sdk.Discovery, static map[string][]sdk.Instance) *Resolver {
	return &Resolver{d: d, static: static}
}

// Target implements discovery.Resolver: the service name, which it starts watching.
func (r *Resolver) Target(_ context.Context, target rpcinfo.EndpointInfo) string {
	name := target.ServiceName()
	r.d.Watch(name, r.static[name], nil)
	return name
}

// Resolve implements discovery.Resolver.
func (r *Resolver) Resolve(_ context.Context, desc string) (discovery.Result, error) {
	snap, ok := r.d.Get(desc)
	if !ok {
		return discovery.Result{}, kerrors.ErrNoMoreInstance
	}
	res := discovery.Result{Cacheable: true, CacheKey: desc}
	for _, in := range snap.Instances {
		w := int(in.Weight)
		if snap.Version == 0 && w <= 0 { // static instances without a weight: equal
			w = 1
		}
		if w <= 0 || (snap.Version != 0 && !in.Healthy) {
			continue
		}
		res.Instances = append(res.Instances, discovery.NewInstance("tcp", in.Addr, w, map[string]string{InstanceTag: in.Instance}))
	}
	if len(res.Instances) == 0 {
		for _, in := range snap.Instances { // never nothing: all, equal
			res.Instances = append(res.Instances, discovery.NewInstance("tcp", in.Addr, 1, map[string]string{InstanceTag: in.Instance}))
		}
	}
	return res, nil
}

// Diff implements discovery.Resolver.
func (r *Resolver) Diff(cacheKey string, prev, next discovery.Result) (discovery.Change, bool) {
	return discovery.DefaultDiff(cacheKey, prev, next)
}

// Name implements discovery.Resolver.
func (r *Resolver) Name() string { return "sextant" }

// ClientOptions are the options a Kitex client of service needs: discovery
// through mesh-core re-read every second, a new hybrid LoadBalancer (see
// NewHybridBalancer) with its Middleware, TTHeader for priorities, and call
// reporting (rep may be nil). WithLoadBalancer replaces the balancer.
func ClientOptions(service string, d *sdk.Discovery, rep *sdk.Reporter, static []sdk.Instance, opts ...Option) []client.Option {
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.lb == nil {
		o.lb = NewHybridBalancer(sdk.HybridOptions{})
	}
	out := []client.Option{
		client.WithResolver(NewResolver(d, map[string][]sdk.Instance{service: static})),
		client.WithLoadBalancer(o.lb, &lbcache.Options{RefreshInterval: time.Second, ExpireInterval: time.Minute}),
		client.WithTransportProtocol(transport.TTHeader),
		client.WithMetaHandler(transmeta.ClientTTHeaderHandler),
		client.WithMiddleware(CallReporter(service, rep)),
	}
	if lb, ok := o.lb.(*LoadBalancer); ok {
		out = append(out, client.WithMiddleware(lb.Middleware()))
	}
	return out
}

// Option changes what ClientOptions sets up.
type Option func(*clientOptions)

type clientOptions struct{ lb loadbalance.Loadbalancer }

// WithLoadBalancer makes ClientOptions balance with lb: for instance
// loadbalance.NewWeightedRoundRobinBalancer(), Kitex's plain weighted round
// robin over the same weights, or NewLoadBalancer with another sdk.Balancer
// (whose Middleware ClientOptions then adds).
func WithLoadBalancer(lb loadbalance.Loadbalancer) Option {
	return func(o *clientOptions) { o.lb = lb }
}

// CallReporter is client middleware that reports every call to the callee
// instance it went to.
func CallReporter(service string, rep *sdk.Reporter) endpoint.Middleware {
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req, resp any) error {
			start := time.Now()
			err := next(ctx, req, resp)
			if rep == nil {
				return err
			}
			ri := rpcinfo.GetRPCInfo(ctx)
			if ri == nil || ri.To() == nil {
				return err
			}
			instance, ok := ri.To().Tag(InstanceTag)
			if !ok {
				if a := ri.To().Address(); a != nil {
					instance = a.String()
				}
			}
			if instance != "" {
				rep.RecordCall(service, instance, time.Since(start), err != nil, errors.Is(err, kerrors.ErrRPCTimeout))
			}
			return err
		}
	}
}

// ServerSuite is the server side: admission (overload shedding, access
// rules, optional concurrency bound) and reporting, with TTHeader.
type ServerSuite struct{ gate *sdk.Gate }

var _ server.Suite = ServerSuite{}

// NewServerSuite admits through gate.
func NewServerSuite(gate *sdk.Gate) ServerSuite { return ServerSuite{gate: gate} }

// Options implements server.Suite.
func (s ServerSuite) Options() []server.Option {
	return []server.Option{
		server.WithMetaHandler(transmeta.ServerTTHeaderHandler),
		server.WithMiddleware(s.admit),
	}
}

// DefaultPriority is the priority of a request that carries none.
var DefaultPriority int32 = 64

func (s ServerSuite) admit(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp any) error {
		arrived := time.Now()
		v, _ := metainfo.GetValue(ctx, sdk.PriorityKey)
		caller, method := "", ""
		if ri := rpcinfo.GetRPCInfo(ctx); ri != nil {
			if ri.From() != nil {
				caller = ri.From().ServiceName()
			}
			if ri.Invocation() != nil {
				method = ri.Invocation().MethodName()
			}
		}
		a, err := s.gate.Enter(ctx, arrived, sdk.ParsePriority(v, DefaultPriority), caller, method)
		switch {
		case errors.Is(err, sdk.ErrShed):
			return bizError(ctx, ShedCode, err)
		case errors.Is(err, sdk.ErrDenied):
			return bizError(ctx, DeniedCode, err)
		case err != nil:
			return err
		}
		defer a.Done()
		return next(ctx, req, resp)
	}
}

// bizError answers with a Kitex biz status (carried in TTHeader, so that the
// caller can tell a shed request from a failure), the way Kitex answers a
// handler's biz error.
func bizError(ctx context.Context, code int32, err error) error {
	bse := kerrors.NewBizStatusError(code, err.Error())
	if ri := rpcinfo.GetRPCInfo(ctx); ri != nil {
		if setter, ok := ri.Invocation().(rpcinfo.InvocationSetter); ok {
			setter.SetBizStatusErr(bse)
			return nil
		}
	}
	return bse
}

// IsShed tells whether err is a request shed by overload admission.
func IsShed(err error) bool {
	if bse, ok := kerrors.FromBizStatusError(err); ok {
		return bse.BizStatusCode() == ShedCode
	}
	return false
}
