package pki_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/pki"
	"github.com/sextant-mesh/sextant/internal/testenv"
)

func sealKey(t *testing.T, b byte) *pki.SealKey {
	t.Helper()
	k, err := pki.NewSealKey([]byte(strings.Repeat(string(rune(b)), 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func authority(t *testing.T, td string) *pki.Authority {
	t.Helper()
	root, err := pki.NewRoot(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := pki.NewAuthority([]pki.Root{root})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// csr is a PEM CSR of a fresh key, asking for the names of claim.
func csr(t *testing.T, claim string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}
	if claim != "" {
		u, _ := url.Parse(claim)
		tmpl.URIs = []*url.URL{u}
		tmpl.DNSNames = []string{"evil.example"}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestIssueAndVerify(t *testing.T) {
	a := authority(t, "example.org")
	req, err := pki.ParseCSR(csr(t, "spiffe://example.org/ns/prod/sa/payments"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := a.Issue(req.PublicKey, pki.Leaf{ID: pki.ID{Service: "orders"}, TTL: time.Minute}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://example.org/ns/default/sa/orders" || len(cert.DNSNames) != 0 {
		t.Fatalf("names: %v %v (the CSR's own claims must be ignored)", cert.URIs, cert.DNSNames)
	}
	if got := cert.NotAfter.Sub(now); got > time.Minute || got < time.Minute-time.Second {
		t.Fatalf("lifetime %s", got)
	}
	id, err := a.Verify([]*x509.Certificate{cert}, x509.ExtKeyUsageClientAuth, now)
	if err != nil || id.Service != "orders" || id.Namespace != "default" {
		t.Fatalf("verify: %v %+v", err, id)
	}
	if _, err := a.Verify([]*x509.Certificate{cert}, x509.ExtKeyUsageServerAuth, now); err != nil {
		t.Fatalf("server usage: %v", err)
	}
	if _, err := a.Verify([]*x509.Certificate{cert}, x509.ExtKeyUsageClientAuth, now.Add(2*time.Minute)); !errors.Is(err, pki.ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	other := authority(t, "example.org")
	if _, err := other.Verify([]*x509.Certificate{cert}, x509.ExtKeyUsageClientAuth, now); !errors.Is(err, pki.ErrUntrusted) {
		t.Fatalf("another CA: %v", err)
	}
}

func TestIssueRefuses(t *testing.T) {
	a := authority(t, "example.org")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, leaf := range map[string]pki.Leaf{
		"too long":           {ID: pki.ID{Service: "s"}, TTL: 48 * time.Hour},
		"no service":         {ID: pki.ID{Namespace: "n"}, TTL: time.Minute},
		"path in a name":     {ID: pki.ID{Service: "a/b"}, TTL: time.Minute},
		"other trust domain": {ID: pki.ID{TrustDomain: "other.org", Service: "s"}, TTL: time.Minute},
	} {
		if _, err := a.Issue(&key.PublicKey, leaf, time.Now()); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
	weak, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if _, err := a.Issue(&weak.PublicKey, pki.Leaf{ID: pki.ID{Service: "s"}, TTL: time.Minute}, time.Now()); !errors.Is(err, pki.ErrBadCSR) {
		t.Errorf("P-224 key: %v", err)
	}
}

func TestParseCSR(t *testing.T) {
	good := csr(t, "")
	tampered := []byte(strings.Replace(string(good), string(good[100:104]), "AAAA", 1))
	for name, in := range map[string][]byte{
		"empty":       nil,
		"not PEM":     []byte("hello"),
		"certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"garbage DER": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
		"two blocks":  append(append([]byte{}, good...), good...),
		"tampered":    tampered,
	} {
		if _, err := pki.ParseCSR(in); !errors.Is(err, pki.ErrBadCSR) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := pki.ParseCSR(good); err != nil {
		t.Fatal(err)
	}
}

func TestSeal(t *testing.T) {
	k := sealKey(t, 'k')
	sealed := k.Seal([]byte("secret"), []byte("cert-a"))
	if got, err := k.Open(sealed, []byte("cert-a")); err != nil || string(got) != "secret" {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := k.Open(sealed, []byte("cert-b")); err == nil {
		t.Fatal("a key sealed for one certificate opened for another")
	}
	if _, err := sealKey(t, 'o').Open(sealed, []byte("cert-a")); err == nil {
		t.Fatal("opened with another key")
	}
}

// Replicas starting together create one authority; the others load it,
// with its key sealed in etcd (never in clear), and a replica with another
// key file cannot open it.
func TestLoadOrCreateOnce(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	cli := etcd.Client(t)
	key := api.Keys{Prefix: testenv.Prefix(t)}.CARoot()
	seal := sealKey(t, 'k')
	var wg sync.WaitGroup
	got := make([]*pki.Authority, 8)
	created := make([]bool, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, c, err := pki.LoadOrCreate(context.Background(), cli, key, seal, "example.org")
			if err != nil {
				t.Error(err)
				return
			}
			got[i], created[i] = a, c
		}()
	}
	wg.Wait()
	n := 0
	for i, a := range got {
		if created[i] {
			n++
		}
		if a == nil || !a.Roots()[0].Cert.Equal(got[0].Roots()[0].Cert) || a.Roots()[0].Key == nil {
			t.Fatalf("replica %d has another authority", i)
		}
	}
	if n != 1 {
		t.Fatalf("%d replicas created the authority", n)
	}
	resp, _ := cli.Get(context.Background(), key)
	if der, _ := x509.MarshalPKCS8PrivateKey(got[0].Roots()[0].Key); strings.Contains(string(resp.Kvs[0].Value), string(der[len(der)-16:])) {
		t.Fatal("the root key is stored in clear")
	}
	if _, _, err := pki.LoadOrCreate(context.Background(), cli, key, sealKey(t, 'x'), "example.org"); err == nil {
		t.Fatal("opened with another key file")
	}
	if _, _, err := pki.LoadOrCreate(context.Background(), cli, key, seal, "other.org"); err == nil {
		t.Fatal("loaded with another trust domain")
	}
	verifyOnly, err := pki.Decode(resp.Kvs[0].Value, nil)
	if err != nil || verifyOnly.Roots()[0].Key != nil {
		t.Fatalf("decode without a key: %v", err)
	}
}

// A second root joins the bundle at once and signs only from its time on;
// what the first signed stays trusted.
func TestAddRoot(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	cli := etcd.Client(t)
	key := api.Keys{Prefix: testenv.Prefix(t)}.CARoot()
	seal := sealKey(t, 'k')
	first, _, err := pki.LoadOrCreate(context.Background(), cli, key, seal, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	old, _ := first.Issue(&pub.PublicKey, pki.Leaf{ID: pki.ID{Service: "s"}, TTL: 2 * time.Hour}, now)
	from := now.Add(time.Hour)
	both, err := pki.AddRoot(context.Background(), cli, key, seal, from)
	if err != nil {
		t.Fatal(err)
	}
	if len(both.Roots()) != 2 || strings.Count(string(both.BundlePEM()), "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("bundle: %d roots", len(both.Roots()))
	}
	if s, _ := both.Signer(now); !s.Cert.Equal(first.Roots()[0].Cert) {
		t.Fatal("the new root signs before its time")
	}
	if s, _ := both.Signer(from.Add(time.Second)); !s.Cert.Equal(both.Roots()[1].Cert) {
		t.Fatal("the new root does not sign from its time")
	}
	next, err := both.Issue(&pub.PublicKey, pki.Leaf{ID: pki.ID{Service: "s"}, TTL: time.Hour}, from.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*x509.Certificate{old, next} {
		if _, err := both.Verify([]*x509.Certificate{c}, x509.ExtKeyUsageClientAuth, from.Add(2*time.Second)); err != nil {
			t.Fatalf("certificate of %s: %v", c.Issuer, err)
		}
	}
	reloaded, _, err := pki.LoadOrCreate(context.Background(), cli, key, seal, "example.org")
	if err != nil || len(reloaded.Roots()) != 2 {
		t.Fatalf("reload: %v", err)
	}
}
