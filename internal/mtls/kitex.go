package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/pki"
)

// The Kitex hops between the control plane's services (the mixer's
// Aggregator.Ingest to a calculator, a calculator's MeshCore.PublishPolicy
// and PublishPolicies to mesh-core) use mTLS when the service has TLS: the
// server requires a client certificate chained to the trust bundle and
// lets only the one service that calls it in; the client presents the
// service's own certificate and verifies the server's SPIFFE ID. Without TLS
// they stay plaintext and unauthenticated (docs/security.md).

// Errors of a Kitex caller refused, classified with errors.Is.
var (
	// ErrNoClientCertificate: the caller presented no certificate.
	ErrNoClientCertificate = errors.New("a client certificate is required on this Kitex port")
	// ErrWrongCaller: a valid certificate of a service that may not call.
	ErrWrongCaller = errors.New("caller not allowed")
)

// Reasons a Kitex call or connection is refused, as counted.
const (
	RefusedNoCertificate = "no_certificate"
	RefusedUntrusted     = "untrusted"
	RefusedExpired       = "expired"
	RefusedWrongCaller   = "wrong_caller"
	RefusedHandshake     = "handshake" // not TLS, or TLS that failed for another reason
)

// kitexTLS is what a service with TLS uses on its Kitex hops: its own
// certificate, renewed without restart, and the trust bundle as etcd has it.
type kitexTLS struct {
	ca       *pki.Current
	cert     func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	sessions tls.ClientSessionCache
}

// KitexTLS tells whether the service's Kitex hops use mTLS.
func (s *Security) KitexTLS() bool { return s.kitex != nil }

// ServiceID is the identity of the control plane's service as the
// authority known now names it.
func (s *Security) ServiceID(service string) (pki.ID, error) {
	a := s.CA.Authority()
	if a == nil {
		return pki.ID{}, fmt.Errorf("%w: no certificate authority known yet", pki.ErrUntrusted)
	}
	return pki.ID{TrustDomain: a.TrustDomain(), Namespace: ServiceNamespace, Service: service}, nil
}

// KitexClientOptions are the options of a Kitex client of the control
// plane's service server: with TLS, it dials mTLS, presents this service's
// certificate and accepts only a server whose certificate chains to the
// trust bundle and names server; without, none.
func (s *Security) KitexClientOptions(server string) []client.Option {
	if s.kitex == nil {
		return nil
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.kitex.cert(nil)
		},
		// The server is verified by its SPIFFE ID, not its host name: the
		// chain and the ID are checked in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return s.verifyServer(cs.PeerCertificates, server)
		},
		ClientSessionCache: s.kitex.sessions,
	}
	return kitexx.TLSClientOptions(cfg)
}

func (s *Security) verifyServer(chain []*x509.Certificate, server string) error {
	want, err := s.ServiceID(server)
	if err != nil {
		return err
	}
	id, err := s.CA.Authority().Verify(chain, x509.ExtKeyUsageServerAuth, time.Now())
	if err != nil {
		return fmt.Errorf("Kitex server certificate: %w", err)
	}
	if id != want {
		return fmt.Errorf("%w: the Kitex server is %s, not %s", ErrWrongCaller, id, want)
	}
	return nil
}

// KitexServerOptions are the options of the Kitex server on ln (the
// listener given to kitexx.NewServer) that only the control plane's
// services callers may call. With TLS it serves mTLS only: a connection
// without a client certificate chained to the trust bundle fails its
// handshake, and a call from a valid certificate of another identity is
// refused with a Kitex error (kerrors.ErrACL). Refusals are counted in
// metric (by reason) on reg, and logged. Without TLS, none: anyone may call.
func (s *Security) KitexServerOptions(ln net.Listener, reg prometheus.Registerer, metric string, log *slog.Logger, callers ...string) []server.Option {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metric,
		Help: "Kitex connections and calls refused, by reason (no_certificate, untrusted, expired, wrong_caller, handshake); always 0 without TLS, where anyone may call.",
	}, []string{"reason"})
	reg.MustRegister(refused)
	if s.kitex == nil {
		return nil
	}
	for _, r := range []string{RefusedNoCertificate, RefusedUntrusted, RefusedExpired, RefusedWrongCaller, RefusedHandshake} {
		refused.WithLabelValues(r)
	}
	g := &callerGuard{s: s, callers: callers, refused: refused, log: log}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: s.kitex.cert,
		// Asked, then required in VerifyConnection, so that a missing
		// certificate is told apart from a bad one.
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: g.verifyConnection,
	}
	opts := kitexx.TLSServerOptions(ln, cfg, g.handshakeFailed)
	return append(opts, server.WithMiddleware(g.middleware))
}

// callerGuard admits the calls of the allowed callers only.
type callerGuard struct {
	s       *Security
	callers []string
	refused *prometheus.CounterVec
	log     *slog.Logger
}

// verifyConnection requires a client certificate chained to the trust
// bundle, for client use, at the handshake.
func (g *callerGuard) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return ErrNoClientCertificate
	}
	a := g.s.CA.Authority()
	if a == nil {
		return fmt.Errorf("%w: no certificate authority known yet", pki.ErrUntrusted)
	}
	_, err := a.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth, time.Now())
	return err
}

// handshakeFailed counts and logs a connection whose handshake failed.
func (g *callerGuard) handshakeFailed(remote net.Addr, err error) {
	reason := RefusedHandshake
	switch {
	case errors.Is(err, ErrNoClientCertificate):
		reason = RefusedNoCertificate
	case errors.Is(err, pki.ErrExpired):
		reason = RefusedExpired
	case errors.Is(err, pki.ErrUntrusted):
		reason = RefusedUntrusted
	}
	g.refused.WithLabelValues(reason).Inc()
	g.log.Warn("Kitex connection refused", "remote", remote.String(), "reason", reason, "err", err)
}

// middleware admits a call whose connection's certificate (verified at the
// handshake) is still valid and names one of the callers.
func (g *callerGuard) middleware(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp any) error {
		if err := g.admit(ctx); err != nil {
			return err
		}
		return next(ctx, req, resp)
	}
}

func (g *callerGuard) admit(ctx context.Context) error {
	method, remote := "", ""
	if ri := rpcinfo.GetRPCInfo(ctx); ri != nil {
		method = ri.To().Method()
		if a := ri.From().Address(); a != nil {
			remote = a.String()
		}
	}
	refuse := func(reason string, err error) error {
		g.refused.WithLabelValues(reason).Inc()
		g.log.Warn("Kitex call refused", "method", method, "remote", remote, "reason", reason, "err", err)
		return kerrors.ErrACL.WithCause(err)
	}
	chain, ok := kitexx.PeerCertificates(ctx)
	if !ok || len(chain) == 0 {
		return refuse(RefusedNoCertificate, ErrNoClientCertificate)
	}
	leaf := chain[0]
	if now := time.Now(); now.After(leaf.NotAfter) {
		return refuse(RefusedExpired, fmt.Errorf("%w: certificate %s expired at %s", pki.ErrExpired,
			pki.SerialOf(leaf), leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	id, err := pki.IDOf(leaf)
	if err != nil {
		return refuse(RefusedUntrusted, fmt.Errorf("%w: %v", pki.ErrUntrusted, err))
	}
	for _, c := range g.callers {
		if want, err := g.s.ServiceID(c); err == nil && id == want {
			return nil
		}
	}
	return refuse(RefusedWrongCaller, fmt.Errorf("%w: %s may not call %s; only %s may", ErrWrongCaller, id, method, g.allowed()))
}

func (g *callerGuard) allowed() string {
	names := make([]string, len(g.callers))
	for i, c := range g.callers {
		names[i] = "ns/" + ServiceNamespace + "/sa/" + c
	}
	return strings.Join(slices.Clip(names), ", ")
}
