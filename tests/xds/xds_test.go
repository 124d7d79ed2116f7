// Package xds_test runs real grpc-go clients with `xds:///` targets against
// mesh-core's ADS port: the weights, ejections, deregistrations, overload
// drops and config-center timeouts Sextant decides reach a gRPC process
// that holds no Sextant code.
package xds_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

const service = "echo"

// backend is one real gRPC server: the health service's Check, counted,
// sleeping as long as the call's x-delay-ms asks.
type backend struct {
	healthpb.UnimplementedHealthServer
	addr  string
	calls atomic.Int64
	srv   *grpc.Server
}

// firstAttempts are the x-call-id values seen by any backend: a call that
// carries one fails with UNAVAILABLE the first time, as a flaky server's.
var firstAttempts sync.Map

func (b *backend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	b.calls.Add(1)
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("x-call-id")) > 0 {
		if _, seen := firstAttempts.LoadOrStore(md.Get("x-call-id")[0], true); !seen {
			return nil, status.Error(codes.Unavailable, "flaky: first attempt fails")
		}
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("x-delay-ms")) > 0 {
		ms, _ := strconv.Atoi(md.Get("x-delay-ms")[0])
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String(), srv: grpc.NewServer()}
	healthpb.RegisterHealthServer(b.srv, b)
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(b.srv.Stop)
	return b
}

// plane is etcd, mesh-core with its ADS port, and the config-center.
type plane struct {
	etcd   *testenv.Etcd
	prefix string
	mc     *core.MeshCore
	cc     string
	pub    meshcoresvc.Client
	policy int64
}

func startPlane(t *testing.T) *plane {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) { c.XDSAddr = "127.0.0.1:0" })
	cc := centertest.Start(t, etcd, prefix, nil)
	return &plane{etcd: etcd, prefix: prefix, mc: mc, cc: cc.Addr(), pub: startPlanePublisher(t, mc), policy: time.Now().UnixMilli()}
}

// startPlanePublisher is a client of mesh-core's PublishPolicy, as the
// calculator's.
func startPlanePublisher(t *testing.T, mc *core.MeshCore) meshcoresvc.Client {
	t.Helper()
	pub, err := meshcoresvc.NewClient("mesh-core", client.WithHostPorts(mc.KitexAddr()), client.WithRPCTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// do calls url as an operator; headers are name, value pairs. It returns
// the answer's headers.
func (p *plane) do(t *testing.T, method, url string, body any, want int, headers ...string) http.Header {
	t.Helper()
	var r *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	} else {
		r = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, r)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := testenv.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b.String())
	}
	return resp.Header
}

func (p *plane) register(t *testing.T, b *backend, zone string) {
	p.do(t, "POST", "http://"+p.mc.Addr()+"/v1/instances", map[string]any{
		"service": service, "instance": b.addr, "addr": b.addr, "zone": zone, "static_weight": 100, "ttl_s": 60,
	}, http.StatusCreated)
}

// publish stores a policy as the calculator does (MeshCore.PublishPolicy).
func (p *plane) publish(t *testing.T, weights map[string]int32, overload *meshcore.Overload) {
	t.Helper()
	p.policy++
	if overload == nil {
		overload = &meshcore.Overload{State: "normal"}
	}
	pol := &meshcore.Policy{Service: service, Version: p.policy, ComputedAtMs: time.Now().UnixMilli(), CalculatorId: "test", Overload: overload}
	for id, w := range weights {
		pol.Weights = append(pol.Weights, &meshcore.InstanceWeight{Instance: id, Weight: w, Ejected: w == 0, Reason: "test"})
	}
	if _, err := p.pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: pol}); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// dial is a gRPC client of xds:///echo whose bootstrap points at mesh-core.
func dial(t *testing.T, bootstrap string) healthpb.HealthClient {
	t.Helper()
	builder, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	conn, err := grpc.NewClient("xds:///"+service, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(builder.(resolver.Builder)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func plainBootstrap(xdsAddr, node, caller string) string {
	return fmt.Sprintf(`{"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
 "node": {"id": %q, "cluster": %q}}`, xdsAddr, node, caller)
}

// spread makes n calls and returns each backend's share, and how many
// failed with each code.
func spread(t *testing.T, c healthpb.HealthClient, backends []*backend, n int) ([]float64, map[codes.Code]int) {
	t.Helper()
	before := make([]int64, len(backends))
	for i, b := range backends {
		before[i] = b.calls.Load()
	}
	failed := map[codes.Code]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil {
			if failed[status.Code(err)] == 0 {
				t.Logf("first %s: %v", status.Code(err), err)
			}
			failed[status.Code(err)]++
		}
	}
	shares := make([]float64, len(backends))
	for i, b := range backends {
		shares[i] = float64(b.calls.Load()-before[i]) / float64(n)
	}
	return shares, failed
}

// near says whether got is within tol of want, every element.
func near(got, want []float64, tol float64) error {
	for i := range want {
		if math.Abs(got[i]-want[i]) > tol {
			return fmt.Errorf("shares %.3f, want %.3f (±%.2f)", got, want, tol)
		}
	}
	return nil
}

// TestGRPCClientFollowsSextant: three real gRPC servers registered in
// mesh-core, one real gRPC client on xds:///echo. Calls split by the
// policy's weights, move when they change, leave an ejected and a
// deregistered instance, drop an overload decision's share with
// UNAVAILABLE, and time out as the config-center's rpc_timeout says.
func TestGRPCClientFollowsSextant(t *testing.T) {
	p := startPlane(t)
	bs := []*backend{startBackend(t), startBackend(t), startBackend(t)}
	p.register(t, bs[0], "z1")
	p.register(t, bs[1], "z1")
	p.register(t, bs[2], "z2")
	p.publish(t, map[string]int32{bs[0].addr: 100, bs[1].addr: 200, bs[2].addr: 300}, nil)

	c := dial(t, plainBootstrap(p.mc.XDSAddr(), "client-1", "caller"))
	const n = 3000
	// Each check runs n calls; it repeats until the client has the state
	// (the shares are only accepted when they match).
	expect := func(what string, want []float64) {
		t.Helper()
		var last []float64
		testenv.Eventually(t, 60*time.Second, func() error {
			got, failed := spread(t, c, bs, n)
			last = got
			if len(failed) > 0 {
				return fmt.Errorf("%s: failures %v", what, failed)
			}
			return near(got, want, 0.04)
		})
		t.Logf("%s: shares %.3f over %d calls (want %.3f)", what, last, n, want)
	}
	expect("weights 100/200/300", []float64{1.0 / 6, 2.0 / 6, 3.0 / 6})

	p.publish(t, map[string]int32{bs[0].addr: 300, bs[1].addr: 200, bs[2].addr: 100}, nil)
	expect("weights 300/200/100", []float64{3.0 / 6, 2.0 / 6, 1.0 / 6})

	p.publish(t, map[string]int32{bs[0].addr: 300, bs[1].addr: 0, bs[2].addr: 100}, nil)
	expect("instance 2 ejected", []float64{3.0 / 4, 0, 1.0 / 4})

	p.do(t, "DELETE", fmt.Sprintf("http://%s/v1/instances/%s/%s", p.mc.Addr(), service, bs[2].addr), nil, http.StatusNoContent)
	expect("instance 3 deregistered", []float64{1, 0, 0})

	// Overload: level 64*64+32 sheds half of the default priority's users.
	p.publish(t, map[string]int32{bs[0].addr: 300, bs[1].addr: 200}, &meshcore.Overload{State: "overloaded", AdmitMinPriority: 64, AdmitMinLevel: 64*64 + 32})
	var dropped float64
	testenv.Eventually(t, 60*time.Second, func() error {
		_, failed := spread(t, c, bs, 2000)
		dropped = float64(failed[codes.Unavailable]) / 2000
		if math.Abs(dropped-0.5) > 0.05 || len(failed) > 1 {
			return fmt.Errorf("dropped %.3f with UNAVAILABLE (failures %v), want 0.5", dropped, failed)
		}
		return nil
	})
	t.Logf("overload at level 4128: %.3f of calls dropped with UNAVAILABLE", dropped)
	p.publish(t, map[string]int32{bs[0].addr: 300, bs[1].addr: 200}, nil)
	expect("recovered", []float64{3.0 / 5, 2.0 / 5, 0})

	// rpc_timeout from the config-center: a 300 ms call succeeds, then
	// fails with DEADLINE_EXCEEDED once the caller's timeout is 100 ms.
	slow := func() error {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-delay-ms", "300"), 5*time.Second)
		defer cancel()
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := slow(); err != nil {
		t.Fatalf("slow call without a timeout: %v", err)
	}
	p.do(t, "PUT", "http://"+p.cc+"/v1/configs/rpc_timeout/caller/"+service, map[string]any{"*": map[string]any{"rpc_timeout_ms": 100}}, http.StatusOK)
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := slow(); status.Code(err) != codes.DeadlineExceeded {
			return fmt.Errorf("slow call: %v, want DEADLINE_EXCEEDED", err)
		}
		return nil
	})
	// retry from the config-center: a call whose first attempt fails
	// succeeds once the caller retries.
	run := strconv.FormatInt(time.Now().UnixNano(), 36) // ids of this run only (-count)
	flaky := func(id string) error {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-call-id", run+id), 5*time.Second)
		defer cancel()
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := flaky("before-retry"); status.Code(err) != codes.Unavailable {
		t.Fatalf("flaky call without retries: %v, want UNAVAILABLE", err)
	}
	p.do(t, "PUT", "http://"+p.cc+"/v1/configs/retry/caller/"+service, map[string]any{"*": map[string]any{
		"enable": true, "type": 0, "failure_policy": map[string]any{"stop_policy": map[string]any{"max_retry_times": 2}}}}, http.StatusOK)
	attempt := 0
	testenv.Eventually(t, 30*time.Second, func() error {
		attempt++
		return flaky(fmt.Sprintf("with-retry-%d", attempt))
	})

	// Another caller has no timeout: its routes are its own.
	other := dial(t, plainBootstrap(p.mc.XDSAddr(), "client-2", "other-caller"))
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-delay-ms", "300"), 5*time.Second)
	defer cancel()
	if _, err := other.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("slow call of another caller: %v", err)
	}

	// circuit_break becomes the caller's cluster's outlier detection.
	p.do(t, "PUT", "http://"+p.cc+"/v1/configs/circuit_break/caller/"+service, map[string]any{"*": map[string]any{
		"enable": true, "err_rate": 0.3, "min_sample": 50}}, http.StatusOK)
	testenv.Eventually(t, 30*time.Second, func() error {
		cl, ok := p.mc.XDS().Resources("caller", "client-1")[resourcev3.ClusterType][service].(*clusterv3.Cluster)
		if !ok {
			return fmt.Errorf("no cluster for %s yet", service)
		}
		if od := cl.GetOutlierDetection(); od.GetFailurePercentageThreshold().GetValue() != 30 || od.GetFailurePercentageRequestVolume().GetValue() != 50 {
			return fmt.Errorf("outlier detection %v", od)
		}
		return nil
	})
	if _, err := c.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("call after the circuit-break change: %v", err)
	}

	// Everything served passes Envoy's validation.
	for _, caller := range []string{"caller", "other-caller"} {
		for typeURL, rs := range p.mc.XDS().Resources(caller, "any-node") {
			for name, r := range rs {
				if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
					t.Errorf("%s %s of %s: %v", typeURL, name, caller, err)
				}
			}
		}
	}
}
