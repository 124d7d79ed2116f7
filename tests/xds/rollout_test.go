package xds_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
)

// A config-center rollout reaches the gRPC clients it covers: the node
// whose id falls in the canary gets the new rpc_timeout, the other keeps
// the previous one, and both have the new one once it is promoted.
func TestRolloutPerNode(t *testing.T) {
	p := startPlane(t)
	b := startBackend(t)
	p.register(t, b, "z1")
	inside, outside := "", ""
	for i := 0; inside == "" || outside == ""; i++ {
		id := fmt.Sprintf("caller-%d", i)
		if api.RolloutBucket(id) < 50 {
			inside = id
		} else {
			outside = id
		}
	}
	canary := dial(t, plainBootstrap(p.mc.XDSAddr(), inside, "caller"))
	steady := dial(t, plainBootstrap(p.mc.XDSAddr(), outside, "caller"))
	// slow is a 300 ms call's status.
	slow := func(c healthpb.HealthClient) codes.Code {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-delay-ms", "300"), 5*time.Second)
		defer cancel()
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
		return status.Code(err)
	}
	expect := func(what string, canaryWant, steadyWant codes.Code) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func() error {
			if c, s := slow(canary), slow(steady); c != canaryWant || s != steadyWant {
				return fmt.Errorf("%s: canary node %v (want %v), other node %v (want %v)", what, c, canaryWant, s, steadyWant)
			}
			return nil
		})
	}
	path := "http://" + p.cc + "/v1/configs/rpc_timeout/caller/" + service
	p.do(t, "PUT", path, map[string]any{"*": map[string]any{"rpc_timeout_ms": 2000}}, http.StatusOK)
	expect("2 s for all", codes.OK, codes.OK)
	etag := func() string { return p.do(t, "GET", path, nil, http.StatusOK).Get("ETag") }
	p.do(t, "PUT", path+"?rollout=50", map[string]any{"*": map[string]any{"rpc_timeout_ms": 100}}, http.StatusOK, "If-Match", etag())
	expect("100 ms rolled out to 50 %", codes.DeadlineExceeded, codes.OK)
	// Stable: the node outside the canary keeps the previous timeout.
	for range 5 {
		if c := slow(steady); c != codes.OK {
			t.Fatalf("the node outside the canary: %v", c)
		}
	}
	p.do(t, "POST", path+"/promote?percent=100", nil, http.StatusOK, "If-Match", etag())
	expect("promoted", codes.DeadlineExceeded, codes.DeadlineExceeded)
}

// A delta node (as Envoy) in the canary of a rollout that starts after it
// connected gets the canary's routes, though the routes of the group it
// was in did not change in substance: the rollout's generation in their
// metadata makes them change, it answers, and its next request moves it.
func TestRolloutReachesDeltaNodes(t *testing.T) {
	p := startPlane(t)
	b := startBackend(t)
	p.register(t, b, "z1")
	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("envoy-%d", i); api.RolloutBucket(c) < 50 {
			id = c
		}
	}
	path := "http://" + p.cc + "/v1/configs/rpc_timeout/caller/" + service
	p.do(t, "PUT", path, map[string]any{"*": map[string]any{"rpc_timeout_ms": 2000}}, http.StatusOK)
	testenv.Eventually(t, 10*time.Second, func() error {
		rc, ok := p.mc.XDS().Resources("caller", id)[resourcev3.RouteType][service].(*routev3.RouteConfiguration)
		if !ok {
			return fmt.Errorf("no route configuration for %s yet", service)
		}
		if d := rc.VirtualHosts[0].Routes[0].GetRoute().GetTimeout().AsDuration(); d != 2*time.Second {
			return fmt.Errorf("timeout %s, want 2s", d)
		}
		return nil
	})

	conn, err := grpc.NewClient(p.mc.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(testenv.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: id, Cluster: "caller", UserAgentName: "envoy"},
		TypeUrl: resourcev3.RouteType, ResourceNamesSubscribe: []string{service}}); err != nil {
		t.Fatal(err)
	}
	timeouts := make(chan time.Duration, 16)
	go func() { // acknowledge every response, pass on each route's timeout
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(timeouts)
				return
			}
			for _, r := range resp.Resources {
				var rc routev3.RouteConfiguration
				if r.Resource.UnmarshalTo(&rc) == nil {
					timeouts <- rc.VirtualHosts[0].Routes[0].GetRoute().GetTimeout().AsDuration()
				}
			}
			if stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce}) != nil {
				return
			}
		}
	}()
	wait := func(want time.Duration) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case d, ok := <-timeouts:
				if !ok {
					t.Fatal("stream ended")
				}
				if d == want {
					return
				}
			case <-deadline:
				t.Fatalf("no route with timeout %s", want)
			}
		}
	}
	wait(2 * time.Second)
	etag := p.do(t, "GET", path, nil, http.StatusOK).Get("ETag")
	p.do(t, "PUT", path+"?rollout=50", map[string]any{"*": map[string]any{"rpc_timeout_ms": 100}}, http.StatusOK, "If-Match", etag)
	wait(100 * time.Millisecond)
}
