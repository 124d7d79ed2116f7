package xds_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/pki"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/mesh-core/xds"
)

// tlsPlane is mesh-core holding Sextant's CA, as in `sextant dev`: ADS over
// mTLS, HTTP plaintext.
type tlsPlane struct {
	etcd      *testenv.Etcd
	prefix    string
	mc        *core.MeshCore
	authority *pki.Authority
	dir       string
}

func startTLSPlane(t *testing.T) *tlsPlane {
	t.Helper()
	p := &tlsPlane{etcd: testenv.StartEtcd(t), prefix: testenv.Prefix(t), dir: t.TempDir()}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(p.dir, "ca-key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.mc = coretest.Start(t, p.etcd, p.prefix, func(c *core.Config) {
		c.TLS.CAKeyFile, c.TLS.PlainHTTP, c.XDSAddr = keyFile, true, "127.0.0.1:0"
	})
	seal, err := pki.ReadSealKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	p.authority, _, err = pki.LoadOrCreate(context.Background(), p.etcd.Client(t), api.Keys{Prefix: p.prefix}.CARoot(), seal, "sextant.local")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// workload writes service's workload certificate, its key and the trust
// bundle as files, as a workload holds them (sdk.Identity), and returns
// their paths.
func (p *tlsPlane) workload(t *testing.T, service string) (cert, key, ca string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := p.authority.Issue(&k.PublicKey, pki.Leaf{ID: pki.ID{Service: service}, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(k)
	cert, key, ca = filepath.Join(p.dir, service+".crt"), filepath.Join(p.dir, service+".key"), filepath.Join(p.dir, "bundle.pem")
	for f, b := range map[string][]byte{cert: pki.EncodePEM(leaf), key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), ca: p.authority.BundlePEM()} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

func (p *tlsPlane) status(t *testing.T) []xds.NodeStatus {
	t.Helper()
	resp, err := testenv.HTTP.Get("http://" + p.mc.Addr() + "/v1/xds/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: %d %s", resp.StatusCode, body)
	}
	var a struct{ Nodes []xds.NodeStatus }
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	return a.Nodes
}

// rawADS opens an ADS stream over TLS with cfg.
func rawADS(t *testing.T, addr string, cfg *tls.Config) (discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(testenv.Context(t))
}

func mustADS(t *testing.T, addr string, cfg *tls.Config) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	s, err := rawADS(t, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A gRPC client with its workload certificate in the bootstrap
// (channel_creds tls) gets its endpoints over mTLS; its service comes from
// the certificate. Without a certificate, or declaring another service, a
// node is refused. A NACK is shown in the status and counted.
func TestADSOverMTLS(t *testing.T) {
	p := startTLSPlane(t)
	b := startBackend(t)
	(&plane{mc: p.mc}).register(t, b, "z1")

	cert, key, ca := p.workload(t, "caller")
	c := dial(t, fmt.Sprintf(`{"xds_servers": [{"server_uri": %q, "server_features": ["xds_v3"],
  "channel_creds": [{"type": "tls", "config": {"ca_certificate_file": %q, "certificate_file": %q, "private_key_file": %q}}]}],
 "node": {"id": "caller-1"}}`, p.mc.XDSAddr(), ca, cert, key))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("call over xDS with mTLS: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, n := range p.status(t) {
			if n.Node != "caller-1" {
				continue
			}
			if n.Service != "caller" || !strings.HasSuffix(n.Identity, "/sa/caller") {
				return fmt.Errorf("node as %q (%s), want caller", n.Service, n.Identity)
			}
			for typ, ts := range n.Types {
				if ts.State != xds.Synced {
					return fmt.Errorf("%s %s", typ, ts.State)
				}
			}
			return nil
		}
		return fmt.Errorf("caller-1 not in the status: %+v", p.status(t))
	})

	bundle := x509.NewCertPool()
	bundle.AppendCertsFromPEM(p.authority.BundlePEM())
	request := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{service}}

	// No client certificate: the handshake fails.
	if anon, err := rawADS(t, p.mc.XDSAddr(), &tls.Config{RootCAs: bundle, ServerName: "127.0.0.1"}); err == nil {
		_ = anon.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "anon"}, TypeUrl: request.TypeUrl, ResourceNames: request.ResourceNames})
		if _, err := anon.Recv(); err == nil {
			t.Fatal("an ADS stream without a client certificate was served")
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := testenv.Metric(t, p.mc.Addr(), `sextant_meshcore_xds_refused_total{reason="no_certificate"}`); n < 1 {
			return fmt.Errorf("no_certificate refusals: %v", n)
		}
		return nil
	})

	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	withCert := &tls.Config{RootCAs: bundle, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}}
	// A node declaring a service other than its certificate's is refused.
	liar := mustADS(t, p.mc.XDSAddr(), withCert)
	_ = liar.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "liar", Cluster: "someone-else"}, TypeUrl: request.TypeUrl, ResourceNames: request.ResourceNames})
	if _, err := liar.Recv(); err == nil || !strings.Contains(err.Error(), "not the service of the client certificate") {
		t.Fatalf("a node declaring another service: %v", err)
	}
	if n := testenv.Metric(t, p.mc.Addr(), `sextant_meshcore_xds_refused_total{reason="wrong_caller"}`); n != 1 {
		t.Errorf("wrong_caller refusals: %v, want 1", n)
	}

	// A NACK: logged, counted, shown.
	nacker := mustADS(t, p.mc.XDSAddr(), withCert)
	if err := nacker.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "nacker"}, TypeUrl: request.TypeUrl, ResourceNames: request.ResourceNames}); err != nil {
		t.Fatal(err)
	}
	resp, err := nacker.Recv()
	if err != nil {
		t.Fatal(err)
	}
	before := testenv.Metric(t, p.mc.Addr(), `sextant_meshcore_xds_nacks_total{type="eds"}`)
	if err := nacker.Send(&discoveryv3.DiscoveryRequest{TypeUrl: request.TypeUrl, ResourceNames: request.ResourceNames,
		ResponseNonce: resp.Nonce, ErrorDetail: &status.Status{Code: 3, Message: "test rejects it"}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, n := range p.status(t) {
			if n.Node == "nacker" {
				if eds := n.Types["eds"]; eds.State != xds.Stale || eds.NackError != "test rejects it" || eds.NackVersion != resp.VersionInfo {
					return fmt.Errorf("nacker's eds: %+v", eds)
				}
				if lds := n.Types["lds"]; lds.State != xds.NotSent {
					return fmt.Errorf("nacker's lds: %+v", lds)
				}
				return nil
			}
		}
		return fmt.Errorf("nacker not in the status")
	})
	if after := testenv.Metric(t, p.mc.Addr(), `sextant_meshcore_xds_nacks_total{type="eds"}`); after != before+1 {
		t.Errorf("eds NACKs counted %v -> %v", before, after)
	}

	// The status needs a credential like mesh-core's other APIs.
	resp2, err := http.Get("http://" + p.mc.Addr() + "/v1/xds/status")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusUnauthorized {
		t.Errorf("status without a credential: %d", resp2.StatusCode)
	}
}
