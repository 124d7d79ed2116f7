package sdk_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// authority is a root that signs workload certificates, as the Sextant
// authority's look.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newAuthority(t *testing.T) authority {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return authority{cert: cert, key: key, pool: pool}
}

func (a authority) leaf(t *testing.T, ids []string, notBefore time.Time, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: notBefore, NotAfter: notBefore.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	for _, id := range ids {
		u, _ := url.Parse(id)
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func TestVerifyPeer(t *testing.T) {
	ca, other := newAuthority(t), newAuthority(t)
	now := time.Now()
	id := []string{"spiffe://sextant.local/ns/default/sa/frontend"}
	for _, tc := range []struct {
		name    string
		chain   []*x509.Certificate
		want    string
		service string
	}{
		{"no certificate", nil, api.IdentityMissing, ""},
		{"a workload certificate", []*x509.Certificate{ca.leaf(t, id, now.Add(-time.Minute), x509.ExtKeyUsageClientAuth)}, api.IdentityVerified, "frontend"},
		{"another authority's", []*x509.Certificate{other.leaf(t, id, now.Add(-time.Minute), x509.ExtKeyUsageClientAuth)}, api.IdentityInvalid, ""},
		{"expired", []*x509.Certificate{ca.leaf(t, id, now.Add(-2*time.Hour), x509.ExtKeyUsageClientAuth)}, api.IdentityExpired, ""},
		{"not yet valid", []*x509.Certificate{ca.leaf(t, id, now.Add(time.Hour), x509.ExtKeyUsageClientAuth)}, api.IdentityExpired, ""},
		{"for servers only", []*x509.Certificate{ca.leaf(t, id, now.Add(-time.Minute), x509.ExtKeyUsageServerAuth)}, api.IdentityInvalid, ""},
		{"no SPIFFE ID", []*x509.Certificate{ca.leaf(t, nil, now.Add(-time.Minute), x509.ExtKeyUsageClientAuth)}, api.IdentityInvalid, ""},
		{"two SPIFFE IDs", []*x509.Certificate{ca.leaf(t, append(id, "spiffe://sextant.local/ns/default/sa/admin"), now.Add(-time.Minute), x509.ExtKeyUsageClientAuth)}, api.IdentityInvalid, ""},
		{"another form", []*x509.Certificate{ca.leaf(t, []string{"spiffe://sextant.local/frontend"}, now.Add(-time.Minute), x509.ExtKeyUsageClientAuth)}, api.IdentityInvalid, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := sdk.VerifyPeer("declared", tc.chain, ca.pool, now)
			if p.Identity != tc.want || p.Service != tc.service || p.Declared != "declared" {
				t.Fatalf("%+v, want %s %q", p, tc.want, tc.service)
			}
			if (p.Err != nil) != (tc.want == api.IdentityInvalid || tc.want == api.IdentityExpired) {
				t.Fatalf("err %v", p.Err)
			}
		})
	}
}

// The identity policy: a verified caller is checked as its service, the
// others as the policy says, each counted.
func TestGateIdentityPolicy(t *testing.T) {
	allow := []api.AccessRule{{Name: "frontend-only", Type: api.AccessAllow, Callers: []string{"frontend"}, Mode: api.ModeEnforce}}
	for _, tc := range []struct {
		name    string
		policy  *api.IdentityPolicy
		peer    sdk.Peer
		denied  bool
		counted string
		dryRun  string // the dry-run denial's rule, if any
	}{
		{"verified as its service", nil, sdk.Peer{Declared: "intruder", Service: "frontend", Identity: api.IdentityVerified}, false, "verified", ""},
		{"verified, the header forged", nil, sdk.Peer{Declared: "frontend", Service: "intruder", Identity: api.IdentityVerified}, true, "verified", ""},
		{"missing, default allow", nil, sdk.Peer{Declared: "frontend", Identity: api.IdentityMissing}, false, "missing", ""},
		{"missing, declared name denied", nil, sdk.Peer{Declared: "intruder", Identity: api.IdentityMissing}, true, "missing", ""},
		{"missing: deny", &api.IdentityPolicy{Missing: api.IdentityDeny}, sdk.Peer{Declared: "frontend", Identity: api.IdentityMissing}, true, "missing_denied", ""},
		{"missing: dry_run", &api.IdentityPolicy{Missing: api.IdentityDryRun}, sdk.Peer{Declared: "frontend", Identity: api.IdentityMissing}, false, "missing_dry_run", "identity-missing"},
		{"invalid, default deny", nil, sdk.Peer{Declared: "frontend", Identity: api.IdentityInvalid, Err: errors.New("bad")}, true, "invalid_denied", ""},
		{"invalid: allow", &api.IdentityPolicy{Invalid: api.IdentityAllow}, sdk.Peer{Declared: "frontend", Identity: api.IdentityInvalid}, false, "invalid", ""},
		{"expired, default deny", nil, sdk.Peer{Declared: "frontend", Identity: api.IdentityExpired}, true, "expired_denied", ""},
		{"expired: dry_run", &api.IdentityPolicy{Expired: api.IdentityDryRun}, sdk.Peer{Declared: "frontend", Identity: api.IdentityExpired}, false, "expired_dry_run", "identity-expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := &sdk.AccessRules{Rules: allow, Identity: tc.policy}
			rep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "orders", Instance: "orders-1"})
			g := sdk.NewGate(sdk.GateOptions{Access: func() *sdk.AccessRules { return rules }, Reporter: rep})
			a, err := g.EnterPeer(context.Background(), time.Now(), sdk.Priority{Business: 64}, tc.peer, "Get")
			if denied := errors.Is(err, sdk.ErrDenied); denied != tc.denied || (!denied && err != nil) {
				t.Fatalf("err %v, want denied %v", err, tc.denied)
			}
			if a != nil {
				a.Done()
			}
			if st := g.IdentityStats(); st[tc.counted] != 1 {
				t.Errorf("identity stats %v, want %s 1", st, tc.counted)
			}
			var rulesSeen []string
			for _, d := range rep.Flush(time.Now()).DryRunDenials {
				rulesSeen = append(rulesSeen, d.Rule)
			}
			if tc.dryRun != "" && (len(rulesSeen) != 1 || rulesSeen[0] != tc.dryRun) || tc.dryRun == "" && len(rulesSeen) != 0 {
				t.Errorf("dry-run denials of %v, want %q", rulesSeen, tc.dryRun)
			}
		})
	}
}
