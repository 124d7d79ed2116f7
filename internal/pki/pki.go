// Package pki is Sextant's certificate authority: ECDSA P-256 roots whose
// keys are kept sealed (AES-256-GCM) at rest, short-lived workload
// certificates with SPIFFE IDs issued on a CSR, and the verification of a
// peer's certificate chain against the trust bundle. It knows no service:
// who may ask for which identity is the caller's decision (docs/security.md).
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Lifetimes.
const (
	// RootTTL is how long a root signs and is trusted.
	RootTTL = 10 * 365 * 24 * time.Hour
	// MaxLeafTTL bounds a workload certificate's lifetime.
	MaxLeafTTL = 24 * time.Hour
	// MinLeafTTL is the shortest lifetime a certificate may be given.
	MinLeafTTL = time.Second
	// backdate is how far before its issue a leaf is valid, for clocks a
	// little behind the authority's.
	backdate = 30 * time.Second
)

// Errors of verification and issuance, classified with errors.Is.
var (
	ErrExpired   = errors.New("certificate expired or not yet valid")
	ErrUntrusted = errors.New("certificate not issued by a trusted root")
	ErrNoKey     = errors.New("the authority's keys are not available here")
	ErrBadCSR    = errors.New("invalid certificate signing request")
)

// ID is a workload identity: spiffe://<trust domain>/ns/<namespace>/sa/<service>.
type ID struct {
	TrustDomain string
	Namespace   string
	Service     string
}

// DefaultNamespace is the namespace of an identity that names none.
const DefaultNamespace = "default"

// URI is the ID as a URI SAN.
func (id ID) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.Service}
}

func (id ID) String() string { return id.URI().String() }

var segment = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Validate checks that every part of the ID is set and fits in a URI path.
func (id ID) Validate() error {
	if !segment.MatchString(id.TrustDomain) || !segment.MatchString(id.Namespace) || !segment.MatchString(id.Service) {
		return fmt.Errorf("identity %q: trust domain, namespace and service must be non-empty names of letters, digits, '.', '_' and '-'", id.String())
	}
	return nil
}

// ParseID reads a SPIFFE ID of the form this authority issues.
func ParseID(u *url.URL) (ID, error) {
	if u == nil || u.Scheme != "spiffe" {
		return ID{}, fmt.Errorf("not a spiffe ID: %v", u)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return ID{}, fmt.Errorf("spiffe ID %q is not of the form spiffe://<trust domain>/ns/<namespace>/sa/<service>", u)
	}
	id := ID{TrustDomain: u.Host, Namespace: parts[1], Service: parts[3]}
	return id, id.Validate()
}

// IDOf is the identity a workload certificate carries: its one spiffe URI SAN.
func IDOf(cert *x509.Certificate) (ID, error) {
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		return ID{}, fmt.Errorf("certificate %s carries %d spiffe IDs, not one", serialOf(cert), len(found))
	}
	return ParseID(found[0])
}

// Root is one root of the authority: its certificate and, where the
// authority may sign, its key. It signs from SignsFrom on: a new root joins
// the bundle before it signs, so that every peer trusts it by then.
type Root struct {
	Cert      *x509.Certificate
	Key       *ecdsa.PrivateKey // nil where the key is not available
	SignsFrom time.Time
}

// NewRoot makes a self-signed ECDSA P-256 root of trustDomain.
func NewRoot(trustDomain string, now time.Time) (Root, error) {
	if !segment.MatchString(trustDomain) {
		return Root{}, fmt.Errorf("trust domain %q: must be a name of letters, digits, '.', '_' and '-'", trustDomain)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Root{}, err
	}
	serial, err := randomSerial()
	if err != nil {
		return Root{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{trustDomain}, CommonName: "Sextant root CA " + now.UTC().Format("2006-01-02T15:04:05Z")},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Root{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Root{}, err
	}
	return Root{Cert: cert, Key: key, SignsFrom: now}, nil
}

// TrustDomainOf is the trust domain a root was made for.
func TrustDomainOf(root *x509.Certificate) string {
	for _, u := range root.URIs {
		if u.Scheme == "spiffe" {
			return u.Host
		}
	}
	return ""
}

// Authority is an immutable view of the certificate authority: its roots,
// oldest first, all of them in the trust bundle.
type Authority struct {
	trustDomain string
	roots       []Root
	pool        *x509.CertPool
	bundlePEM   []byte
}

// NewAuthority is the authority of roots, oldest first; they share one
// trust domain.
func NewAuthority(roots []Root) (*Authority, error) {
	if len(roots) == 0 {
		return nil, errors.New("an authority needs a root")
	}
	a := &Authority{trustDomain: TrustDomainOf(roots[0].Cert), roots: roots, pool: x509.NewCertPool()}
	for _, r := range roots {
		if td := TrustDomainOf(r.Cert); td != a.trustDomain {
			return nil, fmt.Errorf("root %s is of trust domain %q, the authority's is %q", serialOf(r.Cert), td, a.trustDomain)
		}
		a.pool.AddCert(r.Cert)
		a.bundlePEM = append(a.bundlePEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Cert.Raw})...)
	}
	return a, nil
}

// TrustDomain is the domain of every identity the authority issues.
func (a *Authority) TrustDomain() string { return a.trustDomain }

// Roots are the authority's roots, oldest first.
func (a *Authority) Roots() []Root { return a.roots }

// BundlePEM is the trust bundle: every root, PEM-encoded, oldest first.
func (a *Authority) BundlePEM() []byte { return a.bundlePEM }

// Pool is the trust bundle as a pool. Do not change it.
func (a *Authority) Pool() *x509.CertPool { return a.pool }

// Signer is the root that signs at now: the newest whose SignsFrom has
// come, with its key.
func (a *Authority) Signer(now time.Time) (Root, error) {
	for i := len(a.roots) - 1; i >= 0; i-- {
		r := a.roots[i]
		if !now.Before(r.SignsFrom) && now.Before(r.Cert.NotAfter) {
			if r.Key == nil {
				return Root{}, ErrNoKey
			}
			return r, nil
		}
	}
	return Root{}, fmt.Errorf("no root of %s signs at %s", a.trustDomain, now.UTC().Format(time.RFC3339))
}

// Leaf is what a workload certificate says.
type Leaf struct {
	ID  ID
	TTL time.Duration
	// DNSNames and IPs are added for a certificate that also serves (a
	// workload's CSR never chooses them).
	DNSNames []string
	IPs      []net.IP
}

// Issue signs a workload certificate for pub, valid from a little before now
// for leaf.TTL (not beyond the signing root), usable by clients and servers.
// It returns the certificate, DER-encoded.
func (a *Authority) Issue(pub crypto.PublicKey, leaf Leaf, now time.Time) (*x509.Certificate, error) {
	if leaf.ID.TrustDomain == "" {
		leaf.ID.TrustDomain = a.trustDomain
	}
	if leaf.ID.Namespace == "" {
		leaf.ID.Namespace = DefaultNamespace
	}
	if err := leaf.ID.Validate(); err != nil {
		return nil, err
	}
	if leaf.ID.TrustDomain != a.trustDomain {
		return nil, fmt.Errorf("identity %s is not of the authority's trust domain %q", leaf.ID, a.trustDomain)
	}
	if leaf.TTL < MinLeafTTL || leaf.TTL > MaxLeafTTL {
		return nil, fmt.Errorf("certificate lifetime %s: must be between %s and %s", leaf.TTL, MinLeafTTL, MaxLeafTTL)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	signer, err := a.Signer(now)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(leaf.TTL)
	if notAfter.After(signer.Cert.NotAfter) {
		notAfter = signer.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{a.trustDomain}, OrganizationalUnit: []string{leaf.ID.Namespace}, CommonName: leaf.ID.Service},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{leaf.ID.URI()},
		DNSNames:              leaf.DNSNames,
		IPAddresses:           leaf.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.Cert, pub, signer.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA keys must be on P-256 or P-384", ErrBadCSR)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: RSA keys must have at least 2048 bits", ErrBadCSR)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, pub)
	}
	return nil
}

// ParseCSR reads a PEM "CERTIFICATE REQUEST" and checks its signature
// (the requester holds the key). Only its public key is used: the names it
// asks for are ignored, the identity comes from the requester's credential.
func ParseCSR(pemText []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(pemText)
	switch {
	case block == nil:
		return nil, fmt.Errorf("%w: no PEM block", ErrBadCSR)
	case block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST":
		return nil, fmt.Errorf("%w: PEM block is %q, not CERTIFICATE REQUEST", ErrBadCSR, block.Type)
	case len(strings.TrimSpace(string(rest))) > 0:
		return nil, fmt.Errorf("%w: more than one PEM block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr, nil
}

// Verify checks a peer's chain (leaf first) at now against the trust bundle
// for use as a client (or server, with usage) and returns its identity.
// Errors wrap ErrExpired or ErrUntrusted.
func (a *Authority) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) (ID, error) {
	if len(chain) == 0 {
		return ID{}, fmt.Errorf("%w: no certificate", ErrUntrusted)
	}
	leaf := chain[0]
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return ID{}, fmt.Errorf("%w: certificate %s is valid from %s to %s", ErrExpired, serialOf(leaf),
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return ID{}, fmt.Errorf("%w: %v", ErrExpired, err)
		}
		return ID{}, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	id, err := IDOf(leaf)
	if err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	if id.TrustDomain != a.trustDomain {
		return ID{}, fmt.Errorf("%w: identity %s is not of trust domain %q", ErrUntrusted, id, a.trustDomain)
	}
	return id, nil
}

// EncodePEM is certificates as PEM, in order.
func EncodePEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// SerialOf is how a certificate is named in logs and audit: its serial in hex.
func SerialOf(c *x509.Certificate) string { return serialOf(c) }

func serialOf(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// fingerprint binds a sealed key to its root certificate.
func fingerprint(c *x509.Certificate) []byte {
	sum := sha256.Sum256(c.Raw)
	return sum[:]
}
