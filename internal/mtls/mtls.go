// Package mtls is the TLS of a Sextant service's HTTP ports: the serving
// certificate (from files, or issued to the service by the certificate
// authority when it holds the CA key file), client certificates requested
// and handed to authn to verify against the trust bundle, and the mirror
// that keeps that bundle current from etcd (docs/security.md).
package mtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/config"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/pki"
)

// DefaultTrustDomain is the trust domain of a new authority unless told
// otherwise.
const DefaultTrustDomain = "sextant.local"

// ServiceNamespace is the namespace of the identities the control plane's
// own services give themselves.
const ServiceNamespace = api.ControlPlaneNamespace

// servingTTL is the lifetime of a serving certificate a service issues to
// itself; it renews at two thirds of it.
const servingTTL = time.Hour

// Config is the TLS and certificate-authority part of a service's settings.
type Config struct {
	// CertFile and KeyFile serve the HTTP ports over TLS with these.
	CertFile string
	KeyFile  string
	// CAKeyFile holds the key that seals the authority's keys in etcd. With
	// it the service creates the authority if there is none yet, and, when
	// no CertFile is given, serves TLS with a certificate it issues itself.
	CAKeyFile string
	// TrustDomain is the trust domain of an authority this service creates.
	TrustDomain string
	// Hosts are more DNS names and IP addresses (comma-separated) for a
	// serving certificate the service issues itself.
	Hosts string
	// PlainHTTP keeps the HTTP ports plaintext while the Kitex hops use
	// mTLS (sextant dev, whose quick start speaks http://; --tls-http=false).
	PlainHTTP bool
}

// RegisterFlags adds --tls-cert, --tls-key, --ca-key-file, --trust-domain
// and --tls-hosts.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	fs.StringVar(&c.CertFile, "tls-cert", c.CertFile, "PEM certificate: serve the HTTP API over TLS (with --tls-key)")
	fs.StringVar(&c.KeyFile, "tls-key", c.KeyFile, "PEM key of --tls-cert")
	fs.StringVar(&c.CAKeyFile, "ca-key-file", c.CAKeyFile, "file of the 32-byte key (base64) that seals the certificate authority's keys in etcd; with it the service creates the authority if there is none and, without --tls-cert, serves TLS with a certificate it issues itself")
	fs.StringVar(&c.TrustDomain, "trust-domain", c.TrustDomain, "trust domain of the identities (spiffe://<trust-domain>/ns/<namespace>/sa/<service>) when this service creates the authority")
	fs.Func("tls-http", "with --ca-key-file: serve the HTTP APIs over TLS too (default true); false keeps them plain while the Kitex hops use mTLS", func(v string) error {
		b, err := strconv.ParseBool(v)
		c.PlainHTTP = !b
		return err
	})
	fs.StringVar(&c.Hosts, "tls-hosts", c.Hosts, "comma-separated DNS names and IPs added to a serving certificate the service issues itself (besides localhost, the host name and the listen address)")
}

func (c Config) trustDomain() string {
	if c.TrustDomain == "" {
		return DefaultTrustDomain
	}
	return c.TrustDomain
}

// Security is what a service builds from Config: the authority known from
// etcd (its keys open when the CA key file is given), the mirror that keeps
// it current, and the TLS its HTTP ports serve (none when neither
// certificate files nor the CA key file are given).
type Security struct {
	CA     *pki.Current
	Mirror *etcdx.Mirror
	tls    *tls.Config
	kitex  *kitexTLS // nil: the Kitex hops are plaintext
}

// New builds a service's Security and makes verifier trust the authority's
// client certificates. With a CA key file it loads the authority from etcd,
// or creates it, before it returns.
func New(c Config, cli *clientv3.Client, keys api.Keys, service, listenAddr string, verifier *authn.Verifier, log *slog.Logger) (*Security, error) {
	var seal *pki.SealKey
	var known *pki.Authority
	if c.CAKeyFile != "" {
		var err error
		if seal, err = pki.ReadSealKey(c.CAKeyFile); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a, created, err := pki.LoadOrCreate(ctx, cli, keys.CARoot(), seal, c.trustDomain())
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("certificate authority created", "trust_domain", a.TrustDomain(), "key", keys.CARoot())
		}
		known = a
	}
	s := &Security{CA: pki.NewCurrent(seal, known)}
	s.CA.OnError = func(err error) {
		log.Error("certificate authority in etcd not usable; keeping the last one", "err", err)
	}
	s.Mirror = etcdx.NewMirror(cli, keys.CA(), s.CA, log)
	if verifier != nil {
		verifier.TrustAuthority(s.CA)
	}
	var files, self func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if c.CertFile != "" || c.KeyFile != "" {
		fc, err := newFileCert(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		files = fc.get
	}
	if seal != nil {
		dns, ips := hostsOf(listenAddr, c.Hosts)
		si, err := newSelfIssued(s.CA, pki.ID{TrustDomain: known.TrustDomain(), Namespace: ServiceNamespace, Service: service}, dns, ips)
		if err != nil {
			return nil, err
		}
		self = si.get
	}
	// The HTTP ports serve the certificate files when given, else the
	// certificate the service issues itself. The Kitex hops present the
	// service's own identity: the certificate it issues itself when it
	// can, else the files (which must then carry its SPIFFE ID).
	switch {
	case c.PlainHTTP:
	case files != nil:
		s.tls = serverTLS(files)
	case self != nil:
		s.tls = serverTLS(self)
	}
	switch {
	case self != nil:
		s.kitex = &kitexTLS{ca: s.CA, cert: self}
	case files != nil:
		s.kitex = &kitexTLS{ca: s.CA, cert: files}
	}
	if s.kitex != nil {
		s.kitex.sessions = tls.NewLRUClientSessionCache(64)
	}
	return s, nil
}

// TLS tells whether the HTTP ports serve TLS.
func (s *Security) TLS() bool { return s.tls != nil }

// ServerOptions are the Hertz options of a port that serves with s.
func (s *Security) ServerOptions() []config.Option {
	if s.tls == nil {
		return nil
	}
	return []config.Option{server.WithTLS(s.tls.Clone()), server.WithOnConnect(authn.OnConnect)}
}

// serverTLS asks clients for a certificate without verifying it in the
// handshake: authn verifies it against the trust bundle known at the
// request, so an expired or foreign certificate gets a JSON 401 rather than
// a failed handshake, and a client with only a bearer token is served too.
func serverTLS(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: get, ClientAuth: tls.RequestClientCert}
}

// selfIssued is a serving certificate the service issues itself and renews
// at two thirds of its lifetime, at the first handshake after.
type selfIssued struct {
	ca    *pki.Current
	key   *ecdsa.PrivateKey
	leaf  pki.Leaf
	mu    sync.Mutex
	cert  *tls.Certificate
	renew time.Time
}

func newSelfIssued(ca *pki.Current, id pki.ID, dns []string, ips []net.IP) (*selfIssued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	s := &selfIssued{ca: ca, key: key, leaf: pki.Leaf{ID: id, TTL: servingTTL, DNSNames: dns, IPs: ips}}
	if _, err := s.get(nil); err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	return s, nil
}

func (s *selfIssued) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.cert != nil && now.Before(s.renew) {
		return s.cert, nil
	}
	a := s.ca.Authority()
	if a == nil {
		return nil, pki.ErrNoKey
	}
	leaf, err := a.Issue(&s.key.PublicKey, s.leaf, now)
	if err != nil {
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
			return s.cert, nil // the one in hand is still valid: try again at the next handshake
		}
		return nil, err
	}
	s.cert = &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: s.key, Leaf: leaf}
	s.renew = now.Add(leaf.NotAfter.Sub(now) * 2 / 3)
	return s.cert, nil
}

// hostsOf are the names a self-issued serving certificate carries:
// localhost, the host name, the listen address unless unspecified, and
// extra (comma-separated names and IPs).
func hostsOf(listenAddr, extra string) (dns []string, ips []net.IP) {
	dns = []string{"localhost"}
	ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if h, err := os.Hostname(); err == nil && h != "" {
		dns = append(dns, h)
	}
	names := strings.Split(extra, ",")
	if host, _, err := net.SplitHostPort(listenAddr); err == nil {
		names = append(names, host)
	}
	for _, n := range names {
		n = strings.TrimSpace(n)
		switch ip := net.ParseIP(n); {
		case n == "":
		case ip != nil && !ip.IsUnspecified() && !ip.IsLoopback():
			ips = append(ips, ip)
		case ip == nil:
			dns = append(dns, n)
		}
	}
	return dns, ips
}

// fileCert is a certificate and key read from files, read again when
// either file changes (checked at a handshake, at most every
// fileCheckEvery), so that a renewed certificate is served without a
// restart. A pair that does not load keeps the last one served.
type fileCert struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // the files' sizes and modification times
	checked time.Time
}

const fileCheckEvery = 10 * time.Second

func newFileCert(certFile, keyFile string) (*fileCert, error) {
	f := &fileCert{certFile: certFile, keyFile: keyFile}
	stamp, err := f.stampNow()
	if err != nil {
		return nil, err
	}
	if err := f.load(stamp); err != nil {
		return nil, err
	}
	f.checked = time.Now()
	return f, nil
}

func (f *fileCert) stampNow() (string, error) {
	var b strings.Builder
	for _, name := range []string{f.certFile, f.keyFile} {
		st, err := os.Stat(name)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%d@%d;", st.Size(), st.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (f *fileCert) load(stamp string) error {
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return err
	}
	f.cert, f.stamp = &cert, stamp
	return nil
}

func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checked) >= fileCheckEvery {
		f.checked = now
		if stamp, err := f.stampNow(); err == nil && stamp != f.stamp {
			_ = f.load(stamp) // a half-written pair: keep the last, try again later
		}
	}
	return f.cert, nil
}
