package kitexsdk

import (
	"context"
	"crypto/tls"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/gopkg/bufiox"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/remote"
	"github.com/cloudwego/kitex/pkg/remote/trans/gonet"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// Encryption between data planes. A server with a workload certificate
// (ServerSuite.WithTLS) runs on Kitex's Go net transport behind a listener
// that reads each connection's first byte: a TLS handshake record (0x16)
// goes to a TLS server that asks for a client certificate, anything else
// is plaintext, served in permissive mode and closed in strict mode. The
// certificate the client presented is checked per request by the access
// control (sdk.VerifyPeer), so that the service's identity policy decides
// what a missing, invalid or expired identity means. A client with an
// Encryption dials mTLS to the instances that advertise it in discovery
// (registration metadata tls) and plaintext to the others, and counts the
// calls of each.

// TLSTag is the Kitex instance tag marking an instance that serves mTLS.
const TLSTag = "sextant_tls"

// HandshakeTimeout bounds a client's dial with its TLS handshake.
const HandshakeTimeout = sdk.HandshakeTimeout

// tlsServer is the TLS side of a ServerSuite.
type tlsServer struct {
	rep  *sdk.Reporter        // counts the listener's connections (may be nil)
	src  func() *sdk.Identity // nil until the workload has its certificate
	mode func() string
	ln   atomic.Pointer[sdk.TLSListener] // set once serving
}

// WithTLS makes the suite serve on ln with id's certificate: mTLS and
// plaintext on the same port, or mTLS only, as mode says (api.TLSPermissive
// or api.TLSStrict, asked for each connection; nil: permissive). The
// suite's options then carry the listener: give the server no other
// address. Requests over mTLS are admitted as their certificate's service
// (sdk.Gate.EnterPeer).
func (s ServerSuite) WithTLS(ln net.Listener, id *sdk.Identity, mode func() string) ServerSuite {
	t := &tlsServer{src: func() *sdk.Identity { return id }, mode: mode, rep: s.gate.Reporter()}
	t.serve(sdk.NewTLSListener(ln, id, mode))
	s.tls = t
	return s
}

// WithoutTLS turns the suite's automatic mTLS off: the server serves
// plaintext on its own transport, as it would without Sextant.
func (s ServerSuite) WithoutTLS() ServerSuite {
	s.tls = nil
	return s
}

// autoTLS is the automatic TLS side of a suite admitting through gate: the
// workload identity of the gate's credential (sdk.Gate.Workload), the mode
// of its access rules. nil without a credential.
func autoTLS(gate *sdk.Gate) *tlsServer {
	if gate == nil {
		return nil
	}
	w := gate.Workload()
	if !w.Active() {
		return nil
	}
	return &tlsServer{src: w.Identity, mode: gate.TLSMode, rep: gate.Reporter()}
}

// serve makes l the listener served, whose connections the gate's
// reporter counts.
func (t *tlsServer) serve(l *sdk.TLSListener) {
	t.ln.Store(l)
	if t.rep != nil {
		t.rep.CountConnections(l)
	}
}

// Connections counts the connections the suite's listener took (zero
// without TLS, or before the server started).
func (s ServerSuite) Connections() sdk.ConnStats {
	if s.tls == nil {
		return sdk.ConnStats{}
	}
	if l := s.tls.ln.Load(); l != nil {
		return l.Connections()
	}
	return sdk.ConnStats{}
}

func (t *tlsServer) options() []server.Option {
	opts := []server.Option{
		server.WithTransHandlerFactory(gonet.NewSvrTransHandlerFactory()),
		server.WithBoundHandler(peerHandler{}),
	}
	if l := t.ln.Load(); l != nil {
		return append(opts, server.WithListener(l), server.WithTransServerFactory(gonet.NewTransServerFactory()))
	}
	// The server's own listener (its address, or server.WithListener),
	// wrapped when it starts.
	return append(opts, server.WithTransServerFactory(tlsTransServerFactory{t: t}))
}

// tlsTransServerFactory makes Kitex's Go net transport serve behind a
// TLSListener of the workload identity.
type tlsTransServerFactory struct{ t *tlsServer }

func (f tlsTransServerFactory) NewTransServer(opt *remote.ServerOption, h remote.ServerTransHandler) remote.TransServer {
	return tlsTransServer{TransServer: gonet.NewTransServerFactory().NewTransServer(opt, h), t: f.t}
}

type tlsTransServer struct {
	remote.TransServer
	t *tlsServer
}

func (s tlsTransServer) BootstrapServer(ln net.Listener) error {
	l, ok := ln.(*sdk.TLSListener)
	if !ok {
		l = sdk.NewWorkloadListener(ln, s.t.src, s.t.mode)
	}
	s.t.serve(l)
	return s.TransServer.BootstrapServer(l)
}

// peer is who sent ctx's request: its certificate's identity when it came
// over TLS, the declared name otherwise.
func (t *tlsServer) peer(ctx context.Context, declared string) sdk.Peer {
	remote, _ := ctx.Value(peerKey{}).(net.Addr)
	return sdk.ConnPeer(remote, declared, time.Now())
}

type peerKey struct{}

// peerHandler puts a connection's remote address, which carries its TLS
// state, in the context of every call the connection carries.
type peerHandler struct{}

var _ remote.InboundHandler = peerHandler{}

func (peerHandler) OnActive(ctx context.Context, conn net.Conn) (context.Context, error) {
	return context.WithValue(ctx, peerKey{}, conn.RemoteAddr()), nil
}

func (peerHandler) OnInactive(ctx context.Context, _ net.Conn) context.Context { return ctx }

func (peerHandler) OnRead(ctx context.Context, _ net.Conn) (context.Context, error) { return ctx, nil }

func (peerHandler) OnMessage(ctx context.Context, _, _ remote.Message) (context.Context, error) {
	return ctx, nil
}

// Encryption is a client's side of encryption between data planes: it
// dials mTLS, with id's certificate, to the instances that advertise it in
// discovery (their registration metadata carries api.TLSMetadataKey) and
// verifies that the server's certificate chains to the trust bundle and
// names the service called; it dials plaintext to the others. It counts
// the calls of each kind per callee service, so that the plaintext ones
// can be seen. One Encryption may serve several clients.
type Encryption struct {
	src   func() *sdk.Identity // nil until the workload has its certificate
	addrs sync.Map             // addr -> the service of an instance that serves mTLS

	mu        sync.Mutex
	tlsCalls  map[string]int64
	plaintext map[string]int64
}

// NewEncryption dials with id's certificate.
func NewEncryption(id *sdk.Identity) *Encryption {
	return newEncryption(func() *sdk.Identity { return id })
}

// WorkloadEncryption dials with the workload's automatic identity once it
// has its certificate, and plaintext to every instance until then.
func WorkloadEncryption(w *sdk.Workload) *Encryption {
	return newEncryption(w.Identity)
}

func newEncryption(src func() *sdk.Identity) *Encryption {
	return &Encryption{src: src, tlsCalls: map[string]int64{}, plaintext: map[string]int64{}}
}

// PlaintextCalls are the calls sent in plaintext so far, per callee service.
func (e *Encryption) PlaintextCalls() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.plaintext)
}

// TLSCalls are the calls sent over mTLS so far, per callee service.
func (e *Encryption) TLSCalls() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.tlsCalls)
}

// WithEncryption makes ClientOptions dial through e.
func WithEncryption(e *Encryption) Option {
	return func(o *clientOptions) { o.enc = e }
}

// WithoutEncryption turns ClientOptions' automatic mTLS off: every
// instance is dialed plaintext, on Kitex's default transport.
func WithoutEncryption() Option {
	return func(o *clientOptions) { o.enc, o.plain = nil, true }
}

// advertises tells whether in serves mTLS, and remembers it for the dialer.
func (e *Encryption) advertises(service string, in sdk.Instance) bool {
	if e == nil || in.Metadata[api.TLSMetadataKey] == "" {
		if e != nil {
			e.addrs.Delete(in.Addr)
		}
		return false
	}
	e.addrs.Store(in.Addr, service)
	return true
}

func (e *Encryption) options() []client.Option {
	return []client.Option{
		client.WithTransHandlerFactory(gonet.NewCliTransHandlerFactory()),
		client.WithDialer(e),
		client.WithMiddleware(e.count),
	}
}

// count counts each call by how it was sent.
func (e *Encryption) count(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp any) error {
		err := next(ctx, req, resp)
		ri := rpcinfo.GetRPCInfo(ctx)
		if ri == nil || ri.To() == nil || ri.To().Address() == nil {
			return err
		}
		service := ri.To().ServiceName()
		e.mu.Lock()
		if e.secure(ri.To().Address().String()) {
			e.tlsCalls[service]++
		} else {
			e.plaintext[service]++
		}
		e.mu.Unlock()
		return err
	}
}

// secure tells whether the instance at addr is dialed mTLS: it advertises
// it, and there is a certificate to dial with.
func (e *Encryption) secure(addr string) bool {
	_, ok := e.addrs.Load(addr)
	return ok && e.src() != nil
}

var _ remote.Dialer = (*Encryption)(nil)

// DialTimeout implements remote.Dialer: mTLS to an address that advertised
// it, plaintext to others.
func (e *Encryption) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > HandshakeTimeout {
		timeout = HandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	expires := time.Now().Add(maxConnLifetime)
	v, secure := e.addrs.Load(address)
	id := e.src()
	if !secure || id == nil {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		c := newClientConn(conn, expires)
		c.stale = func() bool { return e.secure(address) }
		return c, nil
	}
	service := v.(string)
	own := id.Certificate()
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if own == nil {
				return &tls.Certificate{}, nil
			}
			return own, nil
		},
		// The server is verified by its SPIFFE ID, not its host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return sdk.VerifyServer(cs.PeerCertificates, id.TrustBundle(), service)
		},
	}
	tc, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	conn := tc.(*tls.Conn)
	var peerEnd, ownEnd time.Time
	if peer := conn.ConnectionState().PeerCertificates; len(peer) > 0 {
		peerEnd = peer[0].NotAfter
	}
	if own != nil && own.Leaf != nil {
		ownEnd = own.Leaf.NotAfter
	}
	// Not reused close to either certificate's expiry: the server checks
	// the caller's at each request.
	c := newClientConn(conn, sdk.ConnReuseUntil(time.Now(), maxConnLifetime, peerEnd, ownEnd))
	c.stale = func() bool { return !e.secure(address) }
	return c, nil
}

// maxConnLifetime bounds how long a client connection is reused when no
// certificate bounds it sooner.
const maxConnLifetime = 24 * time.Hour

// clientConn is a client connection with the buffered reader and writer
// Kitex's Go net transport reads and writes through; it is not reused once
// a certificate it was opened with expired.
type clientConn struct {
	net.Conn
	r       *bufiox.DefaultReader
	w       *bufiox.DefaultWriter
	expires time.Time
	stale   func() bool // the instance no longer advertises what the connection was dialed for

	closeOnce sync.Once
}

var _ remote.IsActive = (*clientConn)(nil)

func newClientConn(conn net.Conn, expires time.Time) *clientConn {
	return &clientConn{Conn: conn, r: bufiox.NewDefaultReader(conn), w: bufiox.NewDefaultWriter(conn), expires: expires}
}

func (c *clientConn) Reader() *bufiox.DefaultReader { return c.r }
func (c *clientConn) Writer() *bufiox.DefaultWriter { return c.w }
func (c *clientConn) Read(b []byte) (int, error)    { return c.r.Read(b) }

// IsActive tells the connection pool whether to reuse the connection: not
// once a certificate it was opened with expired, nor once the instance
// started or stopped advertising mTLS (the next call dials as it says now).
func (c *clientConn) IsActive() bool {
	return time.Now().Before(c.expires) && (c.stale == nil || !c.stale())
}

func (c *clientConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		_ = c.r.Release(nil)
		err = c.Conn.Close()
	})
	return err
}
