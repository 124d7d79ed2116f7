package core

import (
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// When etcd is away from mesh-core longer than its session TTL while etcd
// itself runs (a partition), etcd ends the session's lease and deletes the
// registrations under it. Back in touch, the registry mirror sees the
// deletes, and the replica writes every instance still heartbeating again
// under a new session a moment later: between the two, every instance
// had left discovery (the chaos suite's mesh-core-etcd-partition saw the
// SDK get no instance, and calls fail). A delete of an instance this
// replica keeps alive is held until it is written again; one not written
// again within the grace, or of an instance not kept alive here, applies.
func TestALostSessionsDeletesAreHeldUntilWrittenAgain(t *testing.T) {
	c := NewCache(time.Minute, 100, slog.New(slog.DiscardHandler))
	c.deleteGrace = 200 * time.Millisecond
	var mu sync.Mutex
	alive := map[string]bool{"svc/i1": true, "svc/i2": true}
	c.keptAlive = func(service, instance string) bool {
		mu.Lock()
		defer mu.Unlock()
		return alive[service+"/"+instance]
	}
	regs := registryMirror{c}
	reg := func(id string) etcdx.Event {
		b, _ := json.Marshal(api.Registration{Service: "svc", Instance: id, Addr: id, StaticWeight: 100})
		return etcdx.Event{Key: "svc/" + id, Value: b}
	}
	del := func(id string) etcdx.Event { return etcdx.Event{Key: "svc/" + id, Deleted: true} }
	regs.Apply([]etcdx.Event{reg("i1"), reg("i2"), reg("i3")}, 1)
	instances := func() int { return c.Get("svc").Instances }
	if n := instances(); n != 3 {
		t.Fatalf("%d instances, want 3", n)
	}

	// The lost session's deletes: i1 and i2 are kept alive here, i3 not.
	regs.Apply([]etcdx.Event{del("i1"), del("i2"), del("i3")}, 2)
	if n := instances(); n != 2 {
		t.Fatalf("%d instances after the lost session's deletes, want 2 (i3 is not kept alive here)", n)
	}
	// i1 is written again under the new session; i2 never is.
	regs.Apply([]etcdx.Event{reg("i1")}, 3)
	time.Sleep(50 * time.Millisecond)
	if n := instances(); n != 2 {
		t.Fatalf("%d instances, want 2", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for instances() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d instances %s after the deletes, want 1: the delete of i2, not written again, applies after the grace", instances(), 5*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // i1's held delete was cancelled
	if n := instances(); n != 1 {
		t.Fatalf("%d instances, want i1 kept", n)
	}

	// A listing again after compaction that lacks a kept instance holds it
	// the same way.
	regs.Reset([]etcdx.Event{}, 4)
	if n := instances(); n != 1 {
		t.Fatalf("%d instances after a listing without i1, which is kept alive here; want it held", n)
	}
	regs.Apply([]etcdx.Event{reg("i1")}, 5)

	// An instance no longer kept alive (deregistered, or past its deadline)
	// leaves at once.
	mu.Lock()
	alive["svc/i1"] = false
	mu.Unlock()
	regs.Apply([]etcdx.Event{del("i1")}, 6)
	if n := instances(); n != 0 {
		t.Fatalf("%d instances after the delete of one not kept alive, want 0", n)
	}
}
