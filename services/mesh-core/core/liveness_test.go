package core_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

func heartbeat(t testing.TB, mc *core.MeshCore, service, instance string) int {
	t.Helper()
	return call(t, "PUT", fmt.Sprintf("http://%s/v1/instances/%s/%s/heartbeat", mc.Addr(), service, instance), nil).status
}

// etcdRevision is etcd's current revision: it moves with every write.
func etcdRevision(t testing.TB, etcd *testenv.Etcd) int64 {
	t.Helper()
	resp, err := etcd.Client(t).Get(context.Background(), "revision-probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// leaseCounter reads one of the embedded etcd server's lease counters
// (etcd_debugging_lease_*_total), which it registers in this process.
func leaseCounter(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_debugging_lease_"+name+"_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("the embedded etcd has no lease counter %q", name)
	return 0
}

// Heartbeats are kept in memory: 500 of them write nothing to etcd and renew
// no lease (one session lease per replica, not one per instance), and an
// instance that stops heartbeating is still removed after its TTL.
func TestHeartbeatsWriteNothingToEtcd(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	mc := coretest.Start(t, etcd, testenv.Prefix(t), nil)
	granted := leaseCounter(t, "granted")
	for i := range 50 {
		register(t, mc, "s", fmt.Sprintf("10.0.0.%d:80", i), 5)
	}
	if n := leaseCounter(t, "granted") - granted; n != 1 {
		t.Fatalf("50 registrations granted %v leases, want the replica's one", n)
	}
	before, renewed, start := etcdRevision(t, etcd), leaseCounter(t, "renewed"), time.Now()
	for range 10 {
		for i := range 50 {
			if s := heartbeat(t, mc, "s", fmt.Sprintf("10.0.0.%d:80", i)); s != http.StatusOK {
				t.Fatalf("heartbeat: %d", s)
			}
		}
	}
	if after := etcdRevision(t, etcd); after != before {
		t.Fatalf("500 heartbeats moved etcd's revision from %d to %d", before, after)
	}
	// The session's own keep-alive renews every third of its TTL (15 s).
	if n, most := leaseCounter(t, "renewed")-renewed, 1+float64(time.Since(start)/(5*time.Second)); n > most {
		t.Fatalf("500 heartbeats renewed leases %v times, want at most %v (the session's keep-alive)", n, most)
	}
	// Unknown instances are still refused.
	if s := heartbeat(t, mc, "s", "10.9.9.9:80"); s != http.StatusNotFound {
		t.Fatalf("heartbeat of an unknown instance: %d", s)
	}
	// Silent from now on: every instance goes after its 5 s TTL.
	waitFor(t, mc, "s", func(a answer) error {
		if len(a.Instances) != 0 {
			return fmt.Errorf("%d instances left", len(a.Instances))
		}
		return nil
	})
}

// An instance registered through one replica and heartbeating another is
// adopted by the second: it outlives the first replica's session lease.
func TestAnotherReplicaAdoptsAnInstance(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	short := func(c *core.Config) { c.SessionTTL = 5 * time.Second }
	a := coretest.Start(t, etcd, prefix, short)
	b := coretest.Start(t, etcd, prefix, short)
	register(t, a, "s", "10.0.0.1:80", 30)
	waitFor(t, b, "s", func(ans answer) error {
		if len(ans.Instances) != 1 {
			return fmt.Errorf("%d instances", len(ans.Instances))
		}
		return nil
	})
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := heartbeat(t, b, "s", "10.0.0.1:80"); s != http.StatusOK {
		t.Fatalf("heartbeat to the other replica: %d", s)
	}
	// Past the stopped replica's session TTL (5 s), the instance is still
	// there, under the second replica's lease.
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		if s := heartbeat(t, b, "s", "10.0.0.1:80"); s != http.StatusOK {
			t.Fatalf("heartbeat: %d", s)
		}
		time.Sleep(time.Second)
	}
	if _, ans := poll(t, b, "s", 0, "0s"); len(ans.Instances) != 1 {
		t.Fatalf("the adopted instance went with the stopped replica's lease: %+v", ans)
	}
}

// While etcd is away longer than the replica's session TTL, heartbeats are
// still answered from memory, and the instances are still registered once
// etcd is back.
func TestInstancesOutliveAnEtcdOutage(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	mc := coretest.Start(t, etcd, testenv.Prefix(t), func(c *core.Config) { c.SessionTTL = 5 * time.Second })
	register(t, mc, "s", "10.0.0.1:80", 30)
	etcd.Stop()
	outage := time.Now().Add(8 * time.Second)
	for time.Now().Before(outage) {
		if s := heartbeat(t, mc, "s", "10.0.0.1:80"); s != http.StatusOK {
			t.Fatalf("heartbeat while etcd is away: %d", s)
		}
		time.Sleep(time.Second)
	}
	etcd.Restart()
	waitFor(t, mc, "s", func(a answer) error {
		if a.Stale || len(a.Instances) != 1 {
			return fmt.Errorf("stale %v, %d instances", a.Stale, len(a.Instances))
		}
		return nil
	})
	// And it stays: past another session TTL, still there, still alive.
	for range 7 {
		if s := heartbeat(t, mc, "s", "10.0.0.1:80"); s != http.StatusOK {
			t.Fatalf("heartbeat after the outage: %d", s)
		}
		time.Sleep(time.Second)
	}
	resp, err := etcd.Client(t).Get(context.Background(), "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if _, a := poll(t, mc, "s", 0, "0s"); len(a.Instances) != 1 || resp.Count == 0 {
		t.Fatalf("after the outage: %+v (%d keys in etcd)", a, resp.Count)
	}
}
