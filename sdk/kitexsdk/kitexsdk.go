// Package kitexsdk plugs Sextant into Kitex the way Kitex is extended: a
// discovery.Resolver fed by mesh-core, a load balancer that picks with
// sdk.HybridPicker (central weights choose two candidates, this client's
// latency and in-flight count decide) and client middleware that reports
// calls (ClientOptions), and a server suite that sheds low-priority requests
// under overload, applies access rules and reports what the server sees
// (ServerSuite).
//
// A request's priority (business and user, sdk.Priority) travels as
// persistent Kitex metainfo (x-sextant-priority, x-sextant-user-priority)
// over TTHeader, which both option sets turn on: set where the request
// enters the mesh (the server suite assigns it to a request that comes
// without one, or WithPriority), it goes with every call made with the
// handler's ctx. Answers carry the level the server admits
// (x-sextant-admit-level, a backward metainfo value); clients shed a request
// below it before sending it.
package kitexsdk

import (
	"context"
	"encoding/json"
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
	"github.com/cloudwego/kitex/pkg/stats"
	"github.com/cloudwego/kitex/pkg/transmeta"
	"github.com/cloudwego/kitex/server"
	"github.com/cloudwego/kitex/transport"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// InstanceTag is the Kitex instance tag holding the Sextant instance id.
const InstanceTag = "sextant_instance"

// Tags of the instance's cluster, zone and metadata (a JSON object), for
// the units of unit routing (LoadBalancer.WithUnits).
const (
	ClusterTag  = "sextant_cluster"
	ZoneTag     = "sextant_zone"
	MetadataTag = "sextant_metadata"
)

// ShedCode is the biz status code of a request shed by overload admission
// (retryable); DeniedCode that of one an access rule blocks.
const (
	ShedCode   int32 = 503
	DeniedCode int32 = 403
)

// WithPriority sets the business priority (0..127) of the calls made with
// ctx, keeping the user priority ctx carries (the highest when none).
func WithPriority(ctx context.Context, p int32) context.Context {
	ctx = sdk.WithBusinessPriority(PriorityContext(ctx), p)
	pr, _ := sdk.PriorityFrom(ctx)
	return ContextWithPriority(ctx, pr)
}

// ContextWithPriority is sdk.ContextWithPriority that also carries p as
// persistent Kitex metainfo, which Kitex clients send over TTHeader and
// Kitex servers pass on with the handler's ctx, with or without Sextant.
func ContextWithPriority(ctx context.Context, p sdk.Priority) context.Context {
	ctx = sdk.ContextWithPriority(ctx, p)
	ctx = metainfo.WithPersistentValue(ctx, sdk.PriorityKey, strconv.Itoa(int(p.Business)))
	return metainfo.WithPersistentValue(ctx, sdk.UserPriorityKey, strconv.Itoa(int(p.User)))
}

// PriorityContext makes the priority a Kitex request carries as metainfo
// readable with sdk.PriorityFrom (and ctx unchanged when it carries none, or
// already a priority value).
func PriorityContext(ctx context.Context) context.Context {
	if _, ok := sdk.PriorityFrom(ctx); ok {
		return ctx
	}
	if p, ok := sdk.ParsePriorities(metainfoValue(ctx, sdk.PriorityKey), metainfoValue(ctx, sdk.UserPriorityKey)); ok {
		return sdk.ContextWithPriority(ctx, p)
	}
	return ctx
}

// carryPriority puts the priority ctx carries on the wire as metainfo: a
// priority set without this package (by the Hertz adapter, or
// sdk.ContextWithPriority) travels on Kitex calls too. The context value
// wins over older metainfo.
func carryPriority(ctx context.Context) context.Context {
	p, ok := sdk.PriorityFrom(ctx)
	if !ok {
		return ctx
	}
	if b, _ := metainfo.GetPersistentValue(ctx, sdk.PriorityKey); b == strconv.Itoa(int(p.Business)) {
		if u, _ := metainfo.GetPersistentValue(ctx, sdk.UserPriorityKey); u == strconv.Itoa(int(p.User)) {
			return ctx
		}
	}
	return ContextWithPriority(ctx, p)
}

// metainfoValue is key's Kitex metainfo value in ctx: persistent (passed
// along the chain) or, failing that, transient (from the caller alone).
func metainfoValue(ctx context.Context, key string) string {
	v, ok := metainfo.GetPersistentValue(ctx, key)
	if !ok {
		v, _ = metainfo.GetValue(ctx, key)
	}
	return v
}

// Resolver resolves a Kitex service name to the instances mesh-core lists,
// weighted by their dynamic weights. Ejected instances are left out; with no
// answer from mesh-core yet, the static instances given to Watch are used.
type Resolver struct {
	d      *sdk.Discovery
	static map[string][]sdk.Instance
	enc    *Encryption // nil: every instance is dialed plaintext
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
	for in, w := range sdk.Eligible(snap) {
		tags := map[string]string{InstanceTag: in.Instance}
		if in.Cluster != "" {
			tags[ClusterTag] = in.Cluster
		}
		if in.Zone != "" {
			tags[ZoneTag] = in.Zone
		}
		if len(in.Metadata) > 0 {
			if b, err := json.Marshal(in.Metadata); err == nil {
				tags[MetadataTag] = string(b)
			}
		}
		if r.enc.advertises(desc, in) {
			tags[TLSTag] = in.Metadata[api.TLSMetadataKey]
		}
		res.Instances = append(res.Instances, discovery.NewInstance("tcp", in.Addr, int(w), tags))
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
//
// With a credential (d's Token, else $SEXTANT_TOKEN, else a
// service-account token file, sdk.WorkloadOf) whose config-center is known
// (a ConfigWatcher of the same credential made before, or
// $SEXTANT_CONFIG_CENTER: sdk.Workload.Active), the client dials mTLS on
// its own, with the workload's identity, to the instances that advertise it
// in discovery, and plaintext to the others (WorkloadEncryption), on
// Kitex's Go net transport. WithEncryption dials with another Encryption;
// WithoutEncryption turns it off.
func ClientOptions(service string, d *sdk.Discovery, rep *sdk.Reporter, static []sdk.Instance, opts ...Option) []client.Option {
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.lb == nil {
		o.lb = NewHybridBalancer(sdk.HybridOptions{})
	}
	if o.enc == nil && !o.plain {
		// The workload's automatic identity, when it has a credential.
		if w := d.Workload(); w.Active() {
			o.enc = WorkloadEncryption(w)
		}
	}
	if lb, ok := o.lb.(*LoadBalancer); ok && o.units != nil {
		lb.WithUnits(o.units)
	}
	r := NewResolver(d, map[string][]sdk.Instance{service: static})
	r.enc = o.enc
	out := []client.Option{
		client.WithResolver(r),
		client.WithLoadBalancer(o.lb, &lbcache.Options{RefreshInterval: time.Second, ExpireInterval: time.Minute}),
		client.WithTransportProtocol(transport.TTHeader),
		client.WithMetaHandler(transmeta.ClientTTHeaderHandler),
		client.WithMiddleware(Admission(service, d, sdk.NewDownstreams(0, nil))),
		client.WithMiddleware(callReporter(service, rep, o.enc)),
	}
	if lb, ok := o.lb.(*LoadBalancer); ok {
		out = append(out, client.WithMiddleware(lb.Middleware()))
	}
	if o.enc != nil {
		out = append(out, o.enc.options()...)
	}
	return out
}

// Option changes what ClientOptions sets up.
type Option func(*clientOptions)

type clientOptions struct {
	lb    loadbalance.Loadbalancer
	enc   *Encryption
	plain bool
	units *sdk.UnitRouter
}

// WithUnits makes the client apply the callees' unit_routing rules that r
// holds (r.Follow a ConfigWatcher whose Calls name the callee): each call
// goes to the unit its method and metainfo select, and a call its rules
// refuse fails with an error that wraps sdk.ErrUnitDenied or
// sdk.ErrUnitUnavailable. It needs the Sextant LoadBalancer (the default,
// or one given with WithLoadBalancer).
func WithUnits(r *sdk.UnitRouter) Option {
	return func(o *clientOptions) { o.units = r }
}

// WithLoadBalancer makes ClientOptions balance with lb: for instance
// loadbalance.NewWeightedRoundRobinBalancer(), Kitex's plain weighted round
// robin over the same weights, or NewLoadBalancer with another sdk.Balancer
// (whose Middleware ClientOptions then adds).
func WithLoadBalancer(lb loadbalance.Loadbalancer) Option {
	return func(o *clientOptions) { o.lb = lb }
}

// Admission is client middleware that sheds a call before sending it when
// its priority's level is below what the callee admits, as the callee's
// last answers said (downstreams) or mesh-core's policy for it says (d, may
// be nil); a shed call fails with the callee's shed status (IsShed). It
// reads each answer's admission level into downstreams and tells the
// request being served (sdk.ObserveDownstream). Calls without a priority
// are not shed here.
func Admission(service string, d *sdk.Discovery, downstreams *sdk.Downstreams) endpoint.Middleware {
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req, resp any) error {
			ctx = carryPriority(PriorityContext(ctx))
			if err := downstreams.BeforeSending(ctx, service, d); err != nil {
				return kerrors.NewBizStatusError(ShedCode, err.Error())
			}
			ctx = metainfo.WithBackwardValues(ctx)
			err := next(ctx, req, resp)
			if v, ok := metainfo.RecvBackwardValue(ctx, sdk.AdmitLevelKey); ok {
				downstreams.Answered(ctx, service, v)
			}
			return err
		}
	}
}

// CallReporter is client middleware that reports every call to the callee
// instance it went to.
func CallReporter(service string, rep *sdk.Reporter) endpoint.Middleware {
	return callReporter(service, rep, nil)
}

// callReporter is CallReporter that, with enc, reports whether each call
// went in plaintext.
func callReporter(service string, rep *sdk.Reporter, enc *Encryption) endpoint.Middleware {
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
				plaintext := enc != nil && (ri.To().Address() == nil || !enc.secure(ri.To().Address().String()))
				rep.RecordCallOver(service, instance, time.Since(start), err != nil, errors.Is(err, kerrors.ErrRPCTimeout), plaintext)
			}
			return err
		}
	}
}

// ServerSuite is the server side: admission (overload shedding, access
// rules, optional concurrency bound) and reporting, with TTHeader. A request
// that carries a priority keeps it; one that carries none entered the mesh
// here and gets one from edge (priority rules, user priority).
type ServerSuite struct {
	gate *sdk.Gate
	edge *sdk.Edge
	tls  *tlsServer // nil: plaintext, on whatever transport the server has
}

var _ server.Suite = ServerSuite{}

// NewServerSuite admits through gate; edge assigns priorities to requests
// that come without one (nil: priority 64, a user priority from the
// request id).
//
// With a credential (the gate's Reporter's Token, else $SEXTANT_TOKEN, else
// a service-account token file, sdk.WorkloadOf) whose config-center is
// known (sdk.Workload.Active), the suite serves mTLS on its own: the workload's identity obtains a certificate from the
// config-center, and the server serves mTLS and plaintext on its port, or
// mTLS only, as the access rules' tls says, on Kitex's Go net transport
// (plaintext only until the certificate is there). WithoutTLS turns that off.
func NewServerSuite(gate *sdk.Gate, edge *sdk.Edge) ServerSuite {
	return ServerSuite{gate: gate, edge: edge, tls: autoTLS(gate)}
}

// Options implements server.Suite.
func (s ServerSuite) Options() []server.Option {
	opts := []server.Option{
		server.WithMetaHandler(transmeta.ServerTTHeaderHandler),
		server.WithMiddleware(s.admit),
		// Records when Kitex began reading each request: queueing counts from there.
		server.WithStatsLevel(stats.LevelDetailed),
	}
	if s.tls != nil {
		opts = append(opts, s.tls.options()...)
	}
	return opts
}

func (s ServerSuite) admit(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp any) error {
		now := time.Now()
		arrived := now
		caller, method := "", ""
		if ri := rpcinfo.GetRPCInfo(ctx); ri != nil {
			if ri.From() != nil {
				caller = ri.From().ServiceName()
			}
			if ri.Invocation() != nil {
				method = ri.Invocation().MethodName()
			}
			// Queueing time counts from when the server began reading the
			// request, whether or not the Gate bounds concurrency.
			if st := ri.Stats(); st != nil {
				if ev := st.GetEvent(stats.ReadStart); ev != nil && !ev.Time().IsZero() && ev.Time().Before(now) {
					arrived = ev.Time()
				}
			}
		}
		ctx = PriorityContext(ctx)
		p, ok := sdk.PriorityFrom(ctx)
		if !ok {
			p = s.edge.Assign(sdk.PriorityFeatures{Method: method, Header: func(k string) string { return metainfoValue(ctx, k) }}, now)
		}
		enterCtx := ctx
		if ri := rpcinfo.GetRPCInfo(ctx); ri != nil && ri.Config() != nil && ri.Config().RPCTimeout() > 0 {
			// The caller's deadline, from the RPC timeout TTHeader carries.
			var cancel context.CancelFunc
			enterCtx, cancel = context.WithDeadline(ctx, arrived.Add(ri.Config().RPCTimeout()))
			defer cancel()
		}
		peer := sdk.Peer{Declared: caller, Identity: api.IdentityMissing}
		if s.tls != nil {
			peer = s.tls.peer(ctx, caller)
		}
		a, err := s.gate.EnterPeer(enterCtx, arrived, p, peer, method)
		defer func() { // after Done: with what its callees answered
			metainfo.SendBackwardValue(ctx, sdk.AdmitLevelKey, strconv.Itoa(int(s.gate.AdmitLevel(method))))
		}()
		switch {
		case errors.Is(err, sdk.ErrShed):
			return bizError(ctx, ShedCode, err)
		case errors.Is(err, sdk.ErrDenied):
			return bizError(ctx, DeniedCode, err)
		case err != nil:
			return err
		}
		defer a.Done()
		// An assigned priority goes on with the handler's calls as metainfo.
		return next(carryPriority(a.Context(ctx)), req, resp)
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
