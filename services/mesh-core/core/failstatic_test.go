package core_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// state is what a data plane applies of an answer: each instance's weight,
// with "ejected" for one the answer marks unhealthy.
func state(a answer) string {
	out := ""
	for _, in := range a.Instances {
		out += fmt.Sprintf("%s=%d", in.Instance, in.Weight)
		if !in.Healthy {
			out += "(ejected)"
		}
		out += " "
	}
	return out
}

// An etcd outage three times longer than the policy TTL: the last good
// policy (weights {900, 100, 0} with the third instance ejected) is kept
// through it, marked stale, and never flips to static weights; when etcd is
// back a fresh policy replaces it, and a policy that is not refreshed while
// etcd is reachable (its calculator gone) still expires after the TTL.
func TestPoliciesKeptThroughAnEtcdOutage(t *testing.T) {
	const ttl = 3 * time.Second
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) { c.PolicyTTL = ttl })
	ids := []string{"10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"}
	for _, id := range ids {
		register(t, mc, "svc", id, 300)
	}
	waitFor(t, mc, "svc", func(a answer) error {
		if len(a.Instances) != 3 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	pub := publisher(t, mc)
	publish := func(version int64, weights map[string]int32) {
		t.Helper()
		if _, err := pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: policy("svc", version, weights)}); err != nil {
			t.Fatal(err)
		}
	}
	const good = "10.0.0.1:9000=900 10.0.0.2:9000=100 10.0.0.3:9000=0(ejected) "
	publish(1, map[string]int32{ids[0]: 900, ids[1]: 100, ids[2]: 0})
	waitFor(t, mc, "svc", func(a answer) error {
		if s := state(a); s != good {
			return fmt.Errorf("answer %s", s)
		}
		return nil
	})

	etcd.Stop()
	waitFor(t, mc, "svc", func(a answer) error {
		if !a.Stale {
			return errors.New("not marked stale")
		}
		return nil
	})
	for start := time.Now(); time.Since(start) < 3*ttl; time.Sleep(100 * time.Millisecond) {
		if _, a := poll(t, mc, "svc", 0, "0s"); state(a) != good || !a.Stale {
			t.Fatalf("%s into the outage (TTL %s): %s stale=%v, want the last good policy", time.Since(start).Round(time.Millisecond), ttl, state(a), a.Stale)
		}
	}

	etcd.Restart()
	back := time.Now()
	waitFor(t, mc, "svc", func(a answer) error {
		if a.Stale {
			return errors.New("still stale")
		}
		return nil
	})
	t.Logf("answers fresh %s after etcd returned", time.Since(back).Round(time.Millisecond))

	// A fresh policy replaces the last good one.
	publish(2, map[string]int32{ids[0]: 500, ids[1]: 300, ids[2]: 200})
	published := time.Now()
	waitFor(t, mc, "svc", func(a answer) error {
		if s := state(a); s != "10.0.0.1:9000=500 10.0.0.2:9000=300 10.0.0.3:9000=200 " || a.Stale {
			return fmt.Errorf("answer %s stale=%v", s, a.Stale)
		}
		return nil
	})
	// Not refreshed while etcd is reachable: it expires after the TTL.
	waitFor(t, mc, "svc", func(a answer) error {
		if s := state(a); s != "10.0.0.1:9000=100 10.0.0.2:9000=100 10.0.0.3:9000=100 " {
			return fmt.Errorf("answer %s, want static weights once the policy is older than %s", s, ttl)
		}
		return nil
	})
	if age := time.Since(published); age < ttl-500*time.Millisecond {
		t.Fatalf("the policy expired %s after it was published, TTL %s", age, ttl)
	}
}

// A replica that never synced with etcd is not ready: it has nothing to
// serve. Once etcd answers it is, and it stays ready through an outage.
func TestNotReadyBeforeTheFirstSync(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	etcd.Stop()
	mc := coretest.Start(t, etcd, prefix, nil)
	time.Sleep(time.Second)
	if r := call(t, "GET", "http://"+mc.Addr()+"/readyz", nil); r.status != 503 {
		t.Fatalf("/readyz before etcd ever answered: %d %s", r.status, r.body)
	}
	if r := call(t, "GET", "http://"+mc.Addr()+"/healthz", nil); r.status != 200 {
		t.Fatalf("/healthz before etcd ever answered: %d", r.status)
	}
	etcd.Restart()
	testenv.Eventually(t, 30*time.Second, func() error {
		if r := testenv.Ready(t, mc.Addr()); len(r) > 0 {
			return fmt.Errorf("not ready once etcd answers: %v", r)
		}
		return nil
	})
	etcd.Stop()
	testenv.WaitMetric(t, mc.Addr(), "sextant_meshcore_etcd_connected", 0)
	if r := testenv.Ready(t, mc.Addr()); len(r) > 0 {
		t.Fatalf("not ready while etcd is away after a sync: %v", r)
	}
}
