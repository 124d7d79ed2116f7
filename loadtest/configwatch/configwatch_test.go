package main

import (
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/logx"
)

// The measurement at a tiny scale, with etcd and the config-center in this
// process: every concerned watch sees its change, no other watch is
// answered, and the config-center computes two answers per concerned watch
// (woken, then polled again), not one per held watch. No timing is asserted.
func TestChangeWakesOnlyItsWatches(t *testing.T) {
	addr, stop, err := startStack(t.TempDir(), logx.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	o := options{configs: 30, watches: 40, watchServices: 10, changes: 3, interval: 300 * time.Millisecond,
		wait: 30 * time.Second, procs: 1, writers: 4}
	rep, err := runLoad(o, addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.changes) != o.changes || rep.errors != "" {
		t.Fatalf("%d changes (want %d), %s", len(rep.changes), o.changes, rep.errors)
	}
	for i, c := range rep.changes {
		t.Logf("change %d: %d concerned, %s, missed %d", i+1, c.concerned, c.read, c.missed)
		if c.concerned != 4 || c.missed != 0 {
			t.Errorf("change %d: %d of %d watches missed it", i+1, c.missed, c.concerned)
		}
	}
	if rep.counts.Answers != int64(rep.concerned) || rep.counts.NoNews != 0 {
		t.Errorf("%d answers (%d without news) for %d concerned watches", rep.counts.Answers, rep.counts.NoNews, rep.concerned)
	}
	if rep.computed != float64(2*rep.concerned) {
		t.Errorf("%.0f answers computed for %d concerned watches, want %d", rep.computed, rep.concerned, 2*rep.concerned)
	}
}

func TestDecode(t *testing.T) {
	a, err := decode([]byte(`{"service":"svc-00001","instance":"10.9.0.2:8080","version":77,"configs":[{"kind":"limit","scope":"svc-00001",` +
		`"revision":12,"source":"current","document":{"qps_limit":1003}}],"policies":{}}`))
	if err != nil || a.Version != 77 || a.Change != 3 {
		t.Errorf("%+v, %v", a, err)
	}
	if a, err := decode([]byte(`{"service":"s","instance":"i","version":5,"configs":[],"policies":{}}`)); err != nil || a.Change != -1 {
		t.Errorf("no config: %+v, %v", a, err)
	}
	if _, err := decode([]byte(`{}`)); err == nil {
		t.Error("an answer without a version was read")
	}
}
