package pki

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// SealKey is the AES-256 key the roots' keys are sealed with in etcd. It
// never leaves the file (a Kubernetes Secret) it is read from.
type SealKey struct{ aead cipher.AEAD }

// ReadSealKey reads a 32-byte key from path: base64 (`openssl rand -base64
// 32`), 64 hex digits, or the 32 bytes themselves.
func ReadSealKey(path string) (*SealKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA key file: %w", err)
	}
	key, err := decodeKey(b)
	if err != nil {
		return nil, fmt.Errorf("CA key file %s: %w", path, err)
	}
	return NewSealKey(key)
}

func decodeKey(b []byte) ([]byte, error) {
	s := strings.TrimSpace(string(b))
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	if k, err := hex.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	if len(b) == 32 {
		return b, nil
	}
	return nil, errors.New("not a 32-byte key: give 32 bytes as base64 (openssl rand -base64 32), as 64 hex digits or raw")
}

// NewSealKey is the SealKey of 32 bytes.
func NewSealKey(key []byte) (*SealKey, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("a seal key has 32 bytes, not %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &SealKey{aead: aead}, nil
}

// Seal encrypts plain, bound to aad: nonce then ciphertext.
func (k *SealKey) Seal(plain, aad []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	_, _ = rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, plain, aad)
}

// Open decrypts what Seal made with the same aad.
func (k *SealKey) Open(sealed, aad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed key too short")
	}
	return k.aead.Open(nil, sealed[:n], sealed[n:], aad)
}

// Stored is the authority as kept in etcd (api.Keys.CARoots): the roots'
// certificates in clear, their keys sealed.
type Stored struct {
	Roots []StoredRoot `json:"roots"`
}

// StoredRoot is one root in etcd.
type StoredRoot struct {
	CertPEM string `json:"cert_pem"`
	// SealedKey is the root's PKCS#8 key sealed with AES-256-GCM under the
	// CA key file, bound to the certificate (its SHA-256 is the additional
	// data): a key cannot be moved to another certificate.
	SealedKey   []byte `json:"sealed_key"`
	SignsFromMs int64  `json:"signs_from_ms"`
}

func seal(r Root, k *SealKey) (StoredRoot, error) {
	der, err := x509.MarshalPKCS8PrivateKey(r.Key)
	if err != nil {
		return StoredRoot{}, err
	}
	return StoredRoot{CertPEM: string(EncodePEM(r.Cert)), SealedKey: k.Seal(der, fingerprint(r.Cert)), SignsFromMs: r.SignsFrom.UnixMilli()}, nil
}

// Decode reads a stored authority; with a seal key it opens the roots' keys
// too, else the authority only verifies.
func Decode(value []byte, k *SealKey) (*Authority, error) {
	var st Stored
	if err := json.Unmarshal(value, &st); err != nil {
		return nil, fmt.Errorf("stored CA: %w", err)
	}
	roots := make([]Root, 0, len(st.Roots))
	for i, sr := range st.Roots {
		block, _ := pem.Decode([]byte(sr.CertPEM))
		if block == nil {
			return nil, fmt.Errorf("stored CA: roots[%d]: no certificate", i)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("stored CA: roots[%d]: %w", i, err)
		}
		r := Root{Cert: cert, SignsFrom: time.UnixMilli(sr.SignsFromMs)}
		if k != nil {
			der, err := k.Open(sr.SealedKey, fingerprint(cert))
			if err != nil {
				return nil, fmt.Errorf("stored CA: roots[%d]: the CA key file does not open its key (another key file?): %w", i, err)
			}
			key, err := x509.ParsePKCS8PrivateKey(der)
			if err != nil {
				return nil, fmt.Errorf("stored CA: roots[%d]: %w", i, err)
			}
			ec, ok := key.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("stored CA: roots[%d]: key is %T, not ECDSA", i, key)
			}
			r.Key = ec
		}
		roots = append(roots, r)
	}
	return NewAuthority(roots)
}

func encode(roots []Root, k *SealKey) ([]byte, error) {
	var st Stored
	for _, r := range roots {
		sr, err := seal(r, k)
		if err != nil {
			return nil, err
		}
		st.Roots = append(st.Roots, sr)
	}
	return json.Marshal(st)
}

// LoadOrCreate loads the authority kept at key, or creates it with one new
// root of trustDomain when there is none: the first of several replicas
// creates it (an etcd transaction that succeeds only if the key is absent),
// the others load what it wrote. created tells which happened.
func LoadOrCreate(ctx context.Context, cli *clientv3.Client, key string, k *SealKey, trustDomain string) (a *Authority, created bool, err error) {
	for attempt := 0; attempt < 3; attempt++ {
		got, err := cli.Get(ctx, key)
		if err != nil {
			return nil, false, fmt.Errorf("CA: read %s: %w", key, err)
		}
		if len(got.Kvs) > 0 {
			a, err := Decode(got.Kvs[0].Value, k)
			if err != nil {
				return nil, false, err
			}
			if a.TrustDomain() != trustDomain {
				return nil, false, fmt.Errorf("CA: the authority in etcd is of trust domain %q, this replica is told %q (--trust-domain)", a.TrustDomain(), trustDomain)
			}
			return a, false, nil
		}
		root, err := NewRoot(trustDomain, time.Now())
		if err != nil {
			return nil, false, err
		}
		value, err := encode([]Root{root}, k)
		if err != nil {
			return nil, false, err
		}
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(value))).Commit()
		if err != nil {
			return nil, false, fmt.Errorf("CA: create %s: %w", key, err)
		}
		if resp.Succeeded {
			a, err := NewAuthority([]Root{root})
			return a, true, err
		}
		// Another replica created it meanwhile: load that one.
	}
	return nil, false, fmt.Errorf("CA: %s keeps changing", key)
}

// AddRoot adds a new root to the authority at key, which signs from
// signsFrom on: until then it is only in the trust bundle, so that every
// peer trusts it before the first certificate it signs reaches them. The
// old roots stay in the bundle (docs/security.md says when to remove one).
func AddRoot(ctx context.Context, cli *clientv3.Client, key string, k *SealKey, signsFrom time.Time) (*Authority, error) {
	got, err := cli.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if len(got.Kvs) == 0 {
		return nil, fmt.Errorf("CA: no authority at %s", key)
	}
	a, err := Decode(got.Kvs[0].Value, k)
	if err != nil {
		return nil, err
	}
	root, err := NewRoot(a.TrustDomain(), time.Now())
	if err != nil {
		return nil, err
	}
	root.SignsFrom = signsFrom
	roots := append(append([]Root(nil), a.Roots()...), root)
	value, err := encode(roots, k)
	if err != nil {
		return nil, err
	}
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", got.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, string(value))).Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("CA: %s changed meanwhile: try again", key)
	}
	return NewAuthority(roots)
}

// Current is the authority as etcd has it now: the etcdx.MirrorHandler of
// the CA's key. With a seal key it can sign; without, it only verifies.
type Current struct {
	seal *SealKey
	a    atomic.Pointer[Authority]
	// OnError is told of a stored authority that does not decode (nil: ignored).
	OnError func(error)
}

var _ etcdx.MirrorHandler = (*Current)(nil)

// NewCurrent follows the authority, opening its keys with k (may be nil);
// a is what is known so far (may be nil).
func NewCurrent(k *SealKey, a *Authority) *Current {
	c := &Current{seal: k}
	if a != nil {
		c.a.Store(a)
	}
	return c
}

// Authority is the authority known now, nil before etcd told of one.
func (c *Current) Authority() *Authority { return c.a.Load() }

// Reset takes the listing of the CA's key.
func (c *Current) Reset(kvs []etcdx.Event, _ int64) {
	for _, kv := range kvs {
		c.take(kv.Value)
	}
}

// Apply takes a change of the CA's key. A deleted authority is kept: the
// certificates it issued are still in use.
func (c *Current) Apply(events []etcdx.Event, _ int64) {
	for _, ev := range events {
		if !ev.Deleted {
			c.take(ev.Value)
		}
	}
}

func (c *Current) take(value []byte) {
	a, err := Decode(value, c.seal)
	if err != nil {
		if c.OnError != nil {
			c.OnError(err)
		}
		return
	}
	c.a.Store(a)
}
