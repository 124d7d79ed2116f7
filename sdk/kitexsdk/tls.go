package kitexsdk

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
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

// HandshakeTimeout bounds the first byte and the TLS handshake of a
// connection, and a client's dial with its handshake.
const HandshakeTimeout = 5 * time.Second

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// ConnStats count a server's connections by how they came.
type ConnStats struct {
	TLS              int64 `json:"tls"`               // mTLS handshakes completed
	Plaintext        int64 `json:"plaintext"`         // plaintext connections served (permissive)
	PlaintextRefused int64 `json:"plaintext_refused"` // plaintext connections closed (strict)
	HandshakeFailed  int64 `json:"handshake_failed"`  // TLS handshakes that failed, or no first byte in time
}

// tlsServer is the TLS side of a ServerSuite.
type tlsServer struct {
	id   *sdk.Identity
	mode func() string
	ln   *sniffListener

	tls, plain, refused, failed atomic.Int64
}

// WithTLS makes the suite serve on ln with id's certificate: mTLS and
// plaintext on the same port, or mTLS only, as mode says (api.TLSPermissive
// or api.TLSStrict, asked for each connection; nil: permissive). The
// suite's options then carry the listener: give the server no other
// address. Requests over mTLS are admitted as their certificate's service
// (sdk.Gate.EnterPeer).
func (s ServerSuite) WithTLS(ln net.Listener, id *sdk.Identity, mode func() string) ServerSuite {
	if mode == nil {
		mode = func() string { return api.TLSPermissive }
	}
	t := &tlsServer{id: id, mode: mode}
	t.ln = newSniffListener(ln, t)
	s.tls = t
	return s
}

// Connections counts the connections the suite's listener took (zero
// without WithTLS).
func (s ServerSuite) Connections() ConnStats {
	if s.tls == nil {
		return ConnStats{}
	}
	return ConnStats{TLS: s.tls.tls.Load(), Plaintext: s.tls.plain.Load(), PlaintextRefused: s.tls.refused.Load(), HandshakeFailed: s.tls.failed.Load()}
}

func (t *tlsServer) options() []server.Option {
	return []server.Option{
		server.WithListener(t.ln),
		server.WithTransServerFactory(gonet.NewTransServerFactory()),
		server.WithTransHandlerFactory(gonet.NewSvrTransHandlerFactory()),
		server.WithBoundHandler(peerHandler{}),
	}
}

func (t *tlsServer) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := t.id.Certificate()
			if c == nil {
				return nil, errors.New("sextant: the workload certificate expired and is not renewed yet")
			}
			// Asked, not verified here: the identity policy decides what a
			// missing, invalid or expired one means, per request.
			return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*c}, ClientAuth: tls.RequestClientCert}, nil
		},
	}
}

// peer is who sent ctx's request: its certificate's identity when it came
// over TLS, the declared name otherwise.
func (t *tlsServer) peer(ctx context.Context, declared string) sdk.Peer {
	if t == nil {
		return sdk.Peer{Declared: declared, Identity: api.IdentityMissing}
	}
	st, _ := ctx.Value(peerKey{}).(*tls.ConnectionState)
	var chain []*x509.Certificate
	if st != nil {
		chain = st.PeerCertificates
	}
	return sdk.VerifyPeer(declared, chain, t.id.TrustBundle(), time.Now())
}

// sniffListener hands Kitex connections once their first byte told TLS from
// plaintext (and a TLS handshake completed). Each connection is looked at
// in its own goroutine, bounded by HandshakeTimeout.
type sniffListener struct {
	net.Listener
	t *tlsServer

	start sync.Once
	conns chan net.Conn
	done  chan struct{}
	err   error

	mu      sync.Mutex
	open    map[*serverConn]struct{}
	drainAt time.Time
}

// drainGrace is how long a connection may still read once the listener
// closed: Kitex's Go net transport waits for every connection to close
// when it stops, and an idle client connection is closed by its client only.
const drainGrace = 500 * time.Millisecond

func newSniffListener(ln net.Listener, t *tlsServer) *sniffListener {
	return &sniffListener{Listener: ln, t: t, conns: make(chan net.Conn), done: make(chan struct{}), open: map[*serverConn]struct{}{}}
}

func (l *sniffListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *sniffListener) acceptLoop() {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			l.err = err
			close(l.done)
			return
		}
		go l.sniff(raw)
	}
}

// Close stops accepting; the open connections stop reading drainGrace
// from now.
func (l *sniffListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.drainAt.IsZero() {
		l.drainAt = time.Now().Add(drainGrace)
		for c := range l.open {
			_ = c.Conn.SetReadDeadline(l.drainAt)
		}
	}
	return err
}

func (l *sniffListener) sniff(raw net.Conn) {
	_ = raw.SetDeadline(time.Now().Add(HandshakeTimeout))
	br := bufio.NewReaderSize(raw, 1024)
	first, err := br.Peek(1)
	if err != nil {
		l.t.failed.Add(1)
		_ = raw.Close()
		return
	}
	conn := net.Conn(&prefixConn{Conn: raw, r: br})
	var state *tls.ConnectionState
	if first[0] == tlsRecordHandshake {
		tc := tls.Server(conn, l.t.config())
		if err := tc.Handshake(); err != nil {
			l.t.failed.Add(1)
			_ = tc.Close()
			return
		}
		st := tc.ConnectionState()
		conn, state = tc, &st
		l.t.tls.Add(1)
	} else {
		if l.t.mode() == api.TLSStrict {
			l.t.refused.Add(1)
			_ = raw.Close()
			return
		}
		l.t.plain.Add(1)
	}
	_ = raw.SetDeadline(time.Time{})
	c := &serverConn{Conn: conn, l: l, remote: &peerAddr{Addr: raw.RemoteAddr(), state: state}}
	if !l.track(c) {
		_ = conn.Close()
		return
	}
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *sniffListener) track(c *serverConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.drainAt.IsZero() {
		return false
	}
	l.open[c] = struct{}{}
	return true
}

func (l *sniffListener) forget(c *serverConn) {
	l.mu.Lock()
	delete(l.open, c)
	l.mu.Unlock()
}

func (l *sniffListener) readDeadline(t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.drainAt.IsZero() && (t.IsZero() || t.After(l.drainAt)) {
		return l.drainAt
	}
	return t
}

// prefixConn reads through the reader that peeked at its first byte.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// serverConn is a connection whose remote address carries its TLS state
// (nil for plaintext): Kitex's Go net transport wraps the connection it is
// given, but hands the wrapper's RemoteAddr on to the pipeline.
type serverConn struct {
	net.Conn
	l      *sniffListener
	remote *peerAddr
}

func (c *serverConn) RemoteAddr() net.Addr { return c.remote }

func (c *serverConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.l.readDeadline(t))
}

func (c *serverConn) SetDeadline(t time.Time) error {
	return errors.Join(c.Conn.SetWriteDeadline(t), c.SetReadDeadline(t))
}

func (c *serverConn) Close() error {
	c.l.forget(c)
	return c.Conn.Close()
}

type peerAddr struct {
	net.Addr
	state *tls.ConnectionState
}

type peerKey struct{}

// peerHandler puts a TLS connection's state in the context of every call
// the connection carries.
type peerHandler struct{}

var _ remote.InboundHandler = peerHandler{}

func (peerHandler) OnActive(ctx context.Context, conn net.Conn) (context.Context, error) {
	if a, ok := conn.RemoteAddr().(*peerAddr); ok && a.state != nil {
		ctx = context.WithValue(ctx, peerKey{}, a.state)
	}
	return ctx, nil
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
	id    *sdk.Identity
	addrs sync.Map // addr -> the service of an instance that serves mTLS

	mu        sync.Mutex
	tlsCalls  map[string]int64
	plaintext map[string]int64
}

// NewEncryption dials with id's certificate.
func NewEncryption(id *sdk.Identity) *Encryption {
	return &Encryption{id: id, tlsCalls: map[string]int64{}, plaintext: map[string]int64{}}
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

// secure tells whether the instance at addr is dialed mTLS.
func (e *Encryption) secure(addr string) bool {
	_, ok := e.addrs.Load(addr)
	return ok
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
	if !secure {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return newClientConn(conn, expires), nil
	}
	service := v.(string)
	own := e.id.Certificate()
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
			return verifyServer(cs.PeerCertificates, e.id.TrustBundle(), service)
		},
	}
	tc, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	conn := tc.(*tls.Conn)
	if peer := conn.ConnectionState().PeerCertificates; len(peer) > 0 && peer[0].NotAfter.Before(expires) {
		expires = peer[0].NotAfter
	}
	if own != nil && own.Leaf != nil && own.Leaf.NotAfter.Before(expires) {
		expires = own.Leaf.NotAfter
	}
	return newClientConn(conn, expires), nil
}

func verifyServer(chain []*x509.Certificate, roots *x509.CertPool, service string) error {
	if len(chain) == 0 {
		return errors.New("sextant: the server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("sextant: server certificate: %w", err)
	}
	got, err := sdk.SpiffeService(chain[0])
	if err != nil {
		return fmt.Errorf("sextant: server certificate: %w", err)
	}
	if got != service {
		return fmt.Errorf("sextant: the server's certificate is of service %q, not %q", got, service)
	}
	return nil
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

	closeOnce sync.Once
}

var _ remote.IsActive = (*clientConn)(nil)

func newClientConn(conn net.Conn, expires time.Time) *clientConn {
	return &clientConn{Conn: conn, r: bufiox.NewDefaultReader(conn), w: bufiox.NewDefaultWriter(conn), expires: expires}
}

func (c *clientConn) Reader() *bufiox.DefaultReader { return c.r }
func (c *clientConn) Writer() *bufiox.DefaultWriter { return c.w }
func (c *clientConn) Read(b []byte) (int, error)    { return c.r.Read(b) }

// IsActive tells the connection pool whether to reuse the connection.
func (c *clientConn) IsActive() bool { return time.Now().Before(c.expires) }

func (c *clientConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		_ = c.r.Release(nil)
		err = c.Conn.Close()
	})
	return err
}
