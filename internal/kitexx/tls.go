package kitexx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"time"

	"github.com/cloudwego/gopkg/bufiox"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/remote"
	"github.com/cloudwego/kitex/pkg/remote/trans/gonet"
	"github.com/cloudwego/kitex/server"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// Kitex's default transport (netpoll) reads sockets itself and has no TLS.
// A server or client with TLS runs on Kitex's Go net transport instead: the
// server on a listener that completes each TLS handshake before Kitex sees
// the connection, the client with a dialer that completes it before the
// connection is pooled. Both ends authenticate once per connection, at its
// handshake; the connections are kept alive and reused, so a handshake is
// paid once per connection, not per call.

// HandshakeTimeout bounds a TLS handshake on a Kitex port or dial.
const HandshakeTimeout = sdk.HandshakeTimeout

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
// is not reused close to either end's certificate's expiry
// (sdk.ConnReuseUntil): the next call dials again, presenting the
// certificate cfg gives then.
func TLSClientOptions(cfg *tls.Config) []client.Option {
	return []client.Option{
		client.WithTransHandlerFactory(gonet.NewCliTransHandlerFactory()),
		client.WithDialer(tlsDialer{cfg: cfg}),
	}
}

// newTLSListener is the SDK's listener in strict mode: every connection
// must complete a TLS handshake with cfg (which verifies the client) before
// Kitex sees it; a plaintext one is refused (sdk.ErrPlaintext).
func newTLSListener(ln net.Listener, cfg *tls.Config, failed func(net.Addr, error)) *sdk.TLSListener {
	return sdk.NewListener(ln, sdk.ListenerOptions{
		Config: func() *tls.Config { return cfg },
		Mode:   func() string { return api.TLSStrict },
		Failed: failed,
	})
}

// PeerCertificates is the certificate chain the caller of ctx's call
// presented in its TLS handshake, leaf first, as the handshake verified it;
// ok is false on a server without TLS.
func PeerCertificates(ctx context.Context) (chain []*x509.Certificate, ok bool) {
	st, ok := ctx.Value(peerKey{}).(*tls.ConnectionState)
	if !ok || st == nil {
		return nil, false
	}
	return st.PeerCertificates, true
}

type peerKey struct{}

// peerHandler puts a TLS connection's state in the context of every call
// the connection carries.
type peerHandler struct{}

var _ remote.InboundHandler = peerHandler{}

func (peerHandler) OnActive(ctx context.Context, conn net.Conn) (context.Context, error) {
	if st := sdk.ConnTLS(conn.RemoteAddr()); st != nil {
		ctx = context.WithValue(ctx, peerKey{}, st)
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
	var peerEnd, ownEnd time.Time
	if peer := conn.ConnectionState().PeerCertificates; len(peer) > 0 {
		peerEnd = peer[0].NotAfter
	}
	if own != nil && own.Leaf != nil {
		ownEnd = own.Leaf.NotAfter
	}
	// Not reused close to either certificate's expiry: the server checks
	// the caller's at each call.
	c.expires = sdk.ConnReuseUntil(time.Now(), maxConnLifetime, peerEnd, ownEnd)
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
