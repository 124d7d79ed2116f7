package security

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/services/config-center/center"
)

// issuer is a cluster's OIDC issuer as the config-center sees it: a JWKS
// server over real sockets (HTTPS, its root given as --oidc-ca-file) with
// an RSA and an EC key; the test signs the tokens.
type issuer struct {
	url     string // the issuer (iss)
	jwks    string // its key set's URL, https
	caFile  string // the PEM root of the JWKS server's certificate
	rsa     *rsa.PrivateKey
	ec      *ecdsa.PrivateKey
	fetches atomic.Int64
}

const testIssuer = "https://kubernetes.default.svc.cluster.local"

func startIssuer(t *testing.T) *issuer {
	t.Helper()
	iss := &issuer{url: testIssuer}
	var err error
	if iss.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if iss.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &iss.rsa.PublicKey, KeyID: "rsa-1", Algorithm: string(jose.RS256), Use: "sig"},
		{Key: &iss.ec.PublicKey, KeyID: "ec-1", Algorithm: string(jose.ES256), Use: "sig"},
	}}
	body, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/openid/v1/jwks" {
			http.NotFound(w, r)
			return
		}
		iss.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	iss.jwks = srv.URL + "/openid/v1/jwks"
	iss.caFile = filepath.Join(t.TempDir(), "cluster-ca.pem")
	root := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(iss.caFile, root, 0o600); err != nil {
		t.Fatal(err)
	}
	return iss
}

// saToken is the claims of a service-account token, as Kubernetes writes them.
type saToken struct {
	iss, sub, ns, sa string
	aud              []string
	exp, nbf         time.Time
}

func validToken(ns, sa string) saToken {
	now := time.Now()
	return saToken{iss: testIssuer, sub: "system:serviceaccount:" + ns + ":" + sa, ns: ns, sa: sa,
		aud: []string{"sextant"}, exp: now.Add(10 * time.Minute), nbf: now.Add(-time.Minute)}
}

// sign serializes tok signed with key (alg) under key ID kid.
func sign(t *testing.T, tok saToken, alg jose.SignatureAlgorithm, key any, kid string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	std := jwt.Claims{Issuer: tok.iss, Subject: tok.sub, Audience: tok.aud,
		Expiry: jwt.NewNumericDate(tok.exp), NotBefore: jwt.NewNumericDate(tok.nbf), IssuedAt: jwt.NewNumericDate(tok.nbf)}
	k8s := map[string]any{"kubernetes.io": map[string]any{
		"namespace":      tok.ns,
		"serviceaccount": map[string]any{"name": tok.sa, "uid": "0b4f7a7e-1"},
		"pod":            map[string]any{"name": tok.sa + "-7d9f", "uid": "9c1e-2"},
	}}
	s, err := jwt.Signed(signer).Claims(std).Claims(k8s).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A workload proves who it is with its Kubernetes service-account token:
// signed by a key of the issuer's JWKS (RSA or EC), of the issuer and the
// audience configured, in its lifetime, it gets a certificate of its
// namespace and service account. Any other token is refused (401, or 403
// for the control plane's namespace or another service), and nothing is
// issued; a service-account token counts nowhere else.
func TestServiceAccountTokens(t *testing.T) {
	iss := startIssuer(t)
	p := startTLSWith(t, time.Hour, func(c *center.Config) {
		c.OIDC.Issuer, c.OIDC.JWKSURL, c.OIDC.Audience, c.OIDC.CAFile = iss.url, iss.jwks, "sextant", iss.caFile
	})
	claim := "spiffe://sextant.local/ns/default/sa/payments"
	certs := p.center + "/v1/certificates"

	issued := map[string]string{}
	for _, c := range []struct {
		name, want string
		token      string
	}{
		{"RS256", "spiffe://sextant.local/ns/shop/sa/orders", sign(t, validToken("shop", "orders"), jose.RS256, iss.rsa, "rsa-1")},
		{"ES256", "spiffe://sextant.local/ns/default/sa/payments", sign(t, validToken("default", "payments"), jose.ES256, iss.ec, "ec-1")},
	} {
		a := do(t, p.operator, "POST", certs, c.token, certRequest(newCSR(t, claim), "", ""))
		var got api.CertificateIssued
		if a.status != 201 || json.Unmarshal(a.body, &got) != nil || got.SpiffeID != c.want {
			t.Fatalf("%s: %s, want a certificate of %s", c.name, a, c.want)
		}
		issued[c.name] = got.Serial
	}
	// A token of several audiences, the configured one among them.
	several := validToken("shop", "orders")
	several.aud = []string{"https://kubernetes.default.svc", "sextant"}
	if a := do(t, p.operator, "POST", certs, sign(t, several, jose.ES256, iss.ec, "ec-1"), certRequest(newCSR(t, claim), "orders", "")); a.status != 201 {
		t.Fatalf("a token of several audiences: %s", a)
	}
	audit := p.audit(t)
	if len(audit) != 3 || audit[0].Who != "service:orders" || !strings.Contains(audit[0].Detail, issued["RS256"]) ||
		!strings.Contains(audit[0].Detail, "service-account token of shop/orders") || audit[1].Service != "payments" {
		t.Fatalf("audit: %+v", audit)
	}
	fetches := iss.fetches.Load()
	if fetches != 1 {
		t.Fatalf("the key set was fetched %d times for known keys, want once", fetches)
	}

	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := validToken("shop", "orders")
	with := func(change func(*saToken)) saToken {
		tok := good
		change(&tok)
		return tok
	}
	tampered := func() string {
		parts := strings.Split(sign(t, good, jose.RS256, iss.rsa, "rsa-1"), ".")
		other := strings.Split(sign(t, with(func(s *saToken) { s.ns, s.sub = "payments", "system:serviceaccount:payments:orders" }), jose.RS256, iss.rsa, "rsa-1"), ".")
		return parts[0] + "." + other[1] + "." + parts[2]
	}()
	hmacKey := []byte("0123456789abcdef0123456789abcdef")

	before := p.dump(t)
	refusals := []struct {
		name, token, body string
		status            int
		code              string
	}{
		{"a wrong issuer", sign(t, with(func(s *saToken) { s.iss = "https://evil.example" }), jose.RS256, iss.rsa, "rsa-1"), "", 401, api.CodeUnauthenticated},
		{"a wrong audience", sign(t, with(func(s *saToken) { s.aud = []string{"vault"} }), jose.RS256, iss.rsa, "rsa-1"), "", 401, api.CodeUnauthenticated},
		{"no audience", sign(t, with(func(s *saToken) { s.aud = nil }), jose.ES256, iss.ec, "ec-1"), "", 401, api.CodeUnauthenticated},
		{"expired", sign(t, with(func(s *saToken) { s.exp = time.Now().Add(-2 * time.Minute) }), jose.RS256, iss.rsa, "rsa-1"), "", 401, api.CodeExpired},
		{"not valid yet", sign(t, with(func(s *saToken) { s.nbf = time.Now().Add(5 * time.Minute) }), jose.ES256, iss.ec, "ec-1"), "", 401, api.CodeUnauthenticated},
		{"an unknown key ID", sign(t, good, jose.RS256, otherRSA, "rsa-2"), "", 401, api.CodeUnauthenticated},
		{"a bad RSA signature", sign(t, good, jose.RS256, otherRSA, "rsa-1"), "", 401, api.CodeUnauthenticated},
		{"a bad EC signature", sign(t, good, jose.ES256, otherEC, "ec-1"), "", 401, api.CodeUnauthenticated},
		{"the EC key's ID on an RSA signature", sign(t, good, jose.RS256, iss.rsa, "ec-1"), "", 401, api.CodeUnauthenticated},
		{"a tampered payload", tampered, "", 401, api.CodeUnauthenticated},
		{"HS256", sign(t, good, jose.HS256, hmacKey, "rsa-1"), "", 401, api.CodeUnauthenticated},
		{"a subject that is not the service account", sign(t, with(func(s *saToken) { s.sub = "system:serviceaccount:shop:admin" }), jose.RS256, iss.rsa, "rsa-1"), "", 401, api.CodeUnauthenticated},
		{"no service account", sign(t, with(func(s *saToken) { s.sa, s.sub = "", "system:serviceaccount:shop:" }), jose.RS256, iss.rsa, "rsa-1"), "", 401, api.CodeUnauthenticated},
		{"the control plane's namespace", sign(t, validToken(api.ControlPlaneNamespace, "mesh-core"), jose.RS256, iss.rsa, "rsa-1"), "", 403, api.CodeForbidden},
		{"another service", sign(t, good, jose.RS256, iss.rsa, "rsa-1"), certRequest(newCSR(t, claim), "payments", ""), 403, api.CodeForbidden},
		{"another namespace", sign(t, good, jose.RS256, iss.rsa, "rsa-1"), `{"csr":` + jsonString(newCSR(t, claim)) + `,"namespace":"default"}`, 403, api.CodeForbidden},
	}
	for _, r := range refusals {
		body := r.body
		if body == "" {
			body = certRequest(newCSR(t, claim), "", "")
		}
		a := do(t, p.operator, "POST", certs, r.token, body)
		if fe := errorOf(t, a); a.status != r.status || fe.Field != api.AuthorizationHeader || fe.Code != r.code {
			t.Errorf("%s: %s, want %d %s naming %s", r.name, a, r.status, r.code, api.AuthorizationHeader)
		}
	}
	// Only the certificates' route takes a service-account token.
	valid := sign(t, good, jose.RS256, iss.rsa, "rsa-1")
	for _, path := range []string{"/v1/configs", "/v1/access/dry-run?service=orders"} {
		a := do(t, p.operator, "GET", p.center+path, valid, "")
		if fe := errorOf(t, a); a.status != 401 || fe.Field != api.AuthorizationHeader || fe.Code != api.CodeUnauthenticated {
			t.Errorf("GET %s with a service-account token: %s, want 401", path, a)
		}
	}
	if after := p.dump(t); !equal(before, after) {
		t.Errorf("refused requests changed etcd:\nbefore %v\nafter  %v", before, after)
	}
	if n := len(p.audit(t)); n != 3 {
		t.Errorf("%d issuances audited, want the 3 accepted", n)
	}
	// Unknown key IDs fetch the key set again, at most once in a while.
	if n := iss.fetches.Load() - fetches; n > 1 {
		t.Errorf("the unknown key IDs fetched the key set %d times, want at most once", n)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
