package xds_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// With --xds-priority-routes, an overloaded service's gRPC callers are shed
// by the priority headers they send, as the SDK's gate sheds: below the
// level's business priority all, at it the users below the level's user
// priority, above it none; calls without a priority at the default's share.
func TestPriorityRoutesShedByLevel(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) { c.XDSAddr, c.XDSPriorityRoutes = "127.0.0.1:0", true })
	p := &plane{etcd: etcd, prefix: prefix, mc: mc, pub: startPlanePublisher(t, mc), policy: time.Now().UnixMilli()}
	b := startBackend(t)
	p.register(t, b, "z1")
	c := dial(t, plainBootstrap(mc.XDSAddr(), "client-1", "caller"))

	// unavailable is the share of n calls carrying kv that fail with UNAVAILABLE.
	unavailable := func(n int, kv ...string) (float64, error) {
		failed := 0
		for range n {
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), kv...), 5*time.Second)
			_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			switch status.Code(err) {
			case codes.OK:
			case codes.Unavailable:
				failed++
			default:
				return 0, err
			}
		}
		return float64(failed) / float64(n), nil
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := unavailable(1)
		return err
	})
	// Level 64*64+32: priority 64, users 0..31 shed.
	p.publish(t, map[string]int32{b.addr: 100}, &meshcore.Overload{State: "overloaded", AdmitMinPriority: 64, AdmitMinLevel: 64*64 + 32})
	testenv.Eventually(t, 30*time.Second, func() error {
		if got, err := unavailable(20, "x-sextant-priority", "10"); err != nil || got != 1 {
			return fmt.Errorf("priority 10: %.2f shed (%v), want all", got, err)
		}
		return nil
	})
	for _, c := range []struct {
		what string
		kv   []string
		want float64
		tol  float64
	}{
		{"priority 10", []string{"x-sextant-priority", "10"}, 1, 0},
		{"priority 100", []string{"x-sextant-priority", "100"}, 0, 0},
		{"priority 64, user 10", []string{"x-sextant-priority", "64", "x-sextant-user-priority", "10"}, 1, 0},
		{"priority 64, user 40", []string{"x-sextant-priority", "64", "x-sextant-user-priority", "40"}, 0, 0},
		{"priority 64, no user", []string{"x-sextant-priority", "64"}, 0.5, 0.07},
		{"no priority", nil, 0.5, 0.07},
	} {
		got, err := unavailable(1000, c.kv...)
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		t.Logf("%s: %.3f shed", c.what, got)
		if math.Abs(got-c.want) > c.tol {
			t.Errorf("%s: %.3f shed, want %.2f", c.what, got, c.want)
		}
	}
	p.publish(t, map[string]int32{b.addr: 100}, nil)
	testenv.Eventually(t, 30*time.Second, func() error {
		if got, err := unavailable(50, "x-sextant-priority", "10"); err != nil || got != 0 {
			return fmt.Errorf("after the overload: %.2f shed (%v)", got, err)
		}
		return nil
	})
}
