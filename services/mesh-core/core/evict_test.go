package core_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// Polls for services nobody registered answer empty and take no slot for
// good: mesh-core holds a snapshot of a service with instances or a policy,
// and of another only while a poll waits on it. --max-services bounds those;
// a service polled for before it registers is not refused, and its waiting
// pollers see it appear.
func TestPollsForUnknownServicesHoldNoSlot(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	mc := coretest.Start(t, etcd, testenv.Prefix(t), func(c *core.Config) { c.MaxServices = 3 })
	services := func() float64 { return testenv.Metric(t, mc.Addr(), "sextant_meshcore_services") }
	waitServices := func(want float64) {
		t.Helper()
		testenv.WaitMetric(t, mc.Addr(), "sextant_meshcore_services", want)
	}
	register(t, mc, "real-svc", "10.0.0.1:9000", 30)
	waitFor(t, mc, "real-svc", func(a answer) error {
		if len(a.Instances) != 1 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	waitServices(1)

	// Many more unknown names than slots, each polled at once and then
	// waited on until its wait ends.
	for i := range 20 {
		name := fmt.Sprintf("random-%d", i)
		status, a := poll(t, mc, name, 0, "0s")
		if status != http.StatusOK || a.Service != name || len(a.Instances) != 0 || a.Version == 0 {
			t.Fatalf("%s: %d %+v", name, status, a)
		}
		if status, _ := poll(t, mc, name, a.Version, "50ms"); status != http.StatusNotModified {
			t.Fatalf("%s, waiting on its version: %d", name, status)
		}
	}
	// And several at once.
	many := fmt.Sprintf("http://%s/v1/discovery?services=random-1,random-2", mc.Addr())
	r := call(t, "GET", many, nil)
	var all struct{ Version int64 }
	if err := json.Unmarshal(r.body, &all); r.status != http.StatusOK || err != nil {
		t.Fatalf("several unknown services: %d %s", r.status, r.body)
	}
	if r := call(t, "GET", fmt.Sprintf("%s&version=%d&wait=50ms", many, all.Version), nil); r.status != http.StatusNotModified {
		t.Fatalf("several unknown services, waiting on their version: %d %s", r.status, r.body)
	}
	if n := services(); n != 1 {
		t.Fatalf("%v services held after polls for unknown ones, want 1", n)
	}

	// A caller polls for a service before it registers, and waits for it.
	status, empty := poll(t, mc, "later-svc", 0, "0s")
	if status != http.StatusOK || len(empty.Instances) != 0 {
		t.Fatalf("later-svc before it registered: %d %+v", status, empty)
	}
	released := make(chan answer, 1)
	go func() {
		status, a := poll(t, mc, "later-svc", empty.Version, "30s")
		if status != http.StatusOK {
			t.Errorf("the waiting poll answered %d", status)
		}
		released <- a
	}()
	waitServices(2) // the waiting poll holds later-svc
	// The slots are bounded: a third wait takes the last, a fourth is refused.
	ghost := make(chan int, 1)
	go func() {
		_, a := poll(t, mc, "ghost-1", 0, "0s")
		status, _ := poll(t, mc, "ghost-1", a.Version, "5s")
		ghost <- status
	}()
	waitServices(3)
	_, a := poll(t, mc, "ghost-2", 0, "0s")
	r = call(t, "GET", fmt.Sprintf("http://%s/v1/discovery/ghost-2?version=%d&wait=1s", mc.Addr(), a.Version), nil)
	var e struct{ Error struct{ Code string } }
	_ = json.Unmarshal(r.body, &e)
	if r.status != http.StatusTooManyRequests || e.Error.Code != "too_many_services" {
		t.Fatalf("a wait beyond --max-services: %d %s", r.status, r.body)
	}

	register(t, mc, "later-svc", "10.0.0.2:9000", 30)
	select {
	case a := <-released:
		if len(a.Instances) != 1 || a.Version == empty.Version {
			t.Fatalf("released with %+v", a)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the poller waiting for later-svc was not released when it registered")
	}

	// A service that loses its last instance is evicted once nobody waits,
	// as is ghost-1 when its wait ends.
	if status := <-ghost; status != http.StatusNotModified {
		t.Fatalf("ghost-1's wait: %d", status)
	}
	if r := call(t, "DELETE", "http://"+mc.Addr()+"/v1/instances/later-svc/10.0.0.2:9000", nil); r.status != http.StatusNoContent {
		t.Fatalf("deregister: %d %s", r.status, r.body)
	}
	waitServices(1)
	if status, a := poll(t, mc, "later-svc", 0, "0s"); status != http.StatusOK || len(a.Instances) != 0 || a.Version != empty.Version {
		t.Fatalf("later-svc after it left: %d %+v (empty version %d)", status, a, empty.Version)
	}
}
