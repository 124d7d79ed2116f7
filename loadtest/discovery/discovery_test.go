package main

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/logx"
)

// The measurement at a tiny scale, with etcd and mesh-core in this process:
// every poller must see every change, or the tool's figures mean nothing.
// No timing is asserted.
func TestEveryPollerSeesEveryChange(t *testing.T) {
	for _, port := range []string{"poll", "http"} {
		t.Run(port, func(t *testing.T) {
			tg, stop, err := startStack(t.TempDir(), logx.Discard())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			o := options{pollers: 20, instances: 5, changes: 3, interval: 300 * time.Millisecond, wait: 10 * time.Second, procs: 1, port: port}
			rep, err := runLoad(o, tg, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.changes) != o.changes || rep.errors != "" || rep.busy.waiting != float64(o.pollers) {
				t.Fatalf("%d changes (want %d), %v polls held (want %d), %s",
					len(rep.changes), o.changes, rep.busy.waiting, o.pollers, rep.errors)
			}
			for i, c := range rep.changes {
				t.Logf("change %d: %s, missed %d (built: %s)", i+1, c.read, c.missed, c.built)
				if c.missed != 0 || math.IsInf(c.read.p100, 1) || math.IsInf(c.built.p100, 1) {
					t.Errorf("change %d: %d of %d pollers missed it", i+1, c.missed, o.pollers)
				}
			}
		})
	}
}

// An answer tells its change by the marker's weight, not by static_weight.
func TestChangeOf(t *testing.T) {
	const format = `{"service":"s","version":7,"instances":[{"instance":"%s","addr":"a:1","weight":%d,"static_weight":100,` +
		`"healthy":true,"metadata":{}}],"overload":{},"policy_age_ms":-1,"stale":false}`
	for _, k := range []int{0, 5, maxChanges} {
		w := weightsFor(k, 1)[0]
		if got := changeOf(fmt.Appendf(nil, format, w.Instance, w.Weight)); got != k || w.Weight > 1000 {
			t.Errorf("change %d (weight %d) read back as %d", k, w.Weight, got)
		}
	}
	if got := changeOf([]byte(`{"instances":[]}`)); got != -1 {
		t.Errorf("no marker: %d", got)
	}
}
