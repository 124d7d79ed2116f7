package main

import (
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/logx"
)

// The measurement at a tiny scale, with etcd and mesh-core in this process:
// every instance registers, every heartbeat is answered, etcd's counters are
// read, and every dead instance is seen gone, not before its TTL. No other
// timing is asserted. About 8 s: a dead instance takes its TTL (5 s at
// least) to go.
func TestRegistryBenchmarkSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs etcd and mesh-core for about 8 s")
	}
	e, err := startEtcd(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	mc, err := startMeshCore(e.ClientURL, logx.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopMeshCore(mc) })

	o := options{instances: 200, perService: 20, dead: 4, concurrency: 8, conns: 4, procs: 1,
		heartbeats: []time.Duration{time.Second}, ttl: 5, duration: 3 * time.Second}
	if err := o.check(); err != nil {
		t.Fatal(err)
	}
	rep, err := runLoad(o, target{etcdURL: e.ClientURL, http: mc.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.reg.ok != o.instances || rep.reg.failed != 0 {
		t.Fatalf("registered %d of %d (%d failed)", rep.reg.ok, o.instances, rep.reg.failed)
	}
	if rep.reg.etcd["etcd_mvcc_put_total"] < float64(o.instances) {
		t.Errorf("etcd counted %v puts for %d registrations: its metrics were not read", rep.reg.etcd["etcd_mvcc_put_total"], o.instances)
	}
	p := rep.phases[0]
	t.Logf("%d heartbeats answered (%.0f/s), p50 %.2f ms; etcd proposals %v, lease renewals %v; dead gone after %v s",
		p.hb.ok, float64(p.hb.ok)/p.took.Seconds(), quantile(p.hbLat, 0.5),
		p.etcd["etcd_server_proposals_committed_total"], p.etcd["etcd_debugging_lease_renewed_total"], p.detect)
	if p.alive != o.instances-o.dead || p.hb.ok == 0 || p.hb.errors != 0 || p.hb.notFound != 0 || p.lost != 0 || p.liveMissing != 0 {
		t.Errorf("%d alive (want %d), %d heartbeats ok, %d failed, %d not found; %d lost, %d missing",
			p.alive, o.instances-o.dead, p.hb.ok, p.hb.errors, p.hb.notFound, p.lost, p.liveMissing)
	}
	// Each live instance heartbeats about once a second; at least half of
	// that must have been answered, even on a loaded machine.
	if want := float64(p.alive) * p.took.Seconds() / 2; float64(p.hb.ok) < want {
		t.Errorf("%d heartbeats answered in %.1f s, want at least %.0f", p.hb.ok, p.took.Seconds(), want)
	}
	if len(p.detect) != o.dead {
		t.Fatalf("%d of %d dead instances seen gone", len(p.detect), o.dead)
	}
	if p.detect[0] < float64(o.ttl)-0.5 {
		t.Errorf("a dead instance was gone %.2f s after its last heartbeat, before its TTL of %d s", p.detect[0], o.ttl)
	}
}

func TestQuantile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]float64{0.5: 5, 0.99: 10, 1: 10, 0: 1} {
		if got := quantile(v, q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
}
