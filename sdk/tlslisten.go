package sdk

import (
	"bufio"
	"crypto/tls"
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

// TLSListener serves a data plane's port in mTLS and plaintext, or mTLS
// only: it reads each connection's first byte, hands a TLS handshake record
// (a ClientHello) to a TLS server that presents the workload certificate
// and asks for the client's, and serves anything else in plaintext in
// permissive mode, or closes it in strict mode. The client's certificate is
// not verified at the handshake: the server's access control does it per
// request (VerifyPeer, ConnTLS), so that the identity policy decides what a
// missing, invalid or expired one means. Each connection is looked at in
// its own goroutine, bounded by HandshakeTimeout, so that a slow or silent
// client holds up no other.
type TLSListener struct {
	net.Listener
	id   *Identity
	mode func() string

	start sync.Once
	conns chan net.Conn
	done  chan struct{}
	err   error

	mu      sync.Mutex
	open    map[*serverConn]struct{}
	drainAt time.Time

	tls, plain, refused, failed atomic.Int64
}

// NewTLSListener serves ln with id's certificate in the mode mode returns
// for each new connection (api.TLSPermissive or api.TLSStrict; nil:
// permissive).
func NewTLSListener(ln net.Listener, id *Identity, mode func() string) *TLSListener {
	if mode == nil {
		mode = func() string { return api.TLSPermissive }
	}
	return &TLSListener{Listener: ln, id: id, mode: mode, conns: make(chan net.Conn), done: make(chan struct{}), open: map[*serverConn]struct{}{}}
}

// Connections counts the connections taken so far.
func (l *TLSListener) Connections() ConnStats {
	return ConnStats{TLS: l.tls.Load(), Plaintext: l.plain.Load(), PlaintextRefused: l.refused.Load(), HandshakeFailed: l.failed.Load()}
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

func (l *TLSListener) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := l.id.Certificate()
			if c == nil {
				return nil, errors.New("sextant: the workload certificate expired and is not renewed yet")
			}
			// Asked, not verified here: the identity policy decides.
			return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*c}, ClientAuth: tls.RequestClientCert}, nil
		},
	}
}

func (l *TLSListener) sniff(raw net.Conn) {
	_ = raw.SetDeadline(time.Now().Add(HandshakeTimeout))
	br := bufio.NewReaderSize(raw, 1024)
	first, err := br.Peek(1)
	if err != nil {
		l.failed.Add(1)
		_ = raw.Close()
		return
	}
	conn := net.Conn(&prefixConn{Conn: raw, r: br})
	var state *tls.ConnectionState
	if first[0] == tlsRecordHandshake {
		tc := tls.Server(conn, l.config())
		if err := tc.Handshake(); err != nil {
			l.failed.Add(1)
			_ = tc.Close()
			return
		}
		st := tc.ConnectionState()
		conn, state = tc, &st
		l.tls.Add(1)
	} else {
		if l.mode() == api.TLSStrict {
			l.refused.Add(1)
			_ = raw.Close()
			return
		}
		l.plain.Add(1)
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
}
