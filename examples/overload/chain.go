// Package overload is a call chain for overload control end to end:
// front (Hertz, the edge of the mesh: it gives requests their priority from
// priority rules) -> A (Kitex) -> B (Kitex, the bottleneck: a few workers,
// each request a fixed cost), every service with its own Discovery,
// Reporter, Registrar and Gate, against a real control plane. Each request
// that is shed is told apart by where it was shed (Place), so that a test
// can tell how much of the shedding happened at the edge, before any work.
// The load generator (Load) is open-loop: a fixed arrival rate whatever the
// answers, each request with its own timeout.
package overload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	hserver "github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"
	example "github.com/sextant-mesh/sextant/examples/demo"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo/comment"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
	"github.com/sextant-mesh/sextant/sdk/kitexsdk"
)

// Service names of the chain.
const (
	FrontService = "front"
	AService     = "svc-a"
	BService     = "svc-b"
)

// ControlPlane is where the chain finds Sextant.
type ControlPlane struct {
	MeshCore string // HTTP host:port
	Mixer    string // HTTP host:port
	Window   time.Duration
	// Tokens holds each service's data-plane token, by service: what
	// `sextant token create --service S` prints (IssueTokens in the demo).
	Tokens map[string]string
}

// Config shapes the chain.
type Config struct {
	// B serves at most BWorkers requests at once (its Gate's concurrency
	// bound: the others wait, and their wait is B's queueing time), each
	// taking BCost on average: BWorkers / BCost requests a second.
	BWorkers int
	BCost    time.Duration
	// BVariable draws each of B's requests from a gamma distribution of
	// mean BCost and shape 4 (the simulator's model of a handler: most
	// requests near the mean, a tail to about 2.5 times it) instead of
	// taking exactly BCost.
	BVariable bool
	// AWork is A's own work on a request, before it calls B.
	AWork time.Duration
	// RPC timeouts of the front's calls to A and of A's calls to B.
	FrontTimeout, ATimeout time.Duration
	// Rules is the front's priority_rules document.
	Rules []byte
	Log   *slog.Logger
}

// Capacity is B's capacity in requests a second.
func (c Config) Capacity() float64 { return float64(c.BWorkers) / c.BCost.Seconds() }

// Place is where a request was shed.
type Place int

// Places, in the order a request meets them.
const (
	FrontGate   Place = iota // the front's Gate, before any work
	FrontClient              // the front's client of A, before sending (no work done anywhere)
	AGate                    // A's Gate
	AClient                  // A's client of B, before sending (after A's work)
	BGate                    // B's Gate (below its level, or trimmed from, or waited too long in, its queue for a worker)
	Places
)

var placeNames = [Places]string{"front-gate", "front-client", "a-gate", "a-client", "b-gate"}

func (p Place) String() string {
	if p < 0 || p >= Places {
		return "unknown"
	}
	return placeNames[p]
}

// ParsePlace reads a Place's name.
func ParsePlace(s string) (Place, bool) {
	for i, n := range placeNames {
		if n == s {
			return Place(i), true
		}
	}
	return 0, false
}

// AtFront tells whether p is at the edge, before any work is done.
func (p Place) AtFront() bool { return p == FrontGate || p == FrontClient }

// ShedAtHeader is the front's answer header naming where a shed request
// was shed behind it (a request its own Gate sheds has none).
const ShedAtHeader = "x-test-shed-at"

// LevelHeader is the front's answer header with the admission level the
// front's Edge gave the request.
const LevelHeader = "x-test-level"

// shedTag prefixes the message of a shed A passes on, naming where.
func shedTag(p Place) string { return "[shed at " + p.String() + "] " }

// placeOf reads the place a shed error from A names; AGate when none
// (A's Gate answers with its own message).
func placeOf(err error) Place {
	if bse, ok := kerrors.FromBizStatusError(err); ok {
		for _, p := range []Place{AClient, BGate} {
			if strings.HasPrefix(bse.BizMessage(), shedTag(p)) {
				return p
			}
		}
	}
	return AGate
}

// sentKey carries a *atomic.Bool that a call sets once it is past the
// SDK's client admission (sent, not shed before sending).
type sentKey struct{}

// markSent is the innermost client middleware: a call that reaches it was
// not shed before sending.
func markSent(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp any) error {
		if s, ok := ctx.Value(sentKey{}).(*atomic.Bool); ok {
			s.Store(true)
		}
		return next(ctx, req, resp)
	}
}

// node is what every service of the chain has.
type node struct {
	service, id string
	disc        *sdk.Discovery
	rep         *sdk.Reporter
	reg         *sdk.Registrar
	gate        *sdk.Gate
	work        workMeter
}

func newNode(cp ControlPlane, service, addr string, concurrency int, ownUtilization bool, log *slog.Logger) *node {
	n := &node{service: service, id: addr}
	n.disc = sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: cp.MeshCore, Token: cp.Tokens[service], Logger: log})
	ro := sdk.ReporterOptions{Mixer: cp.Mixer, Token: cp.Tokens[service], Service: service, Instance: addr, Window: cp.Window, Logger: log}
	if ownUtilization {
		// The reporter's default is the process's CPU, and every service
		// of the chain, the load generator and the control plane share this
		// process: in a deployment each has its own. A service without a
		// concurrency bound reports the share of its own work instead.
		ro.Utilization = n.work.utilization
	}
	n.rep = sdk.NewReporter(ro)
	n.gate = sdk.NewGate(sdk.GateOptions{
		Threshold:   sdk.ThresholdFrom(n.disc, service, addr),
		Reporter:    n.rep,
		Concurrency: concurrency,
	})
	n.rep.Start()
	return n
}

func (n *node) register(cp ControlPlane, log *slog.Logger) {
	n.reg = sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: cp.MeshCore, Token: cp.Tokens[n.service], Logger: log,
		Registration: sdk.Registration{Service: n.service, Instance: n.id, Addr: n.id, TTLSeconds: 10}})
}

func (n *node) close() {
	if n.reg != nil {
		n.reg.Close()
	}
	n.rep.Close()
	n.disc.Close()
}

// Threshold is the admission level in force at the node, as its Gate reads it.
func (n *node) threshold() int32 {
	s, _ := n.disc.Get(n.service)
	return s.Threshold(n.id)
}

// workMeter adds up a service's own work, for its reported utilization:
// the work over the window, on workCores.
type workMeter struct{ ns atomic.Int64 }

const workCores = 4

func (m *workMeter) add(d time.Duration) { m.ns.Add(int64(d)) }

func (m *workMeter) utilization(span time.Duration) float64 {
	if span <= 0 {
		return 0
	}
	return float64(m.ns.Swap(0)) / (float64(span) * workCores)
}

// caller is a Kitex client of the comment IDL through the SDK.
type caller struct{ c client.Client }

func newCaller(from, to string, d *sdk.Discovery, rep *sdk.Reporter, timeout time.Duration) (*caller, error) {
	opts := append(kitexsdk.ClientOptions(to, d, rep, nil),
		client.WithDestService(to),
		client.WithRPCTimeout(timeout),
		client.WithClientBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: from}),
		client.WithMiddleware(markSent))
	c, err := client.NewClient(comment.NewServiceInfoForClient(), opts...)
	if err != nil {
		return nil, err
	}
	return &caller{c: c}, nil
}

// get calls Get; sent tells whether the call got past client admission.
func (c *caller) get(ctx context.Context, id string) (resp *demo.GetResponse, sent bool, err error) {
	s := new(atomic.Bool)
	args := demo.CommentGetArgs{Req: &demo.GetRequest{Id: id}}
	var res demo.CommentGetResult
	if err = c.c.Call(context.WithValue(ctx, sentKey{}, s), "Get", &args, &res); err != nil {
		// After a timeout Kitex may still be decoding into res: leave it.
		return nil, s.Load(), err
	}
	return res.GetSuccess(), s.Load(), nil
}

func (c *caller) close() { _ = c.c.(interface{ Close() error }).Close() }

// kitexServer is one Kitex service of the chain.
type kitexServer struct {
	*node
	srv *example.KitexServer
}

func startKitex(cp ControlPlane, service string, concurrency int, ownUtilization bool, h func(n *node) demo.Comment, log *slog.Logger) (*kitexServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n := newNode(cp, service, ln.Addr().String(), concurrency, ownUtilization, log)
	srv := example.ServeKitex(ln, service, func(opts ...server.Option) server.Server { return comment.NewServer(h(n), opts...) },
		server.WithMiddleware(stampEntered), // outside the suite's admission
		server.WithSuite(kitexsdk.NewServerSuite(n.gate, nil)))
	k := &kitexServer{node: n, srv: srv}
	n.register(cp, log)
	return k, nil
}

func (k *kitexServer) close() {
	k.reg.Close()
	k.reg = nil
	_ = k.srv.Stop()
	k.node.close()
}

// enteredKey carries when a Kitex request entered the server's
// middleware, outside the SDK's admission (so it includes the wait for one
// of B's workers), whatever stats level the server records.
type enteredKey struct{}

func stampEntered(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp any) error {
		return next(context.WithValue(ctx, enteredKey{}, time.Now()), req, resp)
	}
}

// bHandler is B: its work is a fixed cost (the Gate bounds how many run at once).
type bHandler struct {
	n        *node
	cost     time.Duration
	variable bool
	counts   *Counts
}

// serviceTime is how long B works on one request.
func (h *bHandler) serviceTime() time.Duration {
	if !h.variable {
		return h.cost
	}
	// The sum of four exponentials of mean cost/4: gamma, shape 4.
	return time.Duration(float64(h.cost) * (rand.ExpFloat64() + rand.ExpFloat64() + rand.ExpFloat64() + rand.ExpFloat64()) / 4)
}

func (h *bHandler) Get(ctx context.Context, req *demo.GetRequest) (*demo.GetResponse, error) {
	h.counts.served.Add(1)
	cost := h.serviceTime()
	if ri := rpcinfo.GetRPCInfo(ctx); ri != nil && ri.Config() != nil && ri.Config().RPCTimeout() > 0 {
		if in, ok := ctx.Value(enteredKey{}).(time.Time); ok && time.Since(in)+cost > ri.Config().RPCTimeout() {
			h.counts.late.Add(1) // its caller gives up before it is done
		}
	}
	time.Sleep(cost)
	return &demo.GetResponse{Instance: h.n.id, Text: "b " + req.Id}, nil
}

// aHandler is A: a little work, then a call to B with the request's
// context (its priority, and the Gate that learns B's admission level).
type aHandler struct {
	n    *node
	work time.Duration
	b    *caller
}

func (h *aHandler) Get(ctx context.Context, req *demo.GetRequest) (*demo.GetResponse, error) {
	// A's work is the cost it is given, not the sleep's wall time: on a
	// loaded test machine a sleep overshoots, and counting the overshoot
	// would make A look busy for reasons outside the chain.
	time.Sleep(h.work)
	h.n.work.add(h.work)
	resp, sent, err := h.b.get(ctx, req.Id)
	switch {
	case err == nil:
		return resp, nil
	case kitexsdk.IsShed(err):
		at := AClient
		if sent {
			at = BGate
		}
		return nil, kerrors.NewBizStatusError(kitexsdk.ShedCode, shedTag(at)+err.Error())
	case errors.Is(err, kerrors.ErrRPCTimeout):
		// Still a failure of A for its caller; tagged for the front's answer.
		return nil, fmt.Errorf("%s%w", timeoutTag, err)
	default:
		return nil, err
	}
}

// timeoutTag prefixes the error of A's call to B that timed out.
const timeoutTag = "[timeout calling " + BService + "] "

// Chain is the three services, started.
type Chain struct {
	cfg    Config
	counts Counts
	b, a   *kitexServer
	aToB   *caller
	front  *node
	fToA   *caller
	http   *example.HertzServer
}

// Start starts B, A and the front on free loopback ports, registered in
// mesh-core and reporting to the mixer; Close stops them all.
func Start(cp ControlPlane, cfg Config) (_ *Chain, err error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rules := sdk.NewPriorityRules()
	if err := rules.Update(cfg.Rules); err != nil {
		return nil, fmt.Errorf("priority rules: %w", err)
	}
	ch := &Chain{cfg: cfg}
	defer func() {
		if err != nil {
			ch.Close()
		}
	}()
	if ch.b, err = startKitex(cp, BService, cfg.BWorkers, false, func(n *node) demo.Comment {
		return &bHandler{n: n, cost: cfg.BCost, variable: cfg.BVariable, counts: &ch.counts}
	}, log); err != nil {
		return nil, fmt.Errorf("B: %w", err)
	}
	var callerErr error
	ch.a, err = startKitex(cp, AService, 0, true, func(n *node) demo.Comment {
		ch.aToB, callerErr = newCaller(AService, BService, n.disc, n.rep, cfg.ATimeout)
		return &aHandler{n: n, work: cfg.AWork, b: ch.aToB}
	}, log)
	if err == nil {
		err = callerErr
	}
	if err != nil {
		return nil, fmt.Errorf("A: %w", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("front: %w", err)
	}
	ch.front = newNode(cp, FrontService, ln.Addr().String(), 0, true, log)
	if ch.fToA, err = newCaller(FrontService, AService, ch.front.disc, ch.front.rep, cfg.FrontTimeout); err != nil {
		ln.Close()
		return nil, fmt.Errorf("front: %w", err)
	}
	ch.http = example.ServeHertz(ln, func(h *hserver.Hertz) {
		h.Use(hertzsdk.Admission(ch.front.gate, &sdk.Edge{Rules: rules}))
		for _, prefix := range []string{"/feed/*rest", "/comments/*rest", "/batch/*rest"} {
			h.GET(prefix, ch.serveFront)
		}
	}, hertzsdk.ServerOptions()...)
	ch.front.register(cp, log)
	return ch, nil
}

// serveFront calls A with the request's priority (the handler's ctx) and
// answers 200, 503 naming where the request was shed, 504 on a timeout,
// 502 on any other failure.
func (ch *Chain) serveFront(ctx context.Context, c *app.RequestContext) {
	if p, ok := sdk.PriorityFrom(ctx); ok {
		c.Header(LevelHeader, strconv.Itoa(int(p.Level())))
	}
	_, sent, err := ch.fToA.get(ctx, string(c.Path()))
	switch {
	case err == nil:
		c.JSON(consts.StatusOK, map[string]string{"status": "ok"})
	case kitexsdk.IsShed(err):
		at := FrontClient
		if sent {
			at = placeOf(err)
		}
		c.Header(ShedAtHeader, at.String())
		c.Header("Retry-After", "1")
		c.JSON(consts.StatusServiceUnavailable, map[string]any{"error": map[string]string{"code": "shed", "message": err.Error()}})
	case errors.Is(err, kerrors.ErrRPCTimeout) || strings.Contains(err.Error(), timeoutTag):
		c.JSON(consts.StatusGatewayTimeout, map[string]any{"error": map[string]string{"code": "timeout", "message": err.Error()}})
	default:
		c.JSON(consts.StatusBadGateway, map[string]any{"error": map[string]string{"code": "upstream", "message": err.Error()}})
	}
}

// Counts are what B did since the chain started.
type Counts struct {
	served atomic.Int64 // requests B's handler ran
	late   atomic.Int64 // ... that finished after their caller's deadline (wasted work)
}

// BServed is how many requests B's handler ran, and how many of them
// finished after their caller's deadline: work wasted on a request A had
// given up on.
func (ch *Chain) BServed() (served, late int64) {
	return ch.counts.served.Load(), ch.counts.late.Load()
}

// FrontAddr is the front's HTTP address.
func (ch *Chain) FrontAddr() string { return ch.http.Addr() }

// InstanceIDs are the instance ids of the front, A and B.
func (ch *Chain) InstanceIDs() (front, a, b string) { return ch.front.id, ch.a.id, ch.b.id }

// Levels are the admission levels in force at each service's Gate (their
// own thresholds), and what A and the front's clients would shed below:
// the level A answers the front with for Get (its own, or B's when higher).
type Levels struct {
	Front, A, B int32
	// AAdvertises is the level A's Gate answers with for Get.
	AAdvertises int32
}

// Max is the highest of the levels: requests below it are shed somewhere.
func (l Levels) Max() int32 { return max(l.Front, l.A, l.B, l.AAdvertises) }

// Levels reads the levels in force now.
func (ch *Chain) Levels() Levels {
	return Levels{Front: ch.front.threshold(), A: ch.a.threshold(), B: ch.b.threshold(), AAdvertises: ch.a.gate.AdmitLevel("Get")}
}

// Ready tells why the chain cannot serve yet: the front must see A's
// instance and A must see B's, from mesh-core.
func (ch *Chain) Ready() error {
	for _, c := range []struct {
		d       *sdk.Discovery
		service string
	}{{ch.front.disc, AService}, {ch.a.disc, BService}} {
		c.d.Watch(c.service, nil, nil)
		if s, ok := c.d.Get(c.service); !ok || len(s.Instances) == 0 {
			return fmt.Errorf("no instance of %s in discovery yet", c.service)
		}
	}
	return nil
}

// Close stops the front, A and B (the load must be stopped first).
func (ch *Chain) Close() {
	if ch.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = ch.http.Stop(ctx)
		cancel()
	}
	if ch.front != nil {
		ch.front.close()
	}
	if ch.fToA != nil {
		ch.fToA.close()
	}
	if ch.a != nil {
		ch.a.close()
	}
	if ch.aToB != nil {
		ch.aToB.close()
	}
	if ch.b != nil {
		ch.b.close()
	}
}
