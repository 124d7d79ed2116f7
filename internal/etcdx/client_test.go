package etcdx_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/testenv"
)

// A setting the client cannot use fails NewClient at once, naming the flag.
func TestConfigErrors(t *testing.T) {
	ca := testenv.NewCA(t)
	cert, key := ca.Issue(t, "client")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	ep := "127.0.0.1:1"
	for _, tc := range []struct {
		name string
		cfg  etcdx.Config
		want string
	}{
		{"no endpoints", etcdx.Config{Endpoints: " , "}, "--etcd-endpoints is empty"},
		{"cert without key", etcdx.Config{Endpoints: ep, CertFile: cert}, "--etcd-cert-file"},
		{"key without cert", etcdx.Config{Endpoints: ep, KeyFile: key}, "go together"},
		{"unreadable CA", etcdx.Config{Endpoints: ep, CAFile: missing}, "--etcd-ca-file: open " + missing},
		{"unreadable cert", etcdx.Config{Endpoints: ep, CertFile: missing, KeyFile: key}, "--etcd-cert-file: open " + missing},
		{"unreadable key", etcdx.Config{Endpoints: ep, CertFile: cert, KeyFile: missing}, "--etcd-key-file: open " + missing},
		{"CA not PEM", etcdx.Config{Endpoints: ep, CAFile: garbage}, "holds no PEM certificate"},
		{"key of another cert", etcdx.Config{Endpoints: ep, CertFile: cert, KeyFile: garbage}, "etcd TLS files"},
		{"plain endpoint with TLS", etcdx.Config{Endpoints: "http://" + ep, CAFile: ca.CertFile}, "plain HTTP but TLS files are given"},
		{"user without password", etcdx.Config{Endpoints: ep, Username: "u"}, `--etcd-username "u" needs a password`},
		{"password without user", etcdx.Config{Endpoints: ep, Password: "p"}, "without --etcd-username"},
		{"password twice", etcdx.Config{Endpoints: ep, Username: "u", Password: "p", PasswordFile: empty}, "both given"},
		{"unreadable password file", etcdx.Config{Endpoints: ep, Username: "u", PasswordFile: missing}, "--etcd-password-file: open " + missing},
		{"empty password file", etcdx.Config{Endpoints: ep, Username: "u", PasswordFile: empty}, "first line is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := etcdx.NewClient(tc.cfg)
			if err == nil {
				cli.Close()
				t.Fatalf("no error; want one with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// roundTrip writes and reads back a key under prefix.
func roundTrip(t *testing.T, cli *clientv3.Client, key string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, key, "v"); err != nil {
		return err
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("read back %v", resp.Kvs)
	}
	return nil
}

// Against an etcd that requires client certificates, the client with the
// CA, a certificate and its key works; without the certificate, with a
// certificate of another CA, or trusting another CA, NewClient fails with
// the TLS reason.
func TestClientCertificates(t *testing.T) {
	ca := testenv.NewCA(t)
	etcd := testenv.StartEtcdTLS(t, ca)
	cert, key := ca.Issue(t, "mesh-core")
	good := etcdx.Config{Endpoints: etcd.Endpoint, CAFile: ca.CertFile, CertFile: cert, KeyFile: key}
	cli, err := etcdx.NewClient(good)
	if err != nil {
		t.Fatalf("right CA, certificate and key: %v", err)
	}
	defer cli.Close()
	if err := roundTrip(t, cli, "/tls/k"); err != nil {
		t.Fatalf("right CA, certificate and key: %v", err)
	}

	other := testenv.NewCA(t)
	otherCert, otherKey := other.Issue(t, "mesh-core")
	hostPort := strings.TrimPrefix(etcd.Endpoint, "https://")
	for _, tc := range []struct {
		name string
		cfg  etcdx.Config
		want string
	}{
		{"no client certificate", etcdx.Config{Endpoints: etcd.Endpoint, CAFile: ca.CertFile}, "refused this client's certificate"},
		{"certificate of another CA", etcdx.Config{Endpoints: etcd.Endpoint, CAFile: ca.CertFile, CertFile: otherCert, KeyFile: otherKey}, "refused this client's certificate"},
		{"another CA trusted", etcdx.Config{Endpoints: etcd.Endpoint, CAFile: other.CertFile, CertFile: cert, KeyFile: key}, "certificate signed by unknown authority"},
		{"host:port without scheme", etcdx.Config{Endpoints: hostPort, CAFile: ca.CertFile}, "refused this client's certificate"},
		{"https without any file", etcdx.Config{Endpoints: etcd.Endpoint}, "TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := etcdx.NewClient(tc.cfg)
			if err == nil {
				cli.Close()
				t.Fatalf("connected; want an error with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}

	// host:port with the right files is TLS too.
	good.Endpoints = hostPort
	cli2, err := etcdx.NewClient(good)
	if err != nil {
		t.Fatalf("host:port: %v", err)
	}
	defer cli2.Close()
	if err := roundTrip(t, cli2, "/tls/k2"); err != nil {
		t.Fatalf("host:port: %v", err)
	}

	// etcd away: the client is made (a service starts, and degrades).
	etcd.Stop()
	cli3, err := etcdx.NewClient(good)
	if err != nil {
		t.Fatalf("etcd away: %v", err)
	}
	cli3.Close()
}

// Against an etcd with auth enabled, the right user and password (from a
// file) work within the user's prefix; a wrong password fails NewClient with
// etcd's reason.
func TestUserAndPassword(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	etcd.EnableAuth(t, "sextant", "s3cret", "/mine/")
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli, err := etcdx.NewClient(etcdx.Config{Endpoints: etcd.Endpoint, Username: "sextant", PasswordFile: file})
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	defer cli.Close()
	if err := roundTrip(t, cli, "/mine/k"); err != nil {
		t.Fatalf("within the role's prefix: %v", err)
	}
	if err := roundTrip(t, cli, "/theirs/k"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("outside the role's prefix: %v; want permission denied", err)
	}

	_, err = etcdx.NewClient(etcdx.Config{Endpoints: etcd.Endpoint, Username: "sextant", Password: "wrong"})
	if err == nil || !strings.Contains(err.Error(), `user "sextant"`) || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
	_, err = etcdx.NewClient(etcdx.Config{Endpoints: etcd.Endpoint})
	if err != nil {
		t.Fatalf("no user: the client is made (its calls are refused): %v", err)
	}

	// A user cannot authenticate while etcd is away: NewClient says so.
	etcd.Stop()
	_, err = etcdx.NewClient(etcdx.Config{Endpoints: etcd.Endpoint, Username: "sextant", PasswordFile: file})
	if err == nil || !strings.Contains(err.Error(), "while etcd is unreachable") {
		t.Fatalf("etcd away: %v", err)
	}
}
