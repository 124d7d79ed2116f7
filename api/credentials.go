package api

import (
	"strings"
	"time"
)

// Error codes of authentication and authorization (401 and 403 answers).
const (
	CodeUnauthenticated = "unauthenticated" // no credential, or one nobody issued
	CodeExpired         = "expired"         // a credential past its expiry
	CodeForbidden       = "forbidden"       // a valid credential that may not do this
)

// AuthorizationHeader carries every credential: "Bearer <token>".
const AuthorizationHeader = "Authorization"

// ClientCertificateField names a TLS client certificate in the errors that
// refuse one (401, with CodeExpired or CodeUnauthenticated).
const ClientCertificateField = "client_certificate"

// BearerPrefix starts the value of AuthorizationHeader.
const BearerPrefix = "Bearer "

// TokenPrefix starts every data-plane token: "sxt." + ID + "." + secret.
const TokenPrefix = "sxt."

// DefaultTokenTTL is how long a data-plane token lives unless asked
// otherwise; MaxTokenTTL is the longest it may.
const (
	DefaultTokenTTL = 30 * 24 * time.Hour
	MaxTokenTTL     = 366 * 24 * time.Hour
)

// ControlPlaneNamespace is the namespace of Sextant's own services'
// identities (the certificates the Kitex hops check); no token is issued in
// it.
const ControlPlaneNamespace = "sextant"

// Operator roles.
const (
	RoleReader = "reader"
	RoleWriter = "writer"
)

// TokenRequest asks the config-center for a token (POST /v1/tokens): a data
// plane's token of Service, or an operator's token (Operator, Role and the
// Services it may act on; "*" for all of them).
type TokenRequest struct {
	Service   string `json:"service,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// TTL is a Go duration ("720h"); DefaultTokenTTL when empty.
	TTL string `json:"ttl,omitempty"`

	Operator string   `json:"operator,omitempty"`
	Role     string   `json:"role,omitempty"`
	Services []string `json:"services,omitempty"`
}

// Validate checks r and returns its lifetime.
func (r TokenRequest) Validate() (time.Duration, *FieldError) {
	switch {
	case r.Operator == "" && r.Role == "" && r.Services == nil:
		if fe := Name("service", r.Service, true); fe != nil {
			return 0, fe
		}
	case r.Service != "":
		return 0, Errorf("service", CodeInvalidValue, "a token is a data plane's (service) or an operator's (operator, role, services), not both")
	default:
		if fe := Name("operator", r.Operator, true); fe != nil {
			return 0, fe
		}
		if r.Role != RoleReader && r.Role != RoleWriter {
			return 0, Errorf("role", CodeInvalidValue, "want reader or writer, got %q", r.Role)
		}
		if len(r.Services) == 0 {
			return 0, Errorf("services", CodeMissingField, `list the services the operator may act on, or ["*"] for all`)
		}
		for i, s := range r.Services {
			if s == "*" {
				continue
			}
			if fe := Name(Index("services", i), s, true); fe != nil {
				return 0, fe
			}
		}
	}
	if fe := Name("namespace", r.Namespace, false); fe != nil {
		return 0, fe
	}
	if r.Namespace == ControlPlaneNamespace {
		return 0, Errorf("namespace", CodeInvalidValue, "%q is the control plane's own namespace", ControlPlaneNamespace)
	}
	if r.TTL == "" {
		return DefaultTokenTTL, nil
	}
	ttl, err := time.ParseDuration(r.TTL)
	switch {
	case err != nil:
		return 0, Errorf("ttl", CodeInvalidValue, "not a duration such as 720h: %v", err)
	case ttl < time.Minute || ttl > MaxTokenTTL:
		return 0, Errorf("ttl", CodeOutOfRange, "must be between 1m and %s", MaxTokenTTL)
	}
	return ttl, nil
}

// TokenInfo describes a data-plane token without its secret: what GET
// /v1/tokens lists.
type TokenInfo struct {
	ID          string   `json:"id"`
	Service     string   `json:"service,omitempty"`
	Operator    string   `json:"operator,omitempty"`
	Role        string   `json:"role,omitempty"`
	Services    []string `json:"services,omitempty"`
	Namespace   string   `json:"namespace,omitempty"`
	CreatedBy   string   `json:"created_by"`
	CreatedAtMs int64    `json:"created_at_ms"`
	ExpiresAtMs int64    `json:"expires_at_ms"`
}

// TokenIssued answers a TokenRequest; Token is shown this once and stored
// nowhere.
type TokenIssued struct {
	TokenInfo
	Token string `json:"token"`
}

// StoredToken is a token as kept at Keys.Token: the SHA-256 of its secret,
// never the secret.
type StoredToken struct {
	TokenInfo
	SecretSHA256 string `json:"secret_sha256"`
}

// ParseToken splits a data-plane token into its ID and secret.
func ParseToken(token string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, ".")
	return id, secret, ok && id != "" && secret != ""
}

// CertificateRequest asks the config-center for a workload certificate
// (POST /v1/certificates). The identity comes from the caller's credential:
// a data plane's token or certificate gets one of its own service; an
// operator that may write names the service (and namespace).
type CertificateRequest struct {
	// CSR is a PEM "CERTIFICATE REQUEST" signed by the workload's key; only
	// its public key is used (the names it asks for are ignored).
	CSR string `json:"csr"`
	// Service is the certificate's service: the caller's own when empty;
	// a data plane may name only its own.
	Service string `json:"service,omitempty"`
	// Namespace is an operator's choice; a data plane's comes from its
	// credential ("default" when it has none).
	Namespace string `json:"namespace,omitempty"`
	// TTL is a Go duration ("10m") no longer than the config-center's
	// --cert-ttl, which is the default.
	TTL string `json:"ttl,omitempty"`
}

// CertificateIssued answers a CertificateRequest.
type CertificateIssued struct {
	// SpiffeID is the identity the certificate carries:
	// spiffe://<trust domain>/ns/<namespace>/sa/<service>.
	SpiffeID string `json:"spiffe_id"`
	Serial   string `json:"serial"`
	// NotBeforeMs and ExpiresAtMs bound the certificate's validity.
	NotBeforeMs int64 `json:"not_before_ms"`
	ExpiresAtMs int64 `json:"expires_at_ms"`
	// CertificatePEM is the workload certificate (the roots are in BundlePEM).
	CertificatePEM string `json:"certificate_pem"`
	// BundlePEM is the trust bundle: every root to trust, as GET /v1/ca.
	BundlePEM string `json:"bundle_pem"`
}
