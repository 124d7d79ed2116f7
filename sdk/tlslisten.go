package sdk

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
)

// HandshakeTimeout bounds the first byte and the TLS handshake of a
// connection a TLSListener takes.
const HandshakeTimeout = 5 * time.Second

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// ConnStats count a TLSListener's connections by how they came.
type ConnStats struct {
	TLS              int64 `json:"tls"`               // TLS handshakes completed
	Plaintext        int64 `json:"plaintext"`         // plaintext connections served (permissive)
	PlaintextRefused int64 `json:"plaintext_refused"` // plaintext connections closed (strict)
	HandshakeFailed  int64 `json:"handshake_failed"`  // TLS handshakes that failed, or no first byte in time
}

// ErrPlaintext is what ListenerOptions.Failed is told of a plaintext
// connection refused in strict mode.
var ErrPlaintext = errors.New("sextant: plaintext connection refused: the port serves mTLS only")

// ListenerOptions configure a TLSListener.
type ListenerOptions struct {
	// Config is the TLS configuration of a handshake, asked for each
	// connection that starts one; nil refuses the handshake (no
	// certificate to serve yet).
	Config func() *tls.Config
	// Mode is api.TLSPermissive (TLS and plaintext) or api.TLSStrict (TLS
	// only), asked for each new connection; nil: permissive.
	Mode func() string
	// Failed (may be nil) is told of every connection refused: a TLS
	// handshake that failed or did not start in time, and in strict mode
	// a plaintext one (ErrPlaintext).
	Failed func(remote net.Addr, err error)
	// Roots is the trust bundle against which ConnPeer verifies the client
	// certificates of the listener's connections (nil: none).
	Roots func() *x509.CertPool
	// Advertise makes a Registrar of this process advertise the listener's
	// mode in the registration of an instance on its port, while Config
	// gives a certificate (api.TLSMetadataKey).
	Advertise bool
}

// TLSListener serves a port in mTLS and plaintext, or mTLS only: it reads
// each connection's first byte, hands a TLS handshake record (a
// ClientHello) to a TLS server with the configuration of the moment, and
// serves anything else in plaintext in permissive mode, or closes it in
// strict mode. Each connection is looked at in its own goroutine, bounded
// by HandshakeTimeout, so that a slow or silent client holds up no other.
// Closing it drains the open connections: they stop reading 500 ms later,
// so that a server that waits for its connections to close (Kitex's Go net
// transport) stops.
//
// A data plane's (NewTLSListener) presents the workload certificate and asks
// for the client's without verifying it at the handshake: the server's
// access control does it per request (VerifyPeer, ConnPeer), so that the
// identity policy decides what a missing, invalid or expired one means.
type TLSListener struct {
	net.Listener
	o ListenerOptions

	start sync.Once
	conns chan net.Conn
	done  chan struct{} // closed when the raw listener fails or closes
	err   error         // why, read after done

	mu      sync.Mutex
	open    map[*serverConn]struct{}
	drainAt time.Time // set once closed

	tls, plain, refused, failed atomic.Int64
}

// NewTLSListener serves ln with id's certificate in the mode mode returns
// for each new connection (api.TLSPermissive or api.TLSStrict; nil:
// permissive), and advertises it to a Registrar of the process.
func NewTLSListener(ln net.Listener, id *Identity, mode func() string) *TLSListener {
	return NewListener(ln, ListenerOptions{Config: id.listenerConfig, Mode: mode, Roots: id.TrustBundle, Advertise: true})
}

// NewWorkloadListener is NewTLSListener with the identity src gives when a
// connection comes (nil: none yet, TLS is refused and plaintext served).
func NewWorkloadListener(ln net.Listener, src func() *Identity, mode func() string) *TLSListener {
	return NewListener(ln, ListenerOptions{
		Config: func() *tls.Config {
			if id := src(); id != nil {
				return id.listenerConfig()
			}
			return nil
		},
		Roots: func() *x509.CertPool {
			if id := src(); id != nil {
				return id.TrustBundle()
			}
			return nil
		},
		Mode: mode, Advertise: true,
	})
}

// NewListener serves ln as o says.
func NewListener(ln net.Listener, o ListenerOptions) *TLSListener {
	if o.Mode == nil {
		o.Mode = func() string { return api.TLSPermissive }
	}
	l := &TLSListener{Listener: ln, o: o, conns: make(chan net.Conn), done: make(chan struct{}), open: map[*serverConn]struct{}{}}
	if o.Advertise {
		advertising.Store(l, struct{}{})
	}
	return l
}

// Connections counts the connections taken so far.
func (l *TLSListener) Connections() ConnStats {
	return ConnStats{TLS: l.tls.Load(), Plaintext: l.plain.Load(), PlaintextRefused: l.refused.Load(), HandshakeFailed: l.failed.Load()}
}

// Advertised is the mode an instance served by l advertises in discovery:
// its mode while it has a certificate to serve, "" otherwise.
func (l *TLSListener) Advertised() string {
	if l.o.Config == nil || l.o.Config() == nil {
		return ""
	}
	return l.o.Mode()
}

// ConnTLS is the TLS state of a connection a TLSListener took, found from
// its remote address (which frameworks pass on when they wrap the
// connection); nil for plaintext.
func ConnTLS(remote net.Addr) *tls.ConnectionState {
	if a, ok := remote.(*peerAddr); ok {
		return a.state
	}
	return nil
}

// ConnPeer is who sent a request on the connection whose remote address is
// remote, declaring itself declared: VerifyPeer of the certificate chain
// its TLS handshake presented, against the trust bundle of the listener
// that took it; a missing identity for plaintext (or a connection no
// TLSListener took).
func ConnPeer(remote net.Addr, declared string, now time.Time) Peer {
	a, ok := remote.(*peerAddr)
	if !ok || a.state == nil {
		return Peer{Declared: declared, Identity: api.IdentityMissing}
	}
	return VerifyPeer(declared, a.state.PeerCertificates, a.roots, now)
}

// Accept implements net.Listener.
func (l *TLSListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *TLSListener) acceptLoop() {
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

// drainGrace is how long a connection may still read once the listener
// closed: Kitex's Go net transport waits for every connection to close
// when it stops, and an idle client connection is closed by its client only.
const drainGrace = 500 * time.Millisecond

// Close stops accepting; the open connections stop reading drainGrace
// from now (a request being read is read, those in hand are answered).
func (l *TLSListener) Close() error {
	advertising.Delete(l)
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

func (l *TLSListener) refuse(raw net.Conn, count *atomic.Int64, err error) {
	count.Add(1)
	_ = raw.Close()
	if l.o.Failed != nil {
		l.o.Failed(raw.RemoteAddr(), err)
	}
}

func (l *TLSListener) sniff(raw net.Conn) {
	_ = raw.SetDeadline(time.Now().Add(HandshakeTimeout))
	br := bufio.NewReaderSize(raw, 1024)
	first, err := br.Peek(1)
	if err != nil {
		l.refuse(raw, &l.failed, err)
		return
	}
	conn := net.Conn(&prefixConn{Conn: raw, r: br})
	var state *tls.ConnectionState
	var roots *x509.CertPool
	if first[0] == tlsRecordHandshake {
		var cfg *tls.Config
		if l.o.Config != nil {
			cfg = l.o.Config()
		}
		if cfg == nil {
			l.refuse(raw, &l.failed, errors.New("sextant: no certificate to serve TLS with yet"))
			return
		}
		tc := tls.Server(conn, cfg)
		if err := tc.Handshake(); err != nil {
			_ = tc.Close()
			l.refuse(raw, &l.failed, err)
			return
		}
		st := tc.ConnectionState()
		conn, state = tc, &st
		if l.o.Roots != nil {
			roots = l.o.Roots()
		}
		l.tls.Add(1)
	} else {
		if l.o.Mode() == api.TLSStrict {
			l.refuse(raw, &l.refused, ErrPlaintext)
			return
		}
		l.plain.Add(1)
	}
	_ = raw.SetDeadline(time.Time{})
	c := &serverConn{Conn: conn, l: l, remote: &peerAddr{Addr: raw.RemoteAddr(), state: state, roots: roots}}
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

func (l *TLSListener) track(c *serverConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.drainAt.IsZero() {
		return false
	}
	l.open[c] = struct{}{}
	return true
}

func (l *TLSListener) forget(c *serverConn) {
	l.mu.Lock()
	delete(l.open, c)
	l.mu.Unlock()
}

func (l *TLSListener) readDeadline(t time.Time) time.Time {
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
// (nil for plaintext): frameworks wrap the connection they are given, but
// hand the wrapper's RemoteAddr on.
type serverConn struct {
	net.Conn
	l      *TLSListener
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
	roots *x509.CertPool // the listener's trust bundle at the handshake
}

// advertising are the listeners a Registrar advertises (Advertise).
var advertising sync.Map // *TLSListener -> struct{}

// advertisedOn is the mode advertised for an instance at addr (host:port):
// that of an advertising listener of this process on the same port, "" when
// there is none or it has no certificate yet.
func advertisedOn(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	mode := ""
	advertising.Range(func(k, _ any) bool {
		l := k.(*TLSListener)
		if _, p, err := net.SplitHostPort(l.Addr().String()); err == nil && p == port {
			mode = l.Advertised()
			return false
		}
		return true
	})
	return mode
}

// ExpiryMargin is how long before a certificate expires a client stops
// sending new requests on a connection opened with it (ConnReuseUntil).
const ExpiryMargin = 5 * time.Second

// ConnReuseUntil is until when a client connection opened at now may carry
// new requests: at most maxLife, and before the first of the certificates
// it was opened with (its own and its server's, expiring at notAfter;
// zero times are left out) expires, by ExpiryMargin or a quarter of what
// is left of it if less. A server checks a caller's certificate when a
// request arrives: the margin covers the time a request spends on its way
// and clocks a little apart, so that no request arrives on a connection
// whose certificate expired.
func ConnReuseUntil(now time.Time, maxLife time.Duration, notAfter ...time.Time) time.Time {
	until := now.Add(maxLife)
	for _, na := range notAfter {
		if na.IsZero() {
			continue
		}
		left := na.Sub(now)
		if t := na.Add(-min(ExpiryMargin, left/4)); t.Before(until) {
			until = t
		}
	}
	return until
}
