package devplane

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
)

// countingHealth is a real gRPC server that counts its calls.
type countingHealth struct {
	healthpb.UnimplementedHealthServer
	calls atomic.Int64
}

func (h *countingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.calls.Add(1)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// workloadFiles asks the config-center for a workload certificate of the
// token's service, as a workload does, and writes it, its key and the
// trust bundle as files.
func workloadFiles(t *testing.T, a Addrs, token *http.Client) (cert, key, bundle string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(api.CertificateRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	resp, err := token.Post("http://"+a.ConfigCenter+"/v1/certificates", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var issued api.CertificateIssued
	if err := json.NewDecoder(resp.Body).Decode(&issued); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("certificate: %d %v", resp.StatusCode, err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(k)
	dir := t.TempDir()
	cert, key, bundle = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "bundle.pem")
	for f, b := range map[string][]byte{cert: []byte(issued.CertificatePEM), bundle: []byte(issued.BundlePEM),
		key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, bundle
}

// The whole loop of `sextant dev` to a gRPC client that holds no Sextant
// code: three real gRPC servers register, telemetry says one is five times
// slower, the calculator lowers its weight, and a grpc-go client on
// xds:///comment-svc (its bootstrap pointing at the dev plane's ADS port,
// over mTLS with a certificate the config-center issued) sends it a much
// smaller share of its calls.
func TestDevLoopReachesGRPCClientsOverXDS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- runDev(ctx, devArgs(t), &syncWriter{w: &logs}, func(a Addrs) { ready <- a }) }()
	var addrs Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("sextant dev exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("sextant dev not ready")
	}
	defer func() {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		cancel()
		<-done
	}()

	servers := make([]*countingHealth, 3)
	instances := make([]string, 3)
	comments := dataPlane(t, addrs, "comment-svc")
	for i := range servers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		servers[i], instances[i] = &countingHealth{}, ln.Addr().String()
		s := grpc.NewServer()
		healthpb.RegisterHealthServer(s, servers[i])
		go func() { _ = s.Serve(ln) }()
		defer s.Stop()
		body, _ := json.Marshal(map[string]any{"service": "comment-svc", "instance": instances[i], "addr": instances[i], "ttl_s": 60})
		resp, err := comments.Post("http://"+addrs.MeshCore+"/v1/instances", "application/json", bytes.NewReader(body))
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("register %s: %v %v", instances[i], resp, err)
		}
		resp.Body.Close()
	}
	slow := instances[2]
	testenv.WaitMetric(t, addrs.Mixer, "sextant_mixer_shards", 1)

	cert, key, bundle := workloadFiles(t, addrs, dataPlane(t, addrs, "front"))
	builder, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(fmt.Sprintf(`{
 "xds_servers": [{"server_uri": %q, "server_features": ["xds_v3"],
   "channel_creds": [{"type": "tls", "config": {"ca_certificate_file": %q, "certificate_file": %q, "private_key_file": %q}}]}],
 "node": {"id": "front-1"}}`, addrs.MeshCoreXDS, bundle, cert, key)))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///comment-svc", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(builder.(resolver.Builder)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)

	defer reportEvery(t, addrs, instances, slow)()

	var shares [3]float64
	testenv.Eventually(t, 90*time.Second, func() error {
		var before [3]int64
		for i, s := range servers {
			before[i] = s.calls.Load()
		}
		const n = 2000
		for range n {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := client.Check(cctx, &healthpb.HealthCheckRequest{})
			ccancel()
			if err != nil {
				return err
			}
		}
		for i, s := range servers {
			shares[i] = float64(s.calls.Load()-before[i]) / n
		}
		if shares[2] > 0.5*shares[0] || shares[2] > 0.5*shares[1] {
			return fmt.Errorf("shares %.3f: the slow instance should get well under the others'", shares)
		}
		return nil
	})
	t.Logf("shares of the gRPC client's calls: %.3f (the last one reported five times slower)", shares)
}
