package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/sextant-mesh/sextant/internal/pki"
)

// XDSServerTLS is the TLS of an ADS port (docs/xds.md): the service's own
// certificate, and a client certificate chained to the trust bundle
// required at the handshake, as on the Kitex hops, but from any service:
// every workload may read the mesh's endpoints, and its identity decides
// which governance it gets. Nil when the service has no TLS.
func (s *Security) XDSServerTLS() *tls.Config {
	if s.kitex == nil {
		return nil
	}
	g := &callerGuard{s: s}
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		GetCertificate:   s.kitex.cert,
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: g.verifyConnection,
	}
}

// PeerService names the service of a connection's client certificate, as
// its SPIFFE ID says, once verified against the trust bundle now.
func (s *Security) PeerService(cs tls.ConnectionState) (string, error) {
	a := s.CA.Authority()
	if a == nil {
		return "", fmt.Errorf("%w: no certificate authority known yet", pki.ErrUntrusted)
	}
	id, err := a.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth, time.Now())
	if err != nil {
		return "", err
	}
	return id.Service, nil
}
