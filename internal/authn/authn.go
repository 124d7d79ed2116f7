// Package authn tells who sent a request to a Sextant API, from the bearer
// credential it carries: an operator token (the admin token, or one of the
// tokens file) or a data-plane token issued by the config-center for one
// service; or, on a TLS port, from the client certificate the Sextant
// certificate authority issued to a service (internal/pki). Every service verifies both kinds the same way, from memory: the
// data-plane tokens are mirrored from etcd, so a credential is checked
// without a round trip, and while etcd is away the last known tokens still
// verify (and a revocation lands when it is back).
package authn

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
	"github.com/sextant-mesh/sextant/internal/pki"
)

// Roles of operator tokens.
const (
	RoleReader = api.RoleReader
	RoleWriter = api.RoleWriter
)

// Identity is who a request comes from: an operator (Operator and Role set)
// or the data planes of one service (Service set).
type Identity struct {
	Operator string
	Role     string
	// Services bound an operator issued by the config-center to these
	// services ("*": all); nil for the operators of the flags, who are not
	// bound.
	Services []string
	Service  string
	// Namespace and TokenID are a data plane's, for logs and audit.
	Namespace string
	TokenID   string
	// Certificate is the serial of the client certificate the identity
	// comes from (TokenID is empty then).
	Certificate string
	// ServiceAccount tells an identity proven by a Kubernetes
	// service-account token (Service is the service account's name).
	ServiceAccount bool
}

// Name is how the identity shows in audit records and logs.
func (id Identity) Name() string {
	if id.Operator != "" {
		return id.Operator
	}
	return "service:" + id.Service
}

// IsOperator tells an operator's token from a data plane's.
func (id Identity) IsOperator() bool { return id.Operator != "" }

// everywhere tells an operator bound to no service.
func (id Identity) everywhere() bool {
	return id.Operator != "" && (id.Services == nil || slices.Contains(id.Services, "*"))
}

// MayWrite tells an operator who may change things everywhere (issue
// operators' tokens, for one).
func (id Identity) MayWrite() bool { return id.Role == RoleWriter && id.everywhere() }

// MayWriteFor tells an operator who may change what belongs to service:
// its configs, pins, tokens and instances.
func (id Identity) MayWriteFor(service string) bool {
	return id.Role == RoleWriter && (id.everywhere() || (id.Operator != "" && slices.Contains(id.Services, service)))
}

// MayReadFor tells an operator who may read what belongs to service.
func (id Identity) MayReadFor(service string) bool {
	return id.everywhere() || (id.Operator != "" && slices.Contains(id.Services, service))
}

// MayActFor tells whether the identity may register, report and change
// state for service: its own data planes, or an operator who may write for it.
func (id Identity) MayActFor(service string) bool {
	return id.MayWriteFor(service) || (id.Service != "" && id.Service == service)
}

// Operator is one operator token.
type Operator struct {
	Token string `json:"token"`
	Name  string `json:"name"`
	Role  string `json:"role"`
}

// Config is what every service is told about operator credentials.
type Config struct {
	// AdminToken is an operator token that may write (SEXTANT_ADMIN_TOKEN).
	AdminToken string
	// TokensFile holds more operator tokens: {"tokens": [{"token", "name",
	// "role": "reader"|"writer"}]}.
	TokensFile string
}

// Operators reads the tokens file (if any) and adds the admin token.
func (c Config) Operators() ([]Operator, error) {
	var list []Operator
	if c.TokensFile != "" {
		b, err := os.ReadFile(c.TokensFile)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Tokens []Operator `json:"tokens"`
		}
		if fe := jsonx.Decode(b, &doc); fe != nil {
			return nil, fmt.Errorf("%s: %w", c.TokensFile, fe)
		}
		for i, op := range doc.Tokens {
			if op.Token == "" || op.Name == "" || (op.Role != RoleReader && op.Role != RoleWriter) {
				return nil, fmt.Errorf("%s: tokens[%d] needs token, name and role reader or writer", c.TokensFile, i)
			}
			if strings.HasPrefix(op.Token, api.TokenPrefix) {
				return nil, fmt.Errorf("%s: tokens[%d]: an operator token may not start with %q (data-plane tokens do)", c.TokensFile, i, api.TokenPrefix)
			}
		}
		list = doc.Tokens
	}
	if c.AdminToken != "" {
		list = append(list, Operator{Token: c.AdminToken, Name: "admin", Role: RoleWriter})
	}
	return list, nil
}

// Verifier checks credentials. It is the etcdx.MirrorHandler of the
// data-plane tokens (api.Keys.Tokens).
type Verifier struct {
	operators []Operator
	now       func() time.Time
	// lookup reads one token from etcd, for an ID the mirror does not hold
	// yet (a token issued a moment ago); lookups bounds how often.
	lookup  func(id string) (t api.StoredToken, rev int64, ok bool)
	lookups *rate.Limiter

	mu     sync.RWMutex
	tokens map[string]api.StoredToken // by ID
	rev    int64                      // the etcd revision the mirror has applied

	ca atomic.Pointer[pki.Current] // the trust bundle of client certificates
}

// lookupsPerSecond bounds the etcd reads that unknown token IDs cause, so
// that a flood of made-up tokens costs etcd little.
const lookupsPerSecond = 20

// NewVerifier verifies the operators' tokens and, once mirrored, the
// data-plane tokens.
func NewVerifier(operators []Operator) *Verifier {
	return &Verifier{operators: operators, now: time.Now, tokens: map[string]api.StoredToken{}}
}

// Follow builds the verifier of cfg's operators and the mirror that keeps
// its data-plane tokens current; run the mirror.
func Follow(cfg Config, cli *clientv3.Client, keys api.Keys, log *slog.Logger) (*Verifier, *etcdx.Mirror, error) {
	ops, err := cfg.Operators()
	if err != nil {
		return nil, nil, err
	}
	v := NewVerifier(ops)
	v.lookups = rate.NewLimiter(lookupsPerSecond, lookupsPerSecond)
	v.lookup = func(id string) (api.StoredToken, int64, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		resp, err := cli.Get(ctx, keys.Token(id))
		if err != nil || len(resp.Kvs) == 0 {
			return api.StoredToken{}, 0, false
		}
		t, ok := decodeStored(resp.Kvs[0].Value)
		return t, resp.Header.Revision, ok
	}
	return v, etcdx.NewMirror(cli, keys.Tokens(), v, log), nil
}

// Verify tells who holds the credential of an Authorization header value.
// The error names the header, with CodeUnauthenticated or CodeExpired.
func (v *Verifier) Verify(header string) (Identity, *api.FieldError) {
	given, ok := strings.CutPrefix(header, api.BearerPrefix)
	if !ok || given == "" {
		return Identity{}, api.Errorf(api.AuthorizationHeader, api.CodeUnauthenticated,
			"a credential is required: Authorization: Bearer <token>, or a client certificate on a TLS port")
	}
	if id, secret, ok := api.ParseToken(given); ok {
		return v.verifyToken(id, secret)
	}
	for _, op := range v.operators {
		if subtle.ConstantTimeCompare([]byte(op.Token), []byte(given)) == 1 {
			return Identity{Operator: op.Name, Role: op.Role}, nil
		}
	}
	return Identity{}, api.Errorf(api.AuthorizationHeader, api.CodeUnauthenticated, "unknown credential")
}

// TrustAuthority makes v accept client certificates chained to the trust
// bundle of ca (as etcd has it, at each request).
func (v *Verifier) TrustAuthority(ca *pki.Current) { v.ca.Store(ca) }

// VerifyPeer tells who holds a client certificate chain (leaf first) that a
// TLS handshake received: the service and namespace of its SPIFFE ID, when
// the chain leads to a root of the trust bundle. The error names the client
// certificate, with CodeExpired or CodeUnauthenticated.
func (v *Verifier) VerifyPeer(chain []*x509.Certificate) (Identity, *api.FieldError) {
	var a *pki.Authority
	if ca := v.ca.Load(); ca != nil {
		a = ca.Authority()
	}
	if a == nil {
		return Identity{}, api.Errorf(api.ClientCertificateField, api.CodeUnauthenticated,
			"client certificates are not accepted here (no certificate authority known yet)")
	}
	id, err := a.Verify(chain, x509.ExtKeyUsageClientAuth, v.now())
	switch {
	case errors.Is(err, pki.ErrExpired):
		return Identity{}, api.Errorf(api.ClientCertificateField, api.CodeExpired, "%v", err)
	case err != nil:
		return Identity{}, api.Errorf(api.ClientCertificateField, api.CodeUnauthenticated, "%v", err)
	}
	return Identity{Service: id.Service, Namespace: id.Namespace, Certificate: pki.SerialOf(chain[0])}, nil
}

func (v *Verifier) verifyToken(id, secret string) (Identity, *api.FieldError) {
	v.mu.RLock()
	t, ok := v.tokens[id]
	v.mu.RUnlock()
	if !ok && v.lookup != nil && v.lookups.Allow() {
		// Issued a moment ago, before the mirror saw it: etcd knows. It is
		// kept until the mirror applies it (or its revocation) in turn.
		var rev int64
		if t, rev, ok = v.lookup(id); ok {
			v.mu.Lock()
			// Kept only while the mirror is behind the read: a mirror that
			// has passed it without the token saw it revoked since.
			if _, known := v.tokens[id]; !known && rev > v.rev {
				v.tokens[id] = t
			}
			v.mu.Unlock()
		}
	}
	if !ok || subtle.ConstantTimeCompare([]byte(HashSecret(secret)), []byte(t.SecretSHA256)) != 1 {
		return Identity{}, api.Errorf(api.AuthorizationHeader, api.CodeUnauthenticated, "unknown or revoked token")
	}
	if v.now().UnixMilli() >= t.ExpiresAtMs {
		return Identity{}, api.Errorf(api.AuthorizationHeader, api.CodeExpired,
			"token %s of service %s expired at %s", t.ID, t.Service, time.UnixMilli(t.ExpiresAtMs).UTC().Format(time.RFC3339))
	}
	if t.Operator != "" {
		return Identity{Operator: t.Operator, Role: t.Role, Services: t.Services, TokenID: t.ID}, nil
	}
	return Identity{Service: t.Service, Namespace: t.Namespace, TokenID: t.ID}, nil
}

// Reset replaces the known data-plane tokens.
func (v *Verifier) Reset(kvs []etcdx.Event, rev int64) {
	tokens := make(map[string]api.StoredToken, len(kvs))
	for _, kv := range kvs {
		if t, ok := decodeStored(kv.Value); ok {
			tokens[t.ID] = t
		}
	}
	v.mu.Lock()
	v.tokens, v.rev = tokens, rev
	v.mu.Unlock()
}

// Apply adds and revokes data-plane tokens.
func (v *Verifier) Apply(events []etcdx.Event, rev int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rev = rev
	for _, ev := range events {
		id := ev.Key[strings.LastIndexByte(ev.Key, '/')+1:]
		if ev.Deleted {
			delete(v.tokens, id)
			continue
		}
		if t, ok := decodeStored(ev.Value); ok {
			v.tokens[t.ID] = t
		}
	}
}

func decodeStored(b []byte) (api.StoredToken, bool) {
	var t api.StoredToken
	err := json.Unmarshal(b, &t)
	return t, err == nil && t.ID != "" && (t.Service != "" || (t.Operator != "" && len(t.Services) > 0)) && t.SecretSHA256 != ""
}

// HashSecret is what a StoredToken keeps of a secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewToken makes a token of info's holder (a data plane's service, or an
// operator), living ttl from now: the record to keep at
// api.Keys.Token(record.ID) and the token to hand out once.
func NewToken(info api.TokenInfo, ttl time.Duration, now time.Time) (record api.StoredToken, token string) {
	id, secret := randomHex(8), randomHex(24)
	info.ID, info.CreatedAtMs, info.ExpiresAtMs = id, now.UnixMilli(), now.Add(ttl).UnixMilli()
	return api.StoredToken{TokenInfo: info, SecretSHA256: HashSecret(secret)}, api.TokenPrefix + id + "." + secret
}

// DataPlane is the TokenInfo of a data plane's token of service.
func DataPlane(service, createdBy string) api.TokenInfo {
	return api.TokenInfo{Service: service, CreatedBy: createdBy}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
