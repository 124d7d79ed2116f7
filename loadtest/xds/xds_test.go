package main

import (
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/logx"
)

// The measurement at a tiny scale, with etcd and mesh-core in this process:
// every client must acknowledge every change, or the tool's figures mean
// nothing. No timing is asserted.
func TestEveryClientAcknowledgesEveryChange(t *testing.T) {
	tg, stop, err := startStack(t.TempDir(), logx.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	rep, err := run(options{clients: 20, instances: 5, changes: 3, interval: 100 * time.Millisecond, procs: 1}, tg, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	if len(rep.changes) != 3 || rep.synced != 20 || rep.nodes != 20 {
		t.Fatalf("%d changes measured, %d of %d nodes synced", len(rep.changes), rep.synced, rep.nodes)
	}
}
