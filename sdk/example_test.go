package sdk_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// Pick instances by their dynamic weights.
func ExamplePicker() {
	var p sdk.Picker
	p.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 7, Instances: []sdk.Instance{
		{Instance: "10.0.0.1:9000", Weight: 3, Healthy: true},
		{Instance: "10.0.0.2:9000", Weight: 1, Healthy: true},
		{Instance: "10.0.0.3:9000", Weight: 0, Healthy: false}, // ejected
	}}})
	for i := 0; i < 4; i++ {
		in, _ := p.Pick()
		fmt.Println(in.Instance)
	}
	// Output:
	// 10.0.0.1:9000
	// 10.0.0.1:9000
	// 10.0.0.2:9000
	// 10.0.0.1:9000
}

// Shed under overload: the admission level in force comes from mesh-core
// (here a fixed one, half-way into business priority 64: users 32..63 of
// that priority are admitted, 0..31 shed).
func ExampleGate() {
	gate := sdk.NewGate(sdk.GateOptions{Threshold: func() int32 { return sdk.Priority{Business: 64, User: 32}.Level() }})
	for _, p := range []sdk.Priority{{Business: 10, User: 63}, {Business: 64, User: 7}, {Business: 64, User: 40}, {Business: 120, User: 0}} {
		a, err := gate.Enter(context.Background(), time.Now(), p, "front", "Get")
		if err != nil {
			fmt.Println(p.Business, p.User, "shed:", err)
			continue
		}
		fmt.Println(p.Business, p.User, "admitted")
		a.Done()
	}
	// Output:
	// 10 63 shed: sextant: shed by overload admission: level 703 (priority 10, user 63) is below 4128
	// 64 7 shed: sextant: shed by overload admission: level 4103 (priority 64, user 7) is below 4128
	// 64 40 admitted
	// 120 0 admitted
}

// Without any answer from mesh-core, Discovery serves the static instances
// it was given (fail static).
func ExampleDiscovery() {
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: "127.0.0.1:1"}) // nothing listens there
	defer d.Close()
	d.Watch("comment-svc", []sdk.Instance{{Instance: "10.0.0.1:9000", Addr: "10.0.0.1:9000"}}, nil)
	snap, _ := d.Get("comment-svc")
	fmt.Println(len(snap.Instances), snap.Instances[0].Addr)
	// Output: 1 10.0.0.1:9000
}

// Route a tenant's requests to a unit: the callee's unit_routing (here
// given by hand; UnitRouter.Follow takes it from the config-center) sends
// tenant acme to cluster c2; other requests pick among every instance.
func ExampleUnitBalancer() {
	router := sdk.NewUnitRouter("front", nil)
	_ = router.Update("orders", []byte(`{"rules": [{"name": "acme-to-c2", "match": {"keys": ["acme"]}, "unit": "c2", "mode": "enforce"}]}`))
	b := sdk.NewUnitBalancer("orders", router, func() sdk.Balancer { return new(sdk.Picker) })
	b.Update(&sdk.Snapshot{Discovery: api.Discovery{Version: 1, Instances: []sdk.Instance{
		{Instance: "c1-a", Cluster: "c1", Weight: 100, Healthy: true},
		{Instance: "c2-a", Cluster: "c2", Weight: 100, Healthy: true},
	}}})
	for _, tenant := range []string{"acme", "acme", "globex", "globex"} {
		in, _ := b.PickFor(sdk.UnitFeatures{Header: func(k string) string {
			if k == "x-tenant-id" {
				return tenant
			}
			return ""
		}})
		b.Done(in.Instance, time.Millisecond, false)
		fmt.Println(tenant, in.Instance)
	}
	// Output:
	// acme c2-a
	// acme c2-a
	// globex c1-a
	// globex c2-a
}
