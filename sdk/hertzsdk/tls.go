package hertzsdk

import (
	"context"
	"crypto/tls"
	"sync/atomic"

	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/common/config"
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
// dialer (netpoll's has no TLS) and the TLS configuration.
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
	return []config.ClientOption{client.WithTLSConfig(cfg), client.WithDialer(standard.NewDialer())}
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
			to.encrypting = true
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
