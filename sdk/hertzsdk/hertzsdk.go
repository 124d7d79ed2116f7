// Package hertzsdk plugs Sextant into Hertz: server middleware that sheds
// low-priority requests under overload, applies access rules and reports
// what the server sees, and client middleware that sends a service's
// requests to the instance an sdk.Balancer picks (Balance) and reports each
// call to the instance it went to (CallReporter).
//
// A request's priority (sdk.Priority) travels in the x-sextant-priority and
// x-sextant-user-priority headers, the caller's service name in
// x-sextant-caller. Admission assigns a priority to a request that enters
// the mesh without one (sdk.Edge) and passes it on, with the handler's ctx,
// to Hertz clients (CallReporter sends it) and Kitex clients (persistent
// metainfo). Answers carry x-sextant-admit-level, the level the server
// admits; ClientAdmission sheds a request below it before sending.
package hertzsdk

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/config"
	errs "github.com/cloudwego/hertz/pkg/common/errors"
	"github.com/cloudwego/hertz/pkg/common/tracer/stats"
	"github.com/cloudwego/hertz/pkg/network"
	"github.com/cloudwego/hertz/pkg/network/standard"
	"github.com/cloudwego/hertz/pkg/protocol"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// Admission is server middleware that admits requests through gate, as
// the route's method (c.FullPath(), e.g. /feed/:id; the path when no route
// matched: what access rules name and what the Gate keeps per method). A
// request that carries a priority keeps it; one that carries none entered
// the mesh here and gets one from edge (nil: priority 64, a user priority
// from the request id). A shed request gets 503 with Retry-After; a denied
// one 403; both with a JSON error. Every answer carries the level the
// server admits (x-sextant-admit-level). A request that came over mTLS (the
// automatic TLS of ServerOptions, TLSServerOptions) is admitted as its
// client certificate's service, verified against the trust bundle of the
// listener that took it, as VerifiedAdmission does.
func Admission(gate *sdk.Gate, edge *sdk.Edge) app.HandlerFunc {
	return VerifiedAdmission(gate, edge, nil)
}

// VerifiedAdmission is Admission on a server that serves mTLS (TLSServerOptions):
// a request over mTLS whose client certificate chains to id's trust bundle
// is admitted as the certificate's service, whatever x-sextant-caller says;
// the access control's identity policy decides what a missing, invalid or
// expired identity means (sdk.Gate.EnterPeer). A nil id is Admission.
func VerifiedAdmission(gate *sdk.Gate, edge *sdk.Edge, id *sdk.Identity) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		now := time.Now()
		arrived := now
		if ti := c.GetTraceInfo(); ti != nil && ti.Stats() != nil {
			if ev := ti.Stats().GetEvent(stats.HTTPStart); ev != nil && !ev.Time().IsZero() && ev.Time().Before(now) {
				arrived = ev.Time() // queueing counts from when the server began reading
			}
		}
		// The route, not the path: a Gate keeps state per method.
		method := c.FullPath()
		if method == "" {
			method = string(c.Path())
		}
		p, ok := sdk.ParsePriorities(string(c.GetHeader(sdk.PriorityKey)), string(c.GetHeader(sdk.UserPriorityKey)))
		if !ok {
			p = edge.Assign(sdk.PriorityFeatures{HTTPMethod: string(c.Method()), Path: string(c.Path()),
				Header: func(k string) string { return string(c.Request.Header.Peek(k)) }}, now)
		}
		// Over mTLS, the certificate's identity against id's trust bundle,
		// or (nil id) that of the listener that took the connection.
		peer := sdk.ConnPeer(c.RemoteAddr(), string(c.GetHeader(sdk.CallerKey)), now)
		if id != nil {
			var chain []*x509.Certificate
			if st := sdk.ConnTLS(c.RemoteAddr()); st != nil {
				chain = st.PeerCertificates
			}
			peer = sdk.VerifyPeer(peer.Declared, chain, id.TrustBundle(), now)
		}
		a, err := gate.EnterPeer(ctx, arrived, p, peer, method)
		defer func() { c.Response.Header.Set(sdk.AdmitLevelKey, strconv.Itoa(int(gate.AdmitLevel(method)))) }()
		switch {
		case errors.Is(err, sdk.ErrShed):
			c.Header("Retry-After", "1")
			c.AbortWithStatusJSON(consts.StatusServiceUnavailable, errorBody("shed", err))
			return
		case errors.Is(err, sdk.ErrDenied):
			c.AbortWithStatusJSON(consts.StatusForbidden, errorBody("denied", err))
			return
		case err != nil:
			c.AbortWithStatusJSON(consts.StatusServiceUnavailable, errorBody("unavailable", err))
			return
		}
		defer a.Done()
		c.Next(a.Context(ctx))
	}
}

func errorBody(code string, err error) map[string]any {
	return map[string]any{"error": map[string]string{"code": code, "message": err.Error()}}
}

// CallReporter is Hertz client middleware that reports every call of the
// service `callee` to rep, and sends this service's name and the priority
// set with WithPriority. A call Balance sent is reported to the instance id
// it picked, in whichever order the two are used; any other to its host.
func CallReporter(caller, callee string, rep *sdk.Reporter) client.Middleware {
	return func(next client.Endpoint) client.Endpoint {
		return func(ctx context.Context, req *protocol.Request, resp *protocol.Response) error {
			req.Header.Set(sdk.CallerKey, caller)
			if p, ok := sdk.PriorityFrom(ctx); ok {
				req.Header.Set(sdk.PriorityKey, strconv.Itoa(int(p.Business)))
				req.Header.Set(sdk.UserPriorityKey, strconv.Itoa(int(p.User)))
			}
			if rep == nil {
				return next(ctx, req, resp)
			}
			to, ok := ctx.Value(pickedKey{}).(*picked)
			if !ok {
				to = new(picked)
				ctx = context.WithValue(ctx, pickedKey{}, to)
			}
			start := time.Now()
			err := next(ctx, req, resp)
			instance := to.instance
			if instance == "" {
				instance = string(req.Host())
			}
			status := resp.StatusCode()
			// A timeout counts as a timeout only (RecordCall), not also as an error.
			rep.RecordCallOver(callee, instance, time.Since(start), err != nil || status >= 500, timedOut(err), to.encrypting && !to.tls)
			return err
		}
	}
}

// timedOut tells whether a Hertz client call failed by timing out. Hertz
// answers a request or read timeout with its own errors.ErrTimeout, not
// context.DeadlineExceeded; a connect timeout is the dialer's: the standard
// one's is a net.Error that says so, netpoll's a *net.OpError around a plain
// "i/o timeout" error that does not.
func timedOut(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errs.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Err != nil && oe.Err.Error() == "i/o timeout"
}

// picked carries the instance Balance picked to a CallReporter before or
// after it in the chain.
type picked struct {
	instance   string
	advertises bool // the instance advertises mTLS
	tls        bool // the call goes over mTLS
	encrypting bool // counted as mTLS or plaintext: an Encryption middleware saw it, or ClientOptions dials
}

type pickedKey struct{}

// Balance is Hertz client middleware that sends each request whose URI host
// is service (e.g. http://comment-svc/comment) to an instance b picks among
// d's instances of service: it sets the request's URI host to the
// instance's Addr (and so the Host header, unless one was set) and leaves
// other requests alone. b learns each request's latency and whether it
// failed (an error, or a status of 500 or more); a nil b is an
// sdk.HybridPicker with default options, new(sdk.Picker) the plain
// weighted round robin. static are the instances to use until mesh-core
// answers, as with Discovery.Watch. With no instance the request fails with
// sdk.ErrNoInstance. A b that is an sdk.RequestBalancer (sdk.UnitBalancer:
// unit routing) picks by the request's method, path and headers; a request
// its rules refuse fails with sdk.ErrUnitDenied or sdk.ErrUnitUnavailable.
func Balance(service string, d *sdk.Discovery, b sdk.Balancer, static []sdk.Instance) client.Middleware {
	if b == nil {
		b = sdk.NewHybridPicker(sdk.HybridOptions{})
	}
	d.Watch(service, static, nil)
	host := []byte(service)
	var applied atomic.Pointer[sdk.Snapshot]
	return func(next client.Endpoint) client.Endpoint {
		return func(ctx context.Context, req *protocol.Request, resp *protocol.Response) (err error) {
			if !bytes.EqualFold(req.Host(), host) {
				return next(ctx, req, resp)
			}
			snap, ok := d.Get(service)
			if !ok {
				return fmt.Errorf("%s: %w", service, sdk.ErrNoInstance)
			}
			// Get makes a new static snapshot each time; feeding b one would
			// restart a round robin's cycle on every request.
			if last := applied.Load(); last != snap && (last == nil || snap.Version != 0 || last.Version != 0) {
				b.Update(snap)
				applied.Store(snap)
			}
			var in sdk.Instance
			if rb, ok := b.(sdk.RequestBalancer); ok {
				in, err = rb.PickFor(requestFeatures(req))
			} else {
				in, err = b.Pick()
			}
			if err != nil {
				return fmt.Errorf("%s: %w", service, err)
			}
			advertises := in.Metadata[api.TLSMetadataKey] != ""
			if advertises {
				advertisedAddrs.Store(in.Addr, service) // for ClientOptions' dialer
			} else {
				advertisedAddrs.Delete(in.Addr)
			}
			secure, encrypting := automaticTLS(advertises)
			if to, ok := ctx.Value(pickedKey{}).(*picked); ok {
				to.instance, to.advertises, to.tls, to.encrypting = in.Instance, advertises, secure, encrypting
			} else {
				ctx = context.WithValue(ctx, pickedKey{}, &picked{instance: in.Instance, advertises: advertises, tls: secure, encrypting: encrypting})
			}
			req.SetHost(in.Addr)
			start := time.Now()
			returned := false
			defer func() {
				failed := !returned || err != nil || resp != nil && resp.StatusCode() >= 500
				b.Done(in.Instance, time.Since(start), failed)
			}()
			err = next(ctx, req, resp)
			returned = true
			return err
		}
	}
}

// requestFeatures are what unit rules match of an outgoing request.
func requestFeatures(req *protocol.Request) sdk.UnitFeatures {
	return sdk.UnitFeatures{HTTPMethod: string(req.Method()), Path: string(req.URI().Path()),
		Header: func(k string) string { return string(req.Header.Peek(k)) }}
}

// WithPriority sets the business priority (0..127) of the calls made with
// ctx, keeping the user priority ctx carries (the highest when none).
func WithPriority(ctx context.Context, p int32) context.Context {
	return sdk.WithBusinessPriority(ctx, p)
}

// ClientAdmission is Hertz client middleware for calls of the service
// callee: it sheds a call before sending it when its priority's level is
// below what callee admits, as callee's last answers said (downstreams) or
// mesh-core's policy says (d, may be nil); the call then fails with an
// error wrapping sdk.ErrShed. It reads each answer's x-sextant-admit-level
// into downstreams and tells the request being served
// (sdk.ObserveDownstream). Calls without a priority are not shed here.
func ClientAdmission(callee string, d *sdk.Discovery, downstreams *sdk.Downstreams) client.Middleware {
	return func(next client.Endpoint) client.Endpoint {
		return func(ctx context.Context, req *protocol.Request, resp *protocol.Response) error {
			if err := downstreams.BeforeSending(ctx, callee, d); err != nil {
				return err
			}
			err := next(ctx, req, resp)
			if v := resp.Header.Peek(sdk.AdmitLevelKey); len(v) > 0 {
				downstreams.Answered(ctx, callee, string(v))
			}
			return err
		}
	}
}

// ServerOptions are the Hertz server options Admission wants: a tracer, so
// that Hertz records when it began reading each request and queueing time
// counts from there (without a tracer Hertz records nothing, and queueing
// counts from when the middleware ran).
//
// With a credential in the environment ($SEXTANT_TOKEN, else a
// service-account token file, sdk.WorkloadOf) whose config-center is known
// (sdk.Workload.Active), they also serve mTLS on their own: the workload's identity obtains a certificate from the
// config-center, and the server serves mTLS and plaintext on its port, or
// mTLS only, as the tls of the access rules of the workload's first Gate
// says (plaintext only until the certificate is there), on Hertz's standard
// transport; Admission then admits a caller over mTLS as its certificate's
// service. A Registrar of the process advertises it. Plaintext() turns it
// off, and so does a server given its own TLS (server.WithTLS).
func ServerOptions(opts ...ServerOption) []config.Option {
	var o serverOptions
	for _, opt := range opts {
		opt(&o)
	}
	out := []config.Option{server.WithTracer(arrivalTracer{})}
	if !o.plain {
		if w := sdk.WorkloadOf(""); w.Active() {
			out = append(out, server.WithTransport(func(opt *config.Options) network.Transporter {
				if opt.TLS != nil {
					return standard.NewTransporter(opt)
				}
				return &workloadTransport{opt: opt, w: w}
			}))
		}
	}
	return out
}

// ServerOption changes what ServerOptions sets up.
type ServerOption func(*serverOptions)

type serverOptions struct{ plain bool }

// Plaintext turns ServerOptions' automatic mTLS off: the server serves
// plaintext on its own transport.
func Plaintext() ServerOption { return func(o *serverOptions) { o.plain = true } }

// workloadTransport is Hertz's standard transport behind a TLSListener of
// the workload's identity, made when the server starts.
type workloadTransport struct {
	opt *config.Options
	w   *sdk.Workload

	mu    sync.Mutex
	inner network.Transporter
	ln    *sdk.TLSListener
}

func (t *workloadTransport) ListenAndServe(onData network.OnData) error {
	ln := t.opt.Listener
	if ln == nil {
		lc := net.ListenConfig{}
		if t.opt.ListenConfig != nil {
			lc = *t.opt.ListenConfig
		}
		var err error
		if ln, err = lc.Listen(context.Background(), t.opt.Network, t.opt.Addr); err != nil {
			return err
		}
	}
	l := sdk.NewWorkloadListener(ln, t.w.Identity, t.w.TLSMode)
	if g := t.w.Gate(); g != nil && g.Reporter() != nil {
		g.Reporter().CountConnections(l) // in the reports, as the Kitex suite's
	}
	o := *t.opt
	o.Listener, o.ListenConfig = l, nil
	inner := standard.NewTransporter(&o)
	t.mu.Lock()
	t.inner, t.ln = inner, l
	t.mu.Unlock()
	return inner.ListenAndServe(onData)
}

func (t *workloadTransport) current() network.Transporter {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inner
}

func (t *workloadTransport) Close() error {
	if in := t.current(); in != nil {
		return in.Close()
	}
	return nil
}

func (t *workloadTransport) Shutdown(ctx context.Context) error {
	if in := t.current(); in != nil {
		return in.Shutdown(ctx)
	}
	return nil
}

// Listener is the listener served (nil before the server started): Hertz
// asks it to tell whether the server runs.
func (t *workloadTransport) Listener() net.Listener {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ln == nil {
		return nil
	}
	return t.ln
}

// TLSServerOptions serve mTLS and plaintext on one port, or mTLS only, as l
// says (sdk.NewTLSListener over the server's listener, with the workload
// certificate and the service's mode): Hertz's standard transport on l.
// Give the server no other address, and admit with VerifiedAdmission; l
// counts the connections (Connections).
func TLSServerOptions(l *sdk.TLSListener) []config.Option {
	return []config.Option{server.WithListener(l), server.WithTransport(standard.NewTransporter)}
}

// arrivalTracer does nothing itself; its presence turns Hertz's recording of
// request events on.
type arrivalTracer struct{}

func (arrivalTracer) Start(ctx context.Context, _ *app.RequestContext) context.Context { return ctx }
func (arrivalTracer) Finish(context.Context, *app.RequestContext)                      {}
