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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
	"github.com/sextant-mesh/sextant/internal/pki"
)

// Roles of operator tokens.
const (
	RoleReader = "reader"
	RoleWriter = "writer"
)

// Identity is who a request comes from: an operator (Operator and Role set)
// or the data planes of one service (Service set).
type Identity struct {
	Operator string
	Role     string
	Service  string
	// Namespace and TokenID are a data plane's, for logs and audit.
	Namespace string
	TokenID   string
	// Certificate is the serial of the client certificate the identity
	// comes from (TokenID is empty then).
	Certificate string
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

// MayWrite tells an operator who may change things everywhere.
func (id Identity) MayWrite() bool { return id.Operator != "" && id.Role == RoleWriter }

// MayActFor tells whether the identity may register, report and change
// state for service: its own data planes, or an operator who may write.
func (id Identity) MayActFor(service string) bool {
	return id.MayWrite() || (id.Service != "" && id.Service == service)
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

	mu     sync.RWMutex
	tokens map[string]api.StoredToken // by ID

	ca atomic.Pointer[pki.Current] // the trust bundle of client certificates
}

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
	if !ok || subtle.ConstantTimeCompare([]byte(HashSecret(secret)), []byte(t.SecretSHA256)) != 1 {
		return Identity{}, api.Errorf(api.AuthorizationHeader, api.CodeUnauthenticated, "unknown or revoked token")
	}
	if v.now().UnixMilli() >= t.ExpiresAtMs {
		return Identity{}, api.Errorf(api.AuthorizationHeader, api.CodeExpired,
			"token %s of service %s expired at %s", t.ID, t.Service, time.UnixMilli(t.ExpiresAtMs).UTC().Format(time.RFC3339))
	}
	return Identity{Service: t.Service, Namespace: t.Namespace, TokenID: t.ID}, nil
}

// Reset replaces the known data-plane tokens.
func (v *Verifier) Reset(kvs []etcdx.Event, _ int64) {
	tokens := make(map[string]api.StoredToken, len(kvs))
	for _, kv := range kvs {
		if t, ok := decodeStored(kv.Value); ok {
			tokens[t.ID] = t
		}
	}
	v.mu.Lock()
	v.tokens = tokens
	v.mu.Unlock()
}

// Apply adds and revokes data-plane tokens.
func (v *Verifier) Apply(events []etcdx.Event, _ int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
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
	return t, err == nil && t.ID != "" && t.Service != "" && t.SecretSHA256 != ""
}

// HashSecret is what a StoredToken keeps of a secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewToken makes a data-plane token of service: the record to keep at
// api.Keys.Token(record.ID) and the token to hand out once.
func NewToken(service, namespace, createdBy string, ttl time.Duration, now time.Time) (record api.StoredToken, token string) {
	id, secret := randomHex(8), randomHex(24)
	record = api.StoredToken{TokenInfo: api.TokenInfo{ID: id, Service: service, Namespace: namespace, CreatedBy: createdBy,
		CreatedAtMs: now.UnixMilli(), ExpiresAtMs: now.Add(ttl).UnixMilli()}, SecretSHA256: HashSecret(secret)}
	return record, api.TokenPrefix + id + "." + secret
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
