package sdk

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// IdentityOptions configure an Identity.
type IdentityOptions struct {
	// ConfigCenter is the config-center's address: host:port, or a URL
	// such as https://host:port.
	ConfigCenter string
	// Token proves who the workload is when it asks for its first
	// certificate (default: $SEXTANT_TOKEN): the service's data-plane
	// token. Over https, renewals are proven by the certificate in hand.
	Token string
	// TokenFile is a file holding the credential, read again at every
	// request for a certificate proven by a token: a Kubernetes
	// service-account token that kubelet rotates (default, when neither
	// Token nor $SEXTANT_TOKEN gives a token: the file named by
	// $SEXTANT_SA_TOKEN_FILE, when it exists).
	TokenFile string
	// Service is the service the certificate is for; empty means the
	// token's. A data plane may only have a certificate of its own service.
	Service string
	// TTL asks for certificates this long-lived (0: the config-center's
	// --cert-ttl, which also bounds it).
	TTL time.Duration
	// HTTPClient reaches the config-center (nil: the default client); give
	// one whose TLS trusts the config-center's certificate when it is not
	// one of the Sextant authority's.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Identity is a workload's certificate from the Sextant certificate
// authority, kept current: it generates a key, sends a CSR to the
// config-center, and renews at two thirds of the certificate's lifetime
// (retrying with backoff when that fails, and never presenting an expired
// certificate). Its TLS configurations and HTTP client always use the
// current certificate and trust bundle, so the SDK's clients (Discovery,
// Reporter, Registrar, ConfigWatcher) take it as their HTTPClient and
// nothing else changes.
type Identity struct {
	o      IdentityOptions
	base   string
	token  string
	file   string // read at each request when token is empty
	log    *slog.Logger
	client *http.Client // for the config-center

	cur       atomic.Pointer[issued]
	transport *rotatingTransport

	cancel context.CancelFunc
	done   chan struct{}
}

// issued is one certificate with its key and the trust bundle it came with.
type issued struct {
	cert     *tls.Certificate
	leaf     *x509.Certificate
	roots    *x509.CertPool
	spiffeID string
	renewAt  time.Time
}

// ErrIdentityRefused is what NewIdentity returns when the config-center
// refuses the request (400 or 403): retrying does not help.
var ErrIdentityRefused = errors.New("certificate refused")

// NewIdentity obtains the workload's first certificate, retrying until ctx
// ends while the config-center cannot answer (or does not know the token
// yet), then keeps it renewed in the background until Close.
func NewIdentity(ctx context.Context, o IdentityOptions) (*Identity, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id := &Identity{o: o, base: baseURL(o.ConfigCenter), token: tokenOf(o.Token), log: log,
		client: httpClient(o.HTTPClient, 10*time.Second), done: make(chan struct{})}
	if id.token == "" {
		if id.file = o.TokenFile; id.file == "" {
			_, _, id.file = credential("")
		}
	}
	id.transport = &rotatingTransport{newTransport: id.newTransport}
	retry := backoff.Policy{Base: 100 * time.Millisecond, Max: 2 * time.Second}
	for attempt := 1; ; attempt++ {
		err := id.renew(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, ErrIdentityRefused) || ctx.Err() != nil {
			return nil, fmt.Errorf("workload certificate: %w", err)
		}
		retry.Sleep(ctx, attempt)
	}
	rctx, cancel := context.WithCancel(context.Background())
	id.cancel = cancel
	go id.run(rctx)
	return id, nil
}

// Close stops renewing.
func (id *Identity) Close() {
	id.cancel()
	<-id.done
	id.transport.closeIdle()
}

// SpiffeID is the identity the current certificate carries.
func (id *Identity) SpiffeID() string { return id.cur.Load().spiffeID }

// Certificate is the current certificate, nil once it expired (a renewal
// keeps failing).
func (id *Identity) Certificate() *tls.Certificate {
	c := id.cur.Load()
	if time.Now().After(c.leaf.NotAfter) {
		return nil
	}
	return c.cert
}

// ClientTLS is a TLS configuration for clients: it presents the current
// certificate and verifies servers against the current trust bundle (and
// their name, as TLS does).
func (id *Identity) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := id.Certificate(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil // none: the server decides
		},
		// The trust bundle changes with the authority's roots, so the
		// verification is done here, against the bundle known now; it is
		// the one crypto/tls does (chain and server name).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, id.cur.Load().roots, cs.ServerName, x509.ExtKeyUsageServerAuth)
		},
	}
}

// ServerTLS is a TLS configuration for servers: it serves the current
// certificate and requires clients to present one chained to the current
// trust bundle.
func (id *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := id.Certificate()
			if c == nil {
				return nil, errors.New("sextant identity: the workload certificate expired and is not renewed yet")
			}
			return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*c},
				ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: id.cur.Load().roots}, nil
		},
	}
}

// listenerConfig is the TLS configuration of a data plane's server: the
// current certificate, the client's asked for but not verified (the
// access control does, VerifyPeer); nil once the certificate expired.
func (id *Identity) listenerConfig() *tls.Config {
	c := id.Certificate()
	if c == nil {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*c}, ClientAuth: tls.RequestClientCert}
}

// HTTPClient is a client whose TLS connections present the current
// certificate: give it as the HTTPClient option of the SDK's clients.
// Connections opened with a certificate are no longer reused once it is
// renewed.
func (id *Identity) HTTPClient() *http.Client { return &http.Client{Transport: id.transport} }

// TrustBundle is the pool of the authority's roots as last received.
func (id *Identity) TrustBundle() *x509.CertPool { return id.cur.Load().roots }

func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, name string, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("sextant identity: the peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func (id *Identity) run(ctx context.Context) {
	defer close(id.done)
	retry := backoff.Policy{Base: 200 * time.Millisecond, Max: 30 * time.Second}
	failures := 0
	for {
		wait := time.Until(id.cur.Load().renewAt)
		if failures > 0 {
			wait = retry.Delay(failures)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := id.renew(ctx); err != nil {
			failures++
			if failures == 1 || failures%10 == 0 {
				id.log.Warn("workload certificate renewal failing; retrying", "err", err, "failures", failures,
					"expires", id.cur.Load().leaf.NotAfter)
			}
			continue
		}
		failures = 0
	}
}

// renew asks for a certificate of a fresh key and makes it current.
func (id *Identity) renew(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id.o.Service}}, key)
	if err != nil {
		return err
	}
	req := api.CertificateRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})), Service: id.o.Service}
	if id.o.TTL > 0 {
		req.TTL = id.o.TTL.String()
	}
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, id.base+"/v1/certificates", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	client := id.client
	if prev := id.cur.Load(); prev != nil && strings.HasPrefix(id.base, "https://") && id.Certificate() != nil {
		client = id.renewalClient() // the certificate in hand proves who asks
	} else {
		token, err := id.credential()
		if err != nil {
			return err
		}
		authorize(hreq, token)
	}
	resp, err := client.Do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: config-center answered %d: %s", ErrIdentityRefused, resp.StatusCode, bytes.TrimSpace(b))
	case resp.StatusCode != http.StatusCreated:
		return fmt.Errorf("config-center answered %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var out api.CertificateIssued
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Errorf("config-center's answer: %w", err)
	}
	next, err := parseIssued(out, key)
	if err != nil {
		return err
	}
	id.cur.Store(next)
	id.transport.rotate()
	id.log.Info("workload certificate renewed", "spiffe_id", next.spiffeID, "serial", out.Serial, "expires", next.leaf.NotAfter)
	return nil
}

// credential is the token that proves who the workload is: the token
// given, else the token file's content as it is now (kubelet rewrites a
// projected service-account token before it expires).
func (id *Identity) credential() (string, error) {
	if id.token != "" || id.file == "" {
		return id.token, nil
	}
	b, err := os.ReadFile(id.file)
	if err != nil {
		return "", fmt.Errorf("service-account token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func parseIssued(out api.CertificateIssued, key *ecdsa.PrivateKey) (*issued, error) {
	block, _ := pem.Decode([]byte(out.CertificatePEM))
	if block == nil {
		return nil, errors.New("config-center's answer: no certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("config-center's answer: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(out.BundlePEM)) {
		return nil, errors.New("config-center's answer: no trust bundle")
	}
	now := time.Now()
	// Two thirds of what is left of its lifetime from now: the certificate
	// is backdated a little for clocks behind, which is no time to use.
	return &issued{cert: &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, leaf: leaf, roots: roots,
		spiffeID: out.SpiffeID, renewAt: now.Add(leaf.NotAfter.Sub(now) * 2 / 3)}, nil
}

// renewalClient reaches the config-center over TLS with the current
// certificate: the caller's transport when it has one, with the
// certificate added, else the identity's own.
func (id *Identity) renewalClient() *http.Client {
	if id.o.HTTPClient != nil {
		if t, ok := id.o.HTTPClient.Transport.(*http.Transport); ok {
			t = t.Clone()
			if t.TLSClientConfig == nil {
				t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			t.TLSClientConfig.GetClientCertificate = id.ClientTLS().GetClientCertificate
			t.DisableKeepAlives = true // one request an hour or so
			return &http.Client{Transport: t, Timeout: 10 * time.Second}
		}
	}
	return &http.Client{Transport: id.transport, Timeout: 10 * time.Second}
}

func (id *Identity) newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = id.ClientTLS()
	return t
}

// rotatingTransport sends each request over the transport of the current
// certificate: a TLS connection authenticates its client once, at the
// handshake, so connections opened with a certificate must not outlive it.
// A renewal starts a new transport; the previous one finishes the requests
// in hand and its idle connections are closed.
type rotatingTransport struct {
	newTransport func() *http.Transport
	mu           sync.Mutex
	cur, prev    *http.Transport
}

func (r *rotatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	t := r.cur
	if t == nil {
		t = r.newTransport()
		r.cur = t
	}
	r.mu.Unlock()
	return t.RoundTrip(req)
}

func (r *rotatingTransport) rotate() {
	r.mu.Lock()
	older := r.prev
	r.prev, r.cur = r.cur, nil
	prev := r.prev
	r.mu.Unlock()
	if older != nil {
		older.CloseIdleConnections()
	}
	if prev != nil {
		prev.CloseIdleConnections()
	}
}

func (r *rotatingTransport) closeIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range []*http.Transport{r.cur, r.prev} {
		if t != nil {
			t.CloseIdleConnections()
		}
	}
}
