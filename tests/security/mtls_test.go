package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/pki"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// tlsPlane is a config-center that issues certificates and a mesh-core,
// both serving TLS with certificates they issue themselves from the CA key
// file (nothing else is given).
type tlsPlane struct {
	etcd             *testenv.Etcd
	prefix, keyFile  string
	center, meshCore string // https:// URLs
	mc               *core.MeshCore
	bundle           *x509.CertPool
	// operator trusts the bundle and sends the admin token.
	operator *http.Client
}

func startTLS(t *testing.T, certTTL time.Duration) *tlsPlane {
	t.Helper()
	return startTLSWith(t, certTTL, nil)
}

// startTLSWith is startTLS with tweak (may be nil) applied to the
// config-center's config.
func startTLSWith(t *testing.T, certTTL time.Duration, tweak func(*center.Config)) *tlsPlane {
	t.Helper()
	p := &tlsPlane{etcd: testenv.StartEtcd(t), prefix: testenv.Prefix(t)}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	p.keyFile = filepath.Join(t.TempDir(), "ca-key")
	if err := os.WriteFile(p.keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := centertest.Start(t, p.etcd, p.prefix, func(c *center.Config) {
		c.TLS.CAKeyFile, c.CertTTL = p.keyFile, certTTL
		if tweak != nil {
			tweak(c)
		}
	})
	mc := coretest.Start(t, p.etcd, p.prefix, func(c *core.Config) { c.TLS.CAKeyFile = p.keyFile })
	p.center, p.meshCore, p.mc = "https://"+cc.Addr(), "https://"+mc.Addr(), mc
	p.bundle = x509.NewCertPool()
	p.bundle.AppendCertsFromPEM(p.authority(t).BundlePEM())
	p.operator = p.client(nil)
	return p
}

// authority is the CA as etcd keeps it, opened with the key file.
func (p *tlsPlane) authority(t *testing.T) *pki.Authority {
	t.Helper()
	seal, err := pki.ReadSealKey(p.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := pki.LoadOrCreate(context.Background(), p.etcd.Client(t), api.Keys{Prefix: p.prefix}.CARoot(), seal, "sextant.local")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// client trusts the bundle and presents cert (none when nil).
func (p *tlsPlane) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: p.bundle}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// do sends one request with the bearer credential cred ("" for none).
func do(t *testing.T, c *http.Client, method, url, cred, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if cred != "" {
		req.Header.Set(api.AuthorizationHeader, api.BearerPrefix+cred)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, b}
}

// newCSR is a PEM CSR of a fresh key that claims the identity claim in its
// own SANs.
func newCSR(t *testing.T, claim string) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(claim)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "payments"}, URIs: []*url.URL{u}, DNSNames: []string{"payments"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func certRequest(csr, service, ttl string) string {
	b, _ := json.Marshal(api.CertificateRequest{CSR: csr, Service: service, TTL: ttl})
	return string(b)
}

func errorOf(t *testing.T, a answer) *api.FieldError {
	t.Helper()
	var eb api.ErrorBody
	if json.Unmarshal(a.body, &eb) != nil || eb.Error == nil {
		t.Fatalf("not a JSON error: %s", a)
	}
	return eb.Error
}

// A data plane gets a certificate of its own service with its token,
// whatever its CSR claims; another service's is refused (an operator may
// ask for any), as is a request without a credential or with a bad CSR.
// Each issuance is audited.
func TestCertificateIssuance(t *testing.T) {
	p := startTLS(t, time.Hour)
	orders := testenv.ServiceToken(t, p.etcd, p.prefix, "orders")
	claim := "spiffe://sextant.local/ns/default/sa/payments"
	var issued api.CertificateIssued
	testenv.Eventually(t, 10*time.Second, func() error { // the config-center learns the token from etcd
		a := do(t, p.operator, "POST", p.center+"/v1/certificates", orders, certRequest(newCSR(t, claim), "", ""))
		if a.status != 201 {
			return fmt.Errorf("issue with the data-plane token: %s", a)
		}
		return json.Unmarshal(a.body, &issued)
	})
	if issued.SpiffeID != "spiffe://sextant.local/ns/default/sa/orders" {
		t.Fatalf("issued %s, want the token's identity", issued.SpiffeID)
	}
	block, _ := pem.Decode([]byte(issued.CertificatePEM))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != issued.SpiffeID || len(cert.DNSNames) != 0 {
		t.Fatalf("the certificate carries %v %v", cert.URIs, cert.DNSNames)
	}
	if life := cert.NotAfter.Sub(time.UnixMilli(time.Now().UnixMilli())); life > time.Hour || life < 59*time.Minute {
		t.Fatalf("lifetime %s, want --cert-ttl", life)
	}
	usages := map[x509.ExtKeyUsage]bool{}
	for _, u := range cert.ExtKeyUsage {
		usages[u] = true
	}
	if !usages[x509.ExtKeyUsageClientAuth] || !usages[x509.ExtKeyUsageServerAuth] {
		t.Fatalf("usages %v", cert.ExtKeyUsage)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.bundle, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("not chained to the bundle: %v", err)
	}
	bundle := do(t, p.operator, "GET", p.center+"/v1/ca", "", "")
	if bundle.status != 200 || string(bundle.body) != issued.BundlePEM || !strings.Contains(issued.BundlePEM, "BEGIN CERTIFICATE") {
		t.Fatalf("GET /v1/ca: %s", bundle)
	}

	before := p.dump(t)
	refusals := []struct {
		name, cred, body string
		status           int
		field            string
	}{
		{"no credential", "", certRequest(newCSR(t, claim), "", ""), 401, api.AuthorizationHeader},
		{"another service's", orders, certRequest(newCSR(t, claim), "payments", ""), 403, api.AuthorizationHeader},
		{"an operator naming no service", testenv.AdminToken, certRequest(newCSR(t, claim), "", ""), 400, "service"},
		{"no CSR", orders, certRequest("", "", ""), 400, "csr"},
		{"a CSR that is not PEM", orders, certRequest("hello", "", ""), 400, "csr"},
		{"a certificate for a CSR", orders, certRequest(issued.CertificatePEM, "", ""), 400, "csr"},
		{"a lifetime beyond --cert-ttl", orders, certRequest(newCSR(t, claim), "", "2h"), 400, "ttl"},
		{"an unknown field", orders, `{"csr":"x","spiffe_id":"spiffe://x/ns/a/sa/b"}`, 400, "spiffe_id"},
	}
	for _, r := range refusals {
		a := do(t, p.operator, "POST", p.center+"/v1/certificates", r.cred, r.body)
		if fe := errorOf(t, a); a.status != r.status || fe.Field != r.field {
			t.Errorf("%s: %s, want %d naming %s", r.name, a, r.status, r.field)
		}
	}
	if after := p.dump(t); !equal(before, after) {
		t.Errorf("refused requests changed etcd:\nbefore %v\nafter  %v", before, after)
	}

	a := do(t, p.operator, "POST", p.center+"/v1/certificates", testenv.AdminToken, certRequest(newCSR(t, claim), "payments", "10m"))
	var byOperator api.CertificateIssued
	if a.status != 201 || json.Unmarshal(a.body, &byOperator) != nil || byOperator.SpiffeID != claim {
		t.Fatalf("an operator's request for payments: %s", a)
	}
	if life := time.Duration(byOperator.ExpiresAtMs-time.Now().UnixMilli()) * time.Millisecond; life > 10*time.Minute {
		t.Fatalf("asked 10m, got %s", life)
	}
	audit := p.audit(t)
	if len(audit) != 2 || audit[0].Who != "service:orders" || audit[0].Service != "orders" ||
		!strings.Contains(audit[0].Detail, issued.Serial) || audit[1].Who != "admin" || audit[1].Service != "payments" {
		t.Fatalf("audit: %+v", audit)
	}
}

// dump is every key under the prefix with its value and revision.
func (p *tlsPlane) dump(t *testing.T) map[string]string {
	return (&plane{etcd: p.etcd, prefix: p.prefix}).dump(t)
}

// audit is the certificate issuances recorded, oldest first.
func (p *tlsPlane) audit(t *testing.T) []api.AuditEntry {
	var out []api.AuditEntry
	for k, v := range p.dump(t) {
		if !strings.HasPrefix(k, api.Keys{Prefix: p.prefix}.Audit()) {
			continue
		}
		var e api.AuditEntry
		_, value, _ := strings.Cut(v, " ")
		if json.Unmarshal([]byte(value), &e) == nil && e.Action == "certificate-issue" {
			out = append(out, e)
		}
	}
	for i := 1; i < len(out); i++ { // by time
		for j := i; j > 0 && out[j].AtMs < out[j-1].AtMs; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// identity is the SDK's identity of service, bootstrapped with a
// data-plane token.
func (p *tlsPlane) identity(t *testing.T, service string, ttl time.Duration) *sdk.Identity {
	t.Helper()
	token := testenv.ServiceToken(t, p.etcd, p.prefix, service)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	id, err := sdk.NewIdentity(ctx, sdk.IdentityOptions{ConfigCenter: p.center, Token: token, TTL: ttl, HTTPClient: p.client(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(id.Close)
	return id
}

// A data plane with its certificate and no token is identified as its
// service over mTLS: it registers into its own service and not into
// another. An expired certificate and one of another CA are refused with
// 401, and nothing changes in etcd.
func TestMTLSIdentity(t *testing.T) {
	p := startTLS(t, time.Hour)
	id := p.identity(t, "orders", 0)
	if id.SpiffeID() != "spiffe://sextant.local/ns/default/sa/orders" {
		t.Fatalf("identity %s", id.SpiffeID())
	}
	c := id.HTTPClient()
	reg := func(service string) string {
		return fmt.Sprintf(`{"service":%q,"instance":"10.0.0.1:80","addr":"10.0.0.1:80"}`, service)
	}
	if a := do(t, c, "POST", p.meshCore+"/v1/instances", "", reg("orders")); a.status != 201 {
		t.Fatalf("registration into its own service over mTLS: %s", a)
	}
	key := api.Keys{Prefix: p.prefix}.Instance("orders", "10.0.0.1:80")
	if resp, err := p.etcd.Client(t).Get(context.Background(), key); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("registration not in etcd: %v", err)
	}

	// The SDK's own registrar, given the identity's client and no token.
	t.Setenv(sdk.TokenEnv, "")
	r := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.meshCore, HTTPClient: c,
		Registration: sdk.Registration{Service: "orders", Instance: "10.0.0.2:80", Addr: "10.0.0.2:80"}})
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := p.etcd.Client(t).Get(context.Background(), api.Keys{Prefix: p.prefix}.Instance("orders", "10.0.0.2:80"))
		if err != nil || len(resp.Kvs) != 1 {
			return fmt.Errorf("the registrar's instance is not in etcd (%v)", err)
		}
		return nil
	})
	r.Close()

	before := p.dump(t)
	if a := do(t, c, "POST", p.meshCore+"/v1/instances", "", reg(victim)); a.status != 403 || errorOf(t, a).Code != api.CodeForbidden {
		t.Errorf("registration into another service: %s", a)
	}
	// A certificate of the CA that expired, and one of another CA with the
	// same identity.
	// The authority's root, signing as of two hours ago.
	root := p.authority(t).Roots()[0]
	back, _ := pki.NewAuthority([]pki.Root{{Cert: root.Cert, Key: root.Key}})
	expired := leafOf(t, back, "orders", time.Now().Add(-2*time.Hour))
	other, err := pki.NewRoot("sextant.local", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherCA, _ := pki.NewAuthority([]pki.Root{other})
	foreign := leafOf(t, otherCA, "orders", time.Now())
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		code string
	}{
		{"an expired certificate", expired, api.CodeExpired},
		{"a certificate of another CA", foreign, api.CodeUnauthenticated},
	} {
		for _, ep := range []struct{ method, url, body string }{
			{"POST", p.meshCore + "/v1/instances", reg("orders")},
			{"DELETE", p.meshCore + "/v1/instances/orders/10.0.0.1:80", ""},
			{"POST", p.center + "/v1/certificates", certRequest(newCSR(t, "spiffe://sextant.local/ns/default/sa/orders"), "", "")},
			{"GET", p.center + "/v1/configs?service=orders", ""},
		} {
			a := do(t, p.client(tc.cert), ep.method, ep.url, "", ep.body)
			if fe := errorOf(t, a); a.status != 401 || fe.Code != tc.code || fe.Field != api.ClientCertificateField {
				t.Errorf("%s %s with %s: %s", ep.method, ep.url, tc.name, a)
			}
		}
	}
	if after := p.dump(t); !equal(before, after) {
		t.Errorf("refused requests changed etcd:\nbefore %v\nafter  %v", before, after)
	}
	// A bearer token still works on the TLS port, with no certificate.
	if a := do(t, p.operator, "GET", p.meshCore+"/v1/discovery/orders?wait=0s", testenv.AdminToken, ""); a.status != 200 {
		t.Fatalf("an operator's token over TLS: %s", a)
	}
}

// leafOf is a client certificate of service from a, issued at issuedAt for
// an hour.
func leafOf(t *testing.T, a *pki.Authority, service string, issuedAt time.Time) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := a.Issue(&key.PublicKey, pki.Leaf{ID: pki.ID{Service: service}, TTL: time.Hour}, issuedAt)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// Certificates of a few seconds are renewed under a steady load of mTLS
// requests, and none of them fails.
func TestCertificateRotationUnderLoad(t *testing.T) {
	const ttl = 3 * time.Second
	p := startTLS(t, ttl)
	id := p.identity(t, "orders", 0)
	c := id.HTTPClient()
	c.Timeout = 5 * time.Second
	var (
		ok, failed atomic.Int64
		serials    sync.Map
		wg         sync.WaitGroup
		firstErr   atomic.Value
	)
	stop := time.Now().Add(4 * ttl)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if cert := id.Certificate(); cert != nil {
					serials.Store(cert.Leaf.SerialNumber.String(), true)
				}
				resp, err := c.Get(p.meshCore + "/v1/discovery/orders?wait=0s")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	n := 0
	serials.Range(func(any, any) bool { n++; return true })
	t.Logf("%d requests, %d certificates", ok.Load(), n)
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if n < 4 {
		t.Fatalf("%d certificates over %s of certificates of %s: not renewed", n, 4*ttl, ttl)
	}
}
