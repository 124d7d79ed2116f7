package xds_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
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
