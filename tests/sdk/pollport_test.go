package sdk_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// The SDK's Discovery, pointed at mesh-core's poll port, follows several
// services with its one poll (GET /v1/discovery?services=...), including
// one watched later (the poll restarts, its connection is dropped) and one
// that registers after it is watched; registrations still go to the HTTP port.
func TestDiscoveryOnThePollPort(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	register := func(svc string, i int) {
		addr := fmt.Sprintf("10.0.0.%d:9000", i)
		r := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: mc.Addr(), Token: testenv.ServiceToken(t, etcd, prefix, svc),
			Registration: sdk.Registration{Service: svc, Instance: addr, Addr: addr}})
		t.Cleanup(r.Close)
	}
	register("a", 1)
	register("b", 2)
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: mc.PollAddr(), Token: testenv.ServiceToken(t, etcd, prefix, "caller"), Wait: 5 * time.Second})
	defer d.Close()
	d.Watch("a", nil, nil)
	d.Watch("b", nil, nil)
	instances := func(svc string, want int) func() error {
		return func() error {
			s, ok := d.Get(svc)
			if !ok || len(s.Instances) != want {
				return fmt.Errorf("%s: no snapshot with %d instances yet", svc, want)
			}
			return nil
		}
	}
	testenv.Eventually(t, 20*time.Second, instances("a", 1))
	testenv.Eventually(t, 20*time.Second, instances("b", 1))

	d.Watch("c", nil, nil) // not registered yet
	testenv.Eventually(t, 20*time.Second, instances("c", 0))
	register("c", 3)
	register("a", 4)
	testenv.Eventually(t, 20*time.Second, instances("c", 1))
	testenv.Eventually(t, 20*time.Second, instances("a", 2))
	if n := testenv.Metric(t, mc.Addr(), "sextant_meshcore_pollers_waiting"); n > 1 {
		t.Fatalf("%v polls waiting for one Discovery", n)
	}
}
