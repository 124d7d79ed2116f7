package sdk_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sextant-mesh/sextant/sdk"
)

// Pick instances by their dynamic weights.
func ExamplePicker() {
	var p sdk.Picker
	p.Update(&sdk.Snapshot{Version: 7, Instances: []sdk.Instance{
		{Instance: "10.0.0.1:9000", Weight: 3, Healthy: true},
		{Instance: "10.0.0.2:9000", Weight: 1, Healthy: true},
		{Instance: "10.0.0.3:9000", Weight: 0, Healthy: false}, // ejected
	}})
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

// Shed low-priority requests under overload: admit_min_priority comes from
// mesh-core (here a fixed 64).
func ExampleGate() {
	gate := sdk.NewGate(sdk.GateOptions{Threshold: func() int32 { return 64 }, Concurrency: 8})
	for _, priority := range []int32{10, 120} {
		a, err := gate.Enter(context.Background(), time.Now(), priority, "front", "Get")
		if err != nil {
			fmt.Println(priority, "shed:", err)
			continue
		}
		fmt.Println(priority, "admitted")
		a.Done()
	}
	// Output:
	// 10 shed: sextant: shed by overload admission: priority 10 is below 64
	// 120 admitted
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
