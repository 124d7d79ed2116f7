// Package etcdx holds what every Sextant service needs from etcd: a client,
// a health probe, and Mirror, an in-memory copy of one key prefix that follows
// etcd's watch and survives etcd being away. It is client code only: the
// embedded server of `sextant dev` and the tests is internal/etcdembed.
package etcdx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sextant-mesh/sextant/api"
)

// Config is how a service reaches etcd: where, under which prefix, and with
// which credentials. Every service holds one and registers its flags with
// RegisterFlags, so that the flags are the same everywhere
// (docs/configuration.md).
type Config struct {
	// Endpoints is a comma-separated list of host:port (or https://host:port).
	Endpoints string
	// Prefix is the prefix of every Sextant key.
	Prefix string
	// CAFile verifies etcd's serving certificate; CertFile and KeyFile are
	// this client's certificate, for an etcd that requires one
	// (--client-cert-auth). Any of the three turns TLS on. The files are read
	// again on each new connection, so rotated certificates are picked up.
	CAFile, CertFile, KeyFile string
	// Username and the password (Password, or the first line of
	// PasswordFile) authenticate to etcd's own auth (`etcdctl auth enable`).
	Username, Password, PasswordFile string
}

// DefaultConfig is `sextant dev`'s etcd, plain, under the default prefix.
func DefaultConfig() Config {
	return Config{Endpoints: "127.0.0.1:7790", Prefix: api.DefaultPrefix}
}

// RegisterFlags binds c's fields to the --etcd-* flags, with c's values as
// defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Endpoints, "etcd-endpoints", c.Endpoints, "comma-separated etcd endpoints (host:port; https://host:port or any --etcd-*-file flag for TLS)")
	fs.StringVar(&c.Prefix, "etcd-prefix", c.Prefix, "prefix of every Sextant key in etcd")
	fs.StringVar(&c.CAFile, "etcd-ca-file", c.CAFile, "PEM file of the CA that signed etcd's serving certificate (turns TLS on)")
	fs.StringVar(&c.CertFile, "etcd-cert-file", c.CertFile, "PEM client certificate for an etcd that requires one (with --etcd-key-file; turns TLS on)")
	fs.StringVar(&c.KeyFile, "etcd-key-file", c.KeyFile, "PEM key of --etcd-cert-file")
	fs.StringVar(&c.Username, "etcd-username", c.Username, "etcd user, for an etcd with auth enabled (with --etcd-password-file or SEXTANT_ETCD_PASSWORD)")
	fs.StringVar(&c.Password, "etcd-password", c.Password, "password of --etcd-username (prefer SEXTANT_ETCD_PASSWORD or --etcd-password-file: a flag shows in the process list)")
	fs.StringVar(&c.PasswordFile, "etcd-password-file", c.PasswordFile, "file whose first line is the password of --etcd-username")
}

// TLS tells whether c connects over TLS.
func (c Config) TLS() bool {
	return c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
}

// clientConfig checks c and reads its files into the client's configuration.
func (c Config) clientConfig() (clientv3.Config, error) {
	endpoints := SplitEndpoints(c.Endpoints)
	if len(endpoints) == 0 {
		return clientv3.Config{}, errors.New("--etcd-endpoints is empty")
	}
	cc := clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          3 * time.Second,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// etcd's client logs every reconnect attempt at warn level; the
		// services report etcd's state on /readyz and in their own logs.
		Logger: zap.NewNop(),
	}
	if c.TLS() {
		for _, ep := range endpoints {
			if strings.HasPrefix(ep, "http://") {
				return cc, fmt.Errorf("etcd endpoint %s is plain HTTP but TLS files are given: name it https:// or host:port", ep)
			}
		}
		if (c.CertFile == "") != (c.KeyFile == "") {
			return cc, fmt.Errorf("--etcd-cert-file (%q) and --etcd-key-file (%q) go together", c.CertFile, c.KeyFile)
		}
		for _, f := range []struct{ flag, path string }{{"etcd-ca-file", c.CAFile}, {"etcd-cert-file", c.CertFile}, {"etcd-key-file", c.KeyFile}} {
			if f.path == "" {
				continue
			}
			b, err := os.ReadFile(f.path)
			if err != nil {
				return cc, fmt.Errorf("--%s: %w", f.flag, err)
			}
			if f.path == c.CAFile && !x509.NewCertPool().AppendCertsFromPEM(b) {
				return cc, fmt.Errorf("--etcd-ca-file %s holds no PEM certificate", f.path)
			}
		}
		info := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile, Logger: zap.NewNop()}
		t, err := info.ClientConfig()
		if err != nil {
			return cc, fmt.Errorf("etcd TLS files (--etcd-ca-file %q, --etcd-cert-file %q, --etcd-key-file %q): %w", c.CAFile, c.CertFile, c.KeyFile, err)
		}
		cc.TLS = t
	}
	password, err := c.password()
	if err != nil {
		return cc, err
	}
	switch {
	case c.Username == "" && password != "":
		return cc, errors.New("an etcd password is given without --etcd-username")
	case c.Username != "" && password == "":
		return cc, fmt.Errorf("--etcd-username %q needs a password: --etcd-password-file or SEXTANT_ETCD_PASSWORD", c.Username)
	}
	cc.Username, cc.Password = c.Username, password
	return cc, nil
}

// password is Password, or the first line of PasswordFile.
func (c Config) password() (string, error) {
	if c.PasswordFile == "" {
		return c.Password, nil
	}
	if c.Password != "" {
		return "", errors.New("--etcd-password and --etcd-password-file are both given: keep one")
	}
	b, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("--etcd-password-file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line = strings.TrimSuffix(line, "\r"); line == "" {
		return "", fmt.Errorf("--etcd-password-file %s: the first line is empty", c.PasswordFile)
	}
	return line, nil
}

// NewClient connects to etcd as c says. It does not wait for etcd: a service
// starts, and degrades, while etcd is away. It fails at once on a setting it
// cannot use (a file it cannot read, a certificate without its key), when an
// etcd that answers refuses the TLS handshake (an unknown CA, a missing or
// refused client certificate), and when etcd refuses the user or password.
// With a username it must authenticate, so it waits for etcd (up to its dial
// timeout) and fails when etcd is away.
func NewClient(c Config) (*clientv3.Client, error) {
	cc, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	if t := cc.TLS; t != nil || strings.HasPrefix(cc.Endpoints[0], "https://") {
		if t == nil {
			t = &tls.Config{} // https:// without files: the system's CAs, as the client does
		}
		if err := probeTLS(cc.Endpoints, t); err != nil {
			return nil, err
		}
	}
	cli, err := clientv3.New(cc)
	switch {
	case err == nil:
		return cli, nil
	case cc.Username != "" && unreachable(err):
		return nil, fmt.Errorf("etcd at %s: cannot authenticate user %q while etcd is unreachable: %w", c.Endpoints, c.Username, err)
	case cc.Username != "":
		return nil, fmt.Errorf("etcd at %s, user %q: %w", c.Endpoints, c.Username, err)
	default:
		return nil, fmt.Errorf("etcd at %s: %w", c.Endpoints, err)
	}
}

func unreachable(err error) bool {
	code := status.Code(err)
	return errors.Is(err, context.DeadlineExceeded) || code == codes.DeadlineExceeded || code == codes.Unavailable
}

// probeTLS shakes hands with the first endpoint that accepts a connection,
// so that a CA or a client certificate etcd refuses fails the start with
// etcd's reason, instead of a service that runs and never reaches etcd. An
// endpoint that accepts no connection is etcd being away: no error.
func probeTLS(endpoints []string, cfg *tls.Config) error {
	for _, ep := range endpoints {
		host := ep
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			host = u.Host
		}
		conn, err := net.DialTimeout("tcp", host, time.Second)
		if err != nil {
			continue
		}
		defer conn.Close()
		c := cfg.Clone()
		if c.ServerName == "" {
			c.ServerName, _, _ = net.SplitHostPort(host)
		}
		tc := tls.Client(conn, c)
		_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("etcd at %s: TLS handshake: %w", ep, err)
		}
		// With TLS 1.3 the server judges the client's certificate after
		// the handshake and says so in an alert: wait a moment for one.
		// etcd sends nothing else before the client speaks.
		_ = tc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		var b [1]byte
		if _, err := tc.Read(b[:]); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			return fmt.Errorf("etcd at %s refused this client's certificate: %w", ep, err)
		}
		return nil
	}
	return nil
}

// SplitEndpoints turns "a:1, b:2" into ["a:1", "b:2"].
func SplitEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
