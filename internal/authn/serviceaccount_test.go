package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sextant-mesh/sextant/api"
)

// jwksServer publishes the public keys of keys (by key ID); down answers 503.
type jwksServer struct {
	mu      sync.Mutex
	keys    map[string]*ecdsa.PrivateKey
	down    bool
	fetches atomic.Int64
	url     string
}

func startJWKS(t *testing.T) *jwksServer {
	s := &jwksServer{keys: map[string]*ecdsa.PrivateKey{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var set jose.JSONWebKeySet
		for kid, k := range s.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *jwksServer) add(t *testing.T, kid string) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.keys[kid] = k
	s.mu.Unlock()
	return k
}

func saJWT(t *testing.T, key *ecdsa.PrivateKey, kid string, now time.Time) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: "https://issuer", Subject: "system:serviceaccount:shop:orders",
		Expiry: jwt.NewNumericDate(now.Add(time.Hour)), NotBefore: jwt.NewNumericDate(now)}).
		Claims(map[string]any{"kubernetes.io": map[string]any{"namespace": "shop", "serviceaccount": map[string]any{"name": "orders"}}}).
		Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The key set is fetched at the first token, kept, fetched again for a key
// ID it lacks (at most every keysMinRefresh, however many such tokens
// come) and once it is older than keysMaxAge; while the issuer is away the
// keys known still verify.
func TestServiceAccountKeys(t *testing.T) {
	js := startJWKS(t)
	k1 := js.add(t, "k1")
	now := time.Now()
	sa, err := NewServiceAccounts(OIDCConfig{Issuer: "https://issuer", JWKSURL: js.url})
	if err != nil {
		t.Fatal(err)
	}
	sa.now = func() time.Time { return now }
	ctx := context.Background()
	verify := func(token, wantCode string) {
		t.Helper()
		id, fe := sa.Verify(ctx, token)
		switch {
		case wantCode == "" && (fe != nil || id.Service != "orders" || id.Namespace != "shop" || !id.ServiceAccount):
			t.Fatalf("%+v %v, want shop/orders", id, fe)
		case wantCode != "" && (fe == nil || fe.Code != wantCode || fe.Field != api.AuthorizationHeader):
			t.Fatalf("%+v %v, want %s", id, fe, wantCode)
		}
	}
	fetches := func(want int64) {
		t.Helper()
		if got := js.fetches.Load(); got != want {
			t.Fatalf("%d fetches of the key set, want %d", got, want)
		}
	}
	verify(saJWT(t, k1, "k1", now), "")
	verify(saJWT(t, k1, "k1", now), "")
	fetches(1)

	// The issuer rotates: a token of the new key is taken once the set is
	// fetched again, made-up key IDs in between cost one fetch at most.
	k2 := js.add(t, "k2")
	now = now.Add(keysMinRefresh)
	for range 20 {
		verify(saJWT(t, k1, "made-up", now), api.CodeUnauthenticated)
	}
	fetches(2)
	verify(saJWT(t, k2, "k2", now), "")
	fetches(2) // fetched with the made-up ones
	k3 := js.add(t, "k3")
	verify(saJWT(t, k3, "k3", now), api.CodeUnauthenticated) // too soon
	fetches(2)
	now = now.Add(keysMinRefresh)
	verify(saJWT(t, k3, "k3", now), "")
	fetches(3)

	// The issuer away: the keys known still verify, even past keysMaxAge.
	js.mu.Lock()
	js.down = true
	js.mu.Unlock()
	now = now.Add(keysMaxAge)
	verify(saJWT(t, k1, "k1", now), "")
	fetches(4)
	verify(saJWT(t, k2, "k2", now), "")
	fetches(4)
	now = now.Add(2 * time.Hour)
	verify(saJWT(t, k1, "k1", now.Add(-Leeway/2)), "")
	// Past its expiry (and the leeway), a token is expired.
	verify(saJWT(t, k1, "k1", now.Add(-time.Hour-2*Leeway)), api.CodeExpired)
}

func TestOIDCConfig(t *testing.T) {
	for _, c := range []struct {
		cfg OIDCConfig
		ok  bool
	}{
		{OIDCConfig{}, true},
		{OIDCConfig{Issuer: "https://k8s", JWKSURL: "https://k8s/openid/v1/jwks", Audience: "sextant"}, true},
		{OIDCConfig{Issuer: "https://k8s"}, false},
		{OIDCConfig{JWKSURL: "https://k8s/openid/v1/jwks"}, false},
		{OIDCConfig{Audience: "sextant"}, false},
		{OIDCConfig{CAFile: "ca.pem"}, false},
		{OIDCConfig{Issuer: "https://k8s", JWKSURL: "file:///etc/jwks"}, false},
	} {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.cfg, err)
		}
	}
}

// Without an issuer configured, a JWT is a credential nobody issued.
func TestJWTWithoutIssuer(t *testing.T) {
	v := NewVerifier(nil)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok := saJWT(t, k, "k1", time.Now())
	if !LooksLikeJWT(tok) || LooksLikeJWT(api.TokenPrefix+"abc.def") {
		t.Fatal("LooksLikeJWT")
	}
	if _, fe := v.Verify(api.BearerPrefix + tok); fe == nil || fe.Code != api.CodeUnauthenticated {
		t.Fatalf("%v", fe)
	}
}
