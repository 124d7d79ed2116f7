package hertzsdk

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/cloudwego/hertz/pkg/network"
	"github.com/cloudwego/hertz/pkg/network/standard"
	"github.com/cloudwego/hertz/pkg/protocol"

	"github.com/sextant-mesh/sextant/sdk"
)

// Encryption is a Hertz client's side of encryption between data planes,
// for the calls of one callee service: with its ClientOptions on the
// client and its Middleware after Balance in the chain, a request Balance
// sent to an instance that advertises mTLS in discovery (registration
// metadata tls) goes over https, presenting id's certificate and requiring
// a server certificate chained to the trust bundle that names callee; a
// request to any other instance stays plaintext. Both are counted, and
// CallReporter reports the plaintext ones (calls[].plaintext).
type Encryption struct {
	id     *sdk.Identity
	callee string

	tlsCalls, plaintext atomic.Int64
}

// NewEncryption dials callee's instances with id's certificate.
func NewEncryption(id *sdk.Identity, callee string) *Encryption {
	return &Encryption{id: id, callee: callee}
}

// ClientOptions are the options of the Hertz client: Hertz's standard
// dialer (netpoll's has no TLS), the TLS configuration, and connections of
// a minute at most (one opened with a certificate since renewed is not
// used until that one expires).
func (e *Encryption) ClientOptions() []config.ClientOption {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := e.id.Certificate(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil
		},
		// The server is verified by its SPIFFE ID, not its host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return sdk.VerifyServer(cs.PeerCertificates, e.id.TrustBundle(), e.callee)
		},
	}
	// A connection lives at most a minute: a TLS connection presents the
	// certificate it was opened with, and the server checks it per request.
	return []config.ClientOption{client.WithTLSConfig(cfg), client.WithDialer(standard.NewDialer()), client.WithMaxConnDuration(time.Minute)}
}

// Middleware sends a request over https when Balance picked an instance
// that advertises mTLS, and counts each request by how it went. Requests
// Balance did not send are left alone and not counted.
func (e *Encryption) Middleware() client.Middleware {
	return func(next client.Endpoint) client.Endpoint {
		return func(ctx context.Context, req *protocol.Request, resp *protocol.Response) error {
			to, ok := ctx.Value(pickedKey{}).(*picked)
			if !ok || to.instance == "" {
				return next(ctx, req, resp)
			}
			to.encrypting, to.tls = true, to.advertises
			if to.tls {
				req.URI().SetScheme("https")
				e.tlsCalls.Add(1)
			} else {
				req.URI().SetScheme("http")
				e.plaintext.Add(1)
			}
			return next(ctx, req, resp)
		}
	}
}

// TLSCalls are the requests sent over mTLS so far.
func (e *Encryption) TLSCalls() int64 { return e.tlsCalls.Load() }

// PlaintextCalls are the requests sent in plaintext so far.
func (e *Encryption) PlaintextCalls() int64 { return e.plaintext.Load() }

// ClientOptions are the Hertz client options of the automatic mTLS, the
// client side of ServerOptions: with a credential in the environment
// ($SEXTANT_TOKEN, else a service-account token file, sdk.WorkloadOf)
// whose config-center is known (sdk.Workload.Active), Hertz's standard
// dialer dials mTLS, with the workload's certificate, to
// the instances Balance picked that advertise it in discovery, verifying
// that the server's certificate chains to the trust bundle and names the
// service Balance picked it for, and plaintext to the others (and to all
// until the workload has its certificate). Requests keep their http://
// URLs. A connection lives at most a minute (WithMaxConnDuration), so that
// one opened in plaintext, or with a certificate since renewed, is not
// used for long. CallReporter reports the calls sent in plaintext. Without
// a credential (or with $SEXTANT_MTLS off) they are empty: Hertz's
// defaults.
func ClientOptions() []config.ClientOption {
	w := sdk.WorkloadOf("")
	if !w.Active() {
		return nil
	}
	autoClients.Add(1)
	return []config.ClientOption{
		client.WithDialer(&workloadDialer{inner: standard.NewDialer(), w: w}),
		client.WithMaxConnDuration(time.Minute),
	}
}

var (
	// autoClients counts the clients made with ClientOptions' automatic
	// mTLS: Balance then tells CallReporter which calls went plaintext.
	autoClients atomic.Int32
	// advertisedAddrs are the addresses of the instances Balance last
	// picked that advertise mTLS, with their service.
	advertisedAddrs sync.Map // addr -> service
)

// automaticTLS tells whether a call Balance sends to an instance that
// advertises mTLS (advertises) goes over the automatic mTLS, and whether
// the calls are counted as such (encrypting). The process's Hertz clients
// are taken to be made with ClientOptions once one is; an Encryption's
// Middleware after Balance decides for its own client.
func automaticTLS(advertises bool) (tls, encrypting bool) {
	if autoClients.Load() == 0 {
		return false, false
	}
	return advertises && sdk.WorkloadOf("").Identity() != nil, true
}

// workloadDialer is ClientOptions' dialer.
type workloadDialer struct {
	inner network.Dialer
	w     *sdk.Workload
}

var _ network.Dialer = (*workloadDialer)(nil)

func (d *workloadDialer) DialConnection(n, address string, timeout time.Duration, tlsConfig *tls.Config) (network.Conn, error) {
	if tlsConfig != nil { // https: the client's own TLS
		return d.inner.DialConnection(n, address, timeout, tlsConfig)
	}
	v, ok := advertisedAddrs.Load(address)
	id := d.w.Identity()
	if !ok || id == nil {
		return d.inner.DialConnection(n, address, timeout, nil)
	}
	service := v.(string)
	conn, err := d.inner.DialConnection(n, address, timeout, nil)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 || timeout > sdk.HandshakeTimeout {
		timeout = sdk.HandshakeTimeout
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	tc, err := d.inner.AddTLS(conn, &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return clientCert(id), nil },
		// The server is verified by its SPIFFE ID, not its host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return sdk.VerifyServer(cs.PeerCertificates, id.TrustBundle(), service)
		},
	})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

func clientCert(id *sdk.Identity) *tls.Certificate {
	if c := id.Certificate(); c != nil {
		return c
	}
	return &tls.Certificate{}
}

func (d *workloadDialer) DialTimeout(n, address string, timeout time.Duration, tlsConfig *tls.Config) (net.Conn, error) {
	return d.inner.DialTimeout(n, address, timeout, tlsConfig)
}

func (d *workloadDialer) AddTLS(conn network.Conn, tlsConfig *tls.Config) (network.Conn, error) {
	return d.inner.AddTLS(conn, tlsConfig)
}
