package core_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// newMeshCore is New's error for a mesh-core on free ports over etcd under
// prefix with tweak applied (one that starts stops when the test ends).
func newMeshCore(t *testing.T, etcd *testenv.Etcd, prefix string, tweak func(*core.Config)) error {
	cfg := core.DefaultConfig()
	cfg.HTTPAddr, cfg.KitexAddr, cfg.PollAddr = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.Etcd = etcd.Config(prefix)
	tweak(&cfg)
	mc, err := core.New(cfg, logx.Discard())
	if err == nil {
		err = mc.Start()
		testenv.StopAtEnd(t, "mesh-core", mc)
	}
	return err
}

// registersAndDiscovers registers an instance and finds it by discovery:
// mesh-core reads and writes etcd.
func registersAndDiscovers(t *testing.T, mc *core.MeshCore) {
	t.Helper()
	register(t, mc, "comment-svc", "10.0.0.1:9000", 30)
	waitFor(t, mc, "comment-svc", func(a answer) error {
		if len(a.Instances) != 1 || a.Stale {
			return fmt.Errorf("%d instances, stale %v", len(a.Instances), a.Stale)
		}
		return nil
	})
	if r := call(t, "GET", "http://"+mc.Addr()+"/readyz", nil); r.status != http.StatusOK {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
}

// Against an etcd that serves TLS only and requires client certificates,
// mesh-core with the CA, a certificate and its key works; without the
// certificate, with one of another CA, or trusting another CA, it does not
// start, and says why.
func TestEtcdOverTLSWithClientCertificates(t *testing.T) {
	ca := testenv.NewCA(t)
	etcd := testenv.StartEtcdTLS(t, ca)
	prefix := testenv.Prefix(t)
	cert, key := ca.Issue(t, "mesh-core")
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) {
		c.Etcd.CAFile, c.Etcd.CertFile, c.Etcd.KeyFile = ca.CertFile, cert, key
	})
	registersAndDiscovers(t, mc)

	other := testenv.NewCA(t)
	otherCert, otherKey := other.Issue(t, "mesh-core")
	for _, tc := range []struct {
		name              string
		caFile, cert, key string
		want              string
	}{
		{"no client certificate", ca.CertFile, "", "", "certificate required"},
		{"certificate of another CA", ca.CertFile, otherCert, otherKey, "unknown certificate authority"},
		{"another CA trusted", other.CertFile, cert, key, "certificate signed by unknown authority"},
		{"no TLS files", "", "", "", "TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := newMeshCore(t, etcd, prefix, func(c *core.Config) {
				c.Etcd.CAFile, c.Etcd.CertFile, c.Etcd.KeyFile = tc.caFile, tc.cert, tc.key
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), etcd.Endpoint) {
				t.Fatalf("mesh-core started or said %v; want an error naming %s and %q", err, etcd.Endpoint, tc.want)
			}
		})
	}
}

// Against an etcd with auth enabled, mesh-core as a user whose role grants
// the Sextant prefix works (the password from a file); with a wrong password
// it does not start, and says why.
func TestEtcdWithUserAndPassword(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	etcd.EnableAuth(t, "mesh-core", "s3cret", prefix)
	file := filepath.Join(t.TempDir(), "etcd-password")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	asUser := func(password, passwordFile string) func(*core.Config) {
		return func(c *core.Config) {
			c.Etcd.Username, c.Etcd.Password, c.Etcd.PasswordFile = "mesh-core", password, passwordFile
			// The role grants the Sextant prefix only.
			c.KitexRegistryPrefix = ""
		}
	}
	mc := coretest.Start(t, etcd, prefix, asUser("", file))
	registersAndDiscovers(t, mc)

	err := newMeshCore(t, etcd, prefix, asUser("wrong", ""))
	if err == nil || !strings.Contains(err.Error(), `user "mesh-core"`) || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
}
