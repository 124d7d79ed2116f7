// Package etcdembed runs an etcd server inside the process, for `sextant dev`
// and the tests. It is a package of its own so that only they link etcd's
// server (raft, bbolt, its gRPC gateway): the services are etcd clients only
// (internal/etcdx), and tests/layers checks that their binaries stay so.
package etcdembed

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Server is an etcd server running inside this process.
type Server struct {
	etcd      *embed.Etcd
	ClientURL string
}

// Option changes how Start runs the server.
type Option func(*embed.Config)

// ClientTLS serves clients over TLS only, with the server certificate in
// certFile and its key in keyFile. With caFile, a client must present a
// certificate that CA signed (etcd's --client-cert-auth).
func ClientTLS(certFile, keyFile, caFile string) Option {
	return func(cfg *embed.Config) {
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile, ClientCertAuth: caFile != ""}
	}
}

// Start starts a single-member etcd with its data in dir, serving
// clients on clientAddr and peers on peerAddr (host:port each), and waits until
// it is ready. It serves plain HTTP unless an option says otherwise.
func Start(dir, clientAddr, peerAddr string, opts ...Option) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = "sextant-dev"
	cfg.Dir = dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(quietLogger())
	for _, o := range opts {
		o(cfg)
	}
	scheme := "http"
	if !cfg.ClientTLSInfo.Empty() {
		scheme = "https"
	}
	clientURL := url.URL{Scheme: scheme, Host: clientAddr}
	peerURL := url.URL{Scheme: "http", Host: peerAddr}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd on %s: %w", clientAddr, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd on %s not ready after 30s", clientAddr)
	}
	return &Server{etcd: e, ClientURL: clientURL.String()}, nil
}

// quietLogger logs etcd's errors to stderr, except the ones every Close
// produces about its own listeners closing.
func quietLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zapcore.ErrorLevel)
	return zap.New(closingFilter{core})
}

type closingFilter struct{ zapcore.Core }

func (f closingFilter) With(fields []zapcore.Field) zapcore.Core {
	return closingFilter{f.Core.With(fields)}
}

func (f closingFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Message == "setting up serving from embedded etcd failed." {
		return ce
	}
	return f.Core.Check(e, ce)
}

// Close stops the server.
func (e *Server) Close() { e.etcd.Close() }

// StartMember starts name, one member of the plain-HTTP cluster
// initialCluster ("name=http://host:port,..."), with its data in dir,
// serving clients on clientAddr and peers on peerAddr. A member whose dir
// holds data joins the cluster it was part of. It does not wait until the
// member is ready: that takes a quorum of its peers.
func StartMember(name, dir, clientAddr, peerAddr, initialCluster string) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = name, dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(quietLogger())
	clientURL := url.URL{Scheme: "http", Host: clientAddr}
	peerURL := url.URL{Scheme: "http", Host: peerAddr}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = initialCluster
	cfg.InitialClusterToken = "sextant"
	if _, err := os.Stat(filepath.Join(dir, "member")); err == nil {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd member %s on %s: %w", name, clientAddr, err)
	}
	return &Server{etcd: e, ClientURL: clientURL.String()}, nil
}

// Err reports the server's fatal errors.
func (e *Server) Err() <-chan error { return e.etcd.Err() }
