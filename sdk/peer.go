package sdk

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
)

// Peer is who sent a request: the caller name it declares (the
// x-sextant-caller header, the TTHeader service name) and, when it came
// over mTLS, the service its certificate names. Access rules check Service
// when Identity is api.IdentityVerified, Declared otherwise (as the
// service's identity policy allows).
type Peer struct {
	Declared string
	Service  string // the certificate's SPIFFE service, when verified
	Identity string // api.IdentityVerified, Missing, Invalid or Expired
	Err      error  // why the identity is invalid or expired
}

// VerifyPeer tells who presented chain (leaf first, as a TLS handshake
// gives it; empty when there was none) at now: its certificate must chain
// to roots for client use and carry one SPIFFE ID of the form
// spiffe://<trust domain>/ns/<namespace>/sa/<service>.
func VerifyPeer(declared string, chain []*x509.Certificate, roots *x509.CertPool, now time.Time) Peer {
	p := Peer{Declared: declared, Identity: api.IdentityMissing}
	if len(chain) == 0 {
		return p
	}
	leaf := chain[0]
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		p.Identity, p.Err = api.IdentityExpired, fmt.Errorf("certificate valid from %s to %s", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		return p
	}
	p.Identity = api.IdentityInvalid
	if roots == nil {
		p.Err = errors.New("no trust bundle")
		return p
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		p.Err = err
		return p
	}
	svc, err := SpiffeService(leaf)
	if err != nil {
		p.Err = err
		return p
	}
	p.Service, p.Identity = svc, api.IdentityVerified
	return p
}

// SpiffeService is the service the one SPIFFE ID of cert names.
func SpiffeService(cert *x509.Certificate) (string, error) {
	service, n := "", 0
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		n++
		parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
		if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
			return "", fmt.Errorf("spiffe ID %q is not of the form spiffe://<trust domain>/ns/<namespace>/sa/<service>", u)
		}
		service = parts[3]
	}
	if n != 1 {
		return "", fmt.Errorf("the certificate carries %d spiffe IDs, not one", n)
	}
	return service, nil
}

// VerifyServer checks a data-plane server's certificate chain (leaf
// first) as a client dialing mTLS does: chained to roots for server use,
// with one SPIFFE ID that names service (host names are not checked: the
// ID is the server's name).
func VerifyServer(chain []*x509.Certificate, roots *x509.CertPool, service string) error {
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
	got, err := SpiffeService(chain[0])
	if err != nil {
		return fmt.Errorf("sextant: server certificate: %w", err)
	}
	if got != service {
		return fmt.Errorf("sextant: the server's certificate is of service %q, not %q", got, service)
	}
	return nil
}

// IdentityStats count a Gate's requests by the identity of their caller
// and, for those without a verified one, by what the identity policy did
// with them: keys "verified", "<outcome>" (served, the declared name
// checked) "<outcome>_dry_run" (served and reported as a dry-run denial)
// and "<outcome>_denied", where outcome is missing, invalid or expired.
type IdentityStats map[string]int64

// identityCounters are a Gate's IdentityStats.
type identityCounters struct {
	verified atomic.Int64
	by       [3][3]atomic.Int64 // outcome (missing, invalid, expired) x action (allow, dry_run, deny)
}

var (
	identityOutcomes = [3]string{api.IdentityMissing, api.IdentityInvalid, api.IdentityExpired}
	identityActions  = [3]string{api.IdentityAllow, api.IdentityDryRun, api.IdentityDeny}
)

func (c *identityCounters) add(outcome, action string) {
	if outcome == api.IdentityVerified {
		c.verified.Add(1)
		return
	}
	for i, o := range identityOutcomes {
		for j, a := range identityActions {
			if o == outcome && a == action {
				c.by[i][j].Add(1)
			}
		}
	}
}

// identityKey is the IdentityStats key of a request of outcome whose
// identity policy did action.
func identityKey(outcome, action string) string {
	switch action {
	case api.IdentityDryRun:
		return outcome + "_dry_run"
	case api.IdentityDeny:
		return outcome + "_denied"
	}
	return outcome
}

func (c *identityCounters) stats() IdentityStats {
	st := IdentityStats{api.IdentityVerified: c.verified.Load()}
	for i, o := range identityOutcomes {
		st[o] = c.by[i][0].Load()
		st[o+"_dry_run"] = c.by[i][1].Load()
		st[o+"_denied"] = c.by[i][2].Load()
	}
	return st
}

// IdentityStats counts the requests the Gate saw by their caller's identity
// and what became of them.
func (g *Gate) IdentityStats() IdentityStats { return g.identities.stats() }
