package authn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sextant-mesh/sextant/api"
)

// OIDCConfig names the OpenID Connect issuer whose service-account tokens
// prove a workload's identity where a certificate is asked for
// (docs/security.md, "Service-account tokens"): a Kubernetes cluster's.
type OIDCConfig struct {
	// Issuer is the tokens' "iss" (the cluster's --service-account-issuer).
	Issuer string
	// JWKSURL serves the issuer's signing keys, a JSON Web Key Set.
	JWKSURL string
	// Audience, when set, must be one of the tokens' "aud".
	Audience string
	// CAFile holds the PEM roots that JWKSURL's server certificate is
	// checked against (the cluster's CA); empty: the system's.
	CAFile string
}

// RegisterFlags adds --oidc-issuer, --oidc-jwks-url and --oidc-audience.
func (c *OIDCConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Issuer, "oidc-issuer", c.Issuer, "issuer (iss) of the Kubernetes service-account tokens accepted at POST /v1/certificates; empty: none are")
	fs.StringVar(&c.JWKSURL, "oidc-jwks-url", c.JWKSURL, "URL of the issuer's JSON Web Key Set (required with --oidc-issuer)")
	fs.StringVar(&c.Audience, "oidc-audience", c.Audience, "audience (aud) the service-account tokens must name; empty: not checked")
	fs.StringVar(&c.CAFile, "oidc-ca-file", c.CAFile, "PEM roots that verify the server of --oidc-jwks-url (the cluster's CA); empty: the system's")
}

// Enabled tells whether service-account tokens are accepted.
func (c OIDCConfig) Enabled() bool { return c.Issuer != "" }

// Validate checks a configuration that is enabled, or empty.
func (c OIDCConfig) Validate() error {
	if !c.Enabled() {
		if c.JWKSURL != "" || c.Audience != "" || c.CAFile != "" {
			return errors.New("--oidc-jwks-url, --oidc-audience and --oidc-ca-file need --oidc-issuer")
		}
		return nil
	}
	if c.JWKSURL == "" {
		return errors.New("--oidc-issuer needs --oidc-jwks-url")
	}
	u, err := url.Parse(c.JWKSURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("--oidc-jwks-url %q: want an http(s) URL", c.JWKSURL)
	}
	return nil
}

// Leeway is the clock skew allowed on a token's exp and nbf.
const Leeway = 30 * time.Second

// Bounds of the key set: it is fetched again when a token names a key it
// does not hold (at most once per keysMinRefresh, so that made-up key IDs
// cost the issuer little) and when it is older than keysMaxAge.
const (
	keysMinRefresh = 10 * time.Second
	keysMaxAge     = time.Hour
	keysMaxBytes   = 1 << 20
	keysFetchLimit = 10 * time.Second
	maxTokenBytes  = 16 << 10
)

// signatureAlgorithms are those a token may be signed with.
var signatureAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
}

// ServiceAccounts verifies Kubernetes service-account tokens against the
// issuer's key set, which it keeps in memory.
type ServiceAccounts struct {
	cfg    OIDCConfig
	client *http.Client
	now    func() time.Time

	fetching sync.Mutex // one fetch at a time
	mu       sync.RWMutex
	keys     *jose.JSONWebKeySet
	fetched  time.Time // of keys
	tried    time.Time // the last fetch, whatever came of it
}

// NewServiceAccounts verifies the tokens of cfg's issuer (cfg validated).
// The key set is fetched at the first token.
func NewServiceAccounts(cfg OIDCConfig) (*ServiceAccounts, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--oidc-ca-file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--oidc-ca-file %s: no PEM certificate", cfg.CAFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &ServiceAccounts{cfg: cfg, now: time.Now, client: &http.Client{Timeout: keysFetchLimit, Transport: transport}}, nil
}

// LooksLikeJWT tells a JWT in compact form (three base64url parts; the
// header a JSON object) from the other bearer credentials.
func LooksLikeJWT(s string) bool {
	return strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2
}

// serviceAccountClaims is what Kubernetes puts in its tokens.
type serviceAccountClaims struct {
	Kubernetes struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

const subjectPrefix = "system:serviceaccount:"

// Verify tells whose service-account token raw is: the service is the
// service account's name, the namespace its namespace. The error names
// the Authorization header, with CodeExpired or CodeUnauthenticated.
func (s *ServiceAccounts) Verify(ctx context.Context, raw string) (Identity, *api.FieldError) {
	refuse := func(format string, args ...any) (Identity, *api.FieldError) {
		return Identity{}, api.Errorf(api.AuthorizationHeader, api.CodeUnauthenticated, "service-account token: "+format, args...)
	}
	if len(raw) > maxTokenBytes {
		return refuse("longer than %d bytes", maxTokenBytes)
	}
	tok, err := jwt.ParseSigned(raw, signatureAlgorithms)
	if err != nil {
		return refuse("%v", trimJose(err))
	}
	if len(tok.Headers) != 1 {
		return refuse("one signature expected")
	}
	kid := tok.Headers[0].KeyID
	keys, ferr := s.keysFor(ctx, kid)
	if ferr != nil {
		return refuse("%v", ferr)
	}
	var (
		std    jwt.Claims
		k8s    serviceAccountClaims
		signed bool
	)
	for _, k := range keys {
		if k.Algorithm != "" && k.Algorithm != tok.Headers[0].Algorithm {
			continue
		}
		if tok.Claims(k.Key, &std, &k8s) == nil {
			signed = true
			break
		}
	}
	if !signed {
		return refuse("the signature is not of the issuer's key %q", kid)
	}
	exp := jwt.Expected{Issuer: s.cfg.Issuer, Time: s.now()}
	if s.cfg.Audience != "" {
		exp.AnyAudience = jwt.Audience{s.cfg.Audience}
	}
	switch err := std.ValidateWithLeeway(exp, Leeway); {
	case errors.Is(err, jwt.ErrExpired):
		return Identity{}, api.Errorf(api.AuthorizationHeader, api.CodeExpired,
			"service-account token expired at %s", std.Expiry.Time().UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return refuse("issued by %q, not %q (--oidc-issuer)", std.Issuer, s.cfg.Issuer)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return refuse("for %v, not %q (--oidc-audience)", []string(std.Audience), s.cfg.Audience)
	case errors.Is(err, jwt.ErrNotValidYet):
		return refuse("not valid before %s", std.NotBefore.Time().UTC().Format(time.RFC3339))
	case err != nil:
		return refuse("%v", trimJose(err))
	}
	if std.Expiry == nil {
		return refuse("no expiry (exp)")
	}
	ns, sa := k8s.Kubernetes.Namespace, k8s.Kubernetes.ServiceAccount.Name
	if ns == "" || sa == "" || std.Subject != subjectPrefix+ns+":"+sa {
		return refuse("not a service account's: subject %q, namespace %q, service account %q", std.Subject, ns, sa)
	}
	if api.Name("namespace", ns, true) != nil || api.Name("service", sa, true) != nil {
		return refuse("namespace %q or service account %q is not a valid name", ns, sa)
	}
	return Identity{Service: sa, Namespace: ns, ServiceAccount: true}, nil
}

// keysFor is the keys that may have signed a token of key ID kid (all of
// them when it names none), fetching the set when it does not hold kid.
func (s *ServiceAccounts) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	s.mu.RLock()
	set, fetched := s.keys, s.fetched
	s.mu.RUnlock()
	if set != nil && s.now().Sub(fetched) < keysMaxAge {
		if ks := pick(set, kid); len(ks) > 0 {
			return ks, nil
		}
	}
	set, err := s.refresh(ctx, set)
	if set == nil {
		return nil, fmt.Errorf("the issuer's keys are not known: %v", err)
	}
	if ks := pick(set, kid); len(ks) > 0 {
		return ks, nil
	}
	return nil, fmt.Errorf("signed by a key the issuer does not publish (kid %q)", kid)
}

func pick(set *jose.JSONWebKeySet, kid string) []jose.JSONWebKey {
	if kid == "" {
		return set.Keys
	}
	return set.Key(kid)
}

// refresh fetches the key set unless another request did since had was
// read, or one was tried less than keysMinRefresh ago. It returns the
// freshest set known (the previous one when the fetch fails).
func (s *ServiceAccounts) refresh(ctx context.Context, had *jose.JSONWebKeySet) (*jose.JSONWebKeySet, error) {
	s.fetching.Lock()
	defer s.fetching.Unlock()
	s.mu.RLock()
	set, tried := s.keys, s.tried
	s.mu.RUnlock()
	if set != had || (!tried.IsZero() && s.now().Sub(tried) < keysMinRefresh) {
		return set, errors.New("fetched a moment ago")
	}
	fresh, err := s.fetch(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tried = s.now()
	if err != nil {
		return s.keys, err
	}
	s.keys, s.fetched = fresh, s.tried
	return fresh, nil
}

func (s *ServiceAccounts) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, keysFetchLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", s.cfg.JWKSURL, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, keysMaxBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > keysMaxBytes {
		return nil, fmt.Errorf("GET %s: more than %d bytes", s.cfg.JWKSURL, keysMaxBytes)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("GET %s: %w", s.cfg.JWKSURL, err)
	}
	// Only public signing keys count.
	keys := set.Keys[:0]
	for _, k := range set.Keys {
		if k.IsPublic() && k.Valid() && (k.Use == "" || k.Use == "sig") {
			keys = append(keys, k)
		}
	}
	set.Keys = keys
	return &set, nil
}

// trimJose drops the package prefix of go-jose's errors.
func trimJose(err error) string {
	msg := err.Error()
	for _, p := range []string{"go-jose/go-jose/jwt: ", "go-jose/go-jose: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}
