package kitexx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/cloudwego/gopkg/bufiox"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/remote"
	"github.com/cloudwego/kitex/pkg/remote/trans/gonet"
	"github.com/cloudwego/kitex/server"
)

// Kitex's default transport (netpoll) reads sockets itself and has no TLS.
// A server or client with TLS runs on Kitex's Go net transport instead: the
// server on a listener that completes each TLS handshake before Kitex sees
// the connection, the client with a dialer that completes it before the
// connection is pooled. Both ends authenticate once per connection, at its
// handshake; the connections are kept alive and reused, so a handshake is
// paid once per connection, not per call.

// HandshakeTimeout bounds a TLS handshake on a Kitex port or dial.
const HandshakeTimeout = 5 * time.Second

// TLSServerOptions serve Kitex over TLS with cfg on ln (the listener given
// to NewServer): the options to pass to NewServer after it. A handshake that
// fails (cfg's verification refusing the client, a client without TLS)
// closes the connection before Kitex reads a byte of it, and is told to
// failed (may be nil). PeerCertificates tells a handler who called.
func TLSServerOptions(ln net.Listener, cfg *tls.Config, failed func(remote net.Addr, err error)) []server.Option {
	return []server.Option{
		server.WithListener(newTLSListener(ln, cfg, failed)),
		server.WithTransServerFactory(gonet.NewTransServerFactory()),
		server.WithTransHandlerFactory(gonet.NewSvrTransHandlerFactory()),
		server.WithBoundHandler(peerHandler{}),
	}
}

// TLSClientOptions dial Kitex servers over TLS with cfg. A pooled connection
// is not reused once either end's certificate has expired: the next call
// dials again, presenting the certificate cfg gives then.
func TLSClientOptions(cfg *tls.Config) []client.Option {
	return []client.Option{
		client.WithTransHandlerFactory(gonet.NewCliTransHandlerFactory()),
		client.WithDialer(tlsDialer{cfg: cfg}),
	}
}

// PeerCertificates is the certificate chain the caller of ctx's call
// presented in its TLS handshake, leaf first, as the handshake verified it;
// ok is false on a server without TLS.
func PeerCertificates(ctx context.Context) (chain []*x509.Certificate, ok bool) {
	st, ok := ctx.Value(peerKey{}).(*tls.ConnectionState)
	if !ok {
		return nil, false
	}
	return st.PeerCertificates, true
}

type peerKey struct{}

// tlsListener hands Kitex connections whose TLS handshake is complete. Each
// handshake runs in its own goroutine, bounded by HandshakeTimeout, so that a
// slow or silent client holds up no other.
type tlsListener struct {
	net.Listener
	cfg    *tls.Config
	failed func(net.Addr, error)

	start sync.Once
	conns chan net.Conn
	done  chan struct{} // closed when the raw listener fails or closes
	err   error         // why, read after done

	mu      sync.Mutex
	open    map[*serverConn]struct{}
	drainAt time.Time // set once closed
}

// drainGrace is how long a connection may still read once the listener
// closed: long enough to finish reading a call that has begun.
const drainGrace = 500 * time.Millisecond

func newTLSListener(ln net.Listener, cfg *tls.Config, failed func(net.Addr, error)) *tlsListener {
	return &tlsListener{Listener: ln, cfg: cfg, failed: failed, conns: make(chan net.Conn), done: make(chan struct{}),
		open: map[*serverConn]struct{}{}}
}

// Close stops accepting and drains the connections. Kitex's Go net
// transport waits, when it stops, for every connection to close, and an
// idle client connection is closed by its client only: each connection
// stops reading drainGrace from now (a call being read is read, the calls
// in hand are answered), then Kitex closes it.
func (l *tlsListener) Close() error {
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

// track adds c to the open connections, unless the listener is closed.
func (l *tlsListener) track(c *serverConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.drainAt.IsZero() {
		return false
	}
	l.open[c] = struct{}{}
	return true
}

func (l *tlsListener) forget(c *serverConn) {
	l.mu.Lock()
	delete(l.open, c)
	l.mu.Unlock()
}

// readDeadline is t, or the drain deadline once closed.
func (l *tlsListener) readDeadline(t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.drainAt.IsZero() && (t.IsZero() || t.After(l.drainAt)) {
		return l.drainAt
	}
	return t
}

func (l *tlsListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *tlsListener) acceptLoop() {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			l.err = err
			close(l.done)
			return
		}
		go l.handshake(raw)
	}
}

func (l *tlsListener) handshake(raw net.Conn) {
	tc := tls.Server(raw, l.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = tc.Close()
		if l.failed != nil {
			l.failed(raw.RemoteAddr(), err)
		}
		return
	}
	st := tc.ConnectionState()
	c := &serverConn{Conn: tc, l: l, remote: &peerAddr{Addr: raw.RemoteAddr(), state: &st}}
	if !l.track(c) {
		_ = tc.Close()
		return
	}
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// serverConn is a server's TLS connection whose remote address carries the
// handshake's state: Kitex's Go net transport wraps the connection it is
// given, but hands the wrapper's RemoteAddr on to the pipeline.
type serverConn struct {
	net.Conn
	l      *tlsListener
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

// peerHandler puts a TLS connection's state in the context of every call
// the connection carries.
type peerHandler struct{}

var _ remote.InboundHandler = peerHandler{}

func (peerHandler) OnActive(ctx context.Context, conn net.Conn) (context.Context, error) {
	if a, ok := conn.RemoteAddr().(*peerAddr); ok {
		ctx = context.WithValue(ctx, peerKey{}, a.state)
	}
	return ctx, nil
}

func (peerHandler) OnInactive(ctx context.Context, _ net.Conn) context.Context { return ctx }

func (peerHandler) OnRead(ctx context.Context, _ net.Conn) (context.Context, error) { return ctx, nil }

func (peerHandler) OnMessage(ctx context.Context, _, _ remote.Message) (context.Context, error) {
	return ctx, nil
}

// tlsDialer dials a Kitex server and completes the TLS handshake.
type tlsDialer struct{ cfg *tls.Config }

var _ remote.Dialer = tlsDialer{}

func (d tlsDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > HandshakeTimeout {
		timeout = HandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The connect timeout bounds the dial and the handshake together.
	cfg := d.cfg.Clone()
	var own *tls.Certificate
	if get := d.cfg.GetClientCertificate; get != nil {
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := get(cri)
			own = c
			return c, err
		}
	}
	tc, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	conn := tc.(*tls.Conn)
	c := &clientConn{Conn: conn, r: bufiox.NewDefaultReader(conn), w: bufiox.NewDefaultWriter(conn),
		expires: time.Now().Add(maxConnLifetime)}
	if peer := conn.ConnectionState().PeerCertificates; len(peer) > 0 && peer[0].NotAfter.Before(c.expires) {
		c.expires = peer[0].NotAfter
	}
	if own != nil && own.Leaf != nil && own.Leaf.NotAfter.Before(c.expires) {
		c.expires = own.Leaf.NotAfter
	}
	return c, nil
}

// maxConnLifetime bounds how long a client's TLS connection is reused when
// neither end's certificate bounds it sooner.
const maxConnLifetime = 24 * time.Hour

// clientConn is a client's TLS connection with the buffered reader and
// writer Kitex's Go net transport reads and writes through.
type clientConn struct {
	net.Conn
	r       *bufiox.DefaultReader
	w       *bufiox.DefaultWriter
	expires time.Time

	closeOnce sync.Once
}

var _ remote.IsActive = (*clientConn)(nil)

func (c *clientConn) Reader() *bufiox.DefaultReader { return c.r }
func (c *clientConn) Writer() *bufiox.DefaultWriter { return c.w }
func (c *clientConn) Read(b []byte) (int, error)    { return c.r.Read(b) }

// IsActive tells the connection pool whether to reuse the connection: not
// once a certificate it was opened with has expired.
func (c *clientConn) IsActive() bool { return time.Now().Before(c.expires) }

func (c *clientConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		_ = c.r.Release(nil)
		err = c.Conn.Close()
	})
	return err
}
