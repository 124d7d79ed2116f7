package sim_test

import (
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/lbsim/sim"
)

func zoneRun(t *testing.T, scenario, strategy string, d time.Duration) sim.Result {
	t.Helper()
	for _, sc := range sim.ZoneScenarios() {
		if sc.Name != scenario {
			continue
		}
		sc.Duration = d
		for _, st := range sim.ZoneStrategies() {
			if st.Name == strategy {
				return sim.Run(&sc, st, sim.Options{Seed: 1})
			}
		}
	}
	t.Fatalf("no %s / %s", scenario, strategy)
	return sim.Result{}
}

// Zone-aware routing keeps requests in the callers' zone while the zone can
// serve them below the headroom, spills the rest in proportion when it
// cannot, and never loads a zone more than the others for it: it fails
// when any of these regresses.
func TestZoneAwareRoutingStaysLocalThenSpillsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 4 runs of 90 s")
	}
	low := zoneRun(t, "zones-40", "sextant-zoned", 90*time.Second)
	if low.LocalShare["zone-a"] < 0.99 || low.LocalShare["zone-b"] < 0.99 {
		t.Errorf("at 40 %% load: kept in zone %v, want all (each zone can serve its callers)", low.LocalShare)
	}
	high := zoneRun(t, "zones-80", "sextant-zoned", 90*time.Second)
	if a, b := high.LocalShare["zone-a"], high.LocalShare["zone-b"]; a < 0.99 || b < 0.75 || b > 0.85 {
		t.Errorf("at 80 %% load: kept in zone %v, want zone-a all and zone-b about 80 %% (its capacity below the headroom)", high.LocalShare)
	}
	if high.Imbalance > 1.10 {
		t.Errorf("at 80 %% load: imbalance %.3f, the spill-over should keep the zones even", high.Imbalance)
	}
	hybrid := zoneRun(t, "zones-80", "sextant-hybrid", 90*time.Second)
	if high.ErrorShare > hybrid.ErrorShare+0.0005 || high.P99 > 1.05*hybrid.P99 {
		t.Errorf("zone-aware p99 %.1f ms, errors %.3f %% against %.1f ms, %.3f %% without", high.P99, 100*high.ErrorShare, hybrid.P99, 100*hybrid.ErrorShare)
	}
	// The rule a caller could run alone, staying in its zone, overloads zone b.
	local := zoneRun(t, "zones-80", "zone-local", 90*time.Second)
	if local.P99 < 2*high.P99 {
		t.Errorf("zone-local p99 %.1f ms against %.1f ms zone-aware: the baseline no longer shows the overload", local.P99, high.P99)
	}
	t.Logf("40 %%: %v kept; 80 %%: %v kept, crossing %.1f %% (hybrid %.1f %%), p99 %.1f ms (hybrid %.1f, zone-local %.1f)",
		low.LocalShare, high.LocalShare, 100*high.CrossZone, 100*hybrid.CrossZone, high.P99, hybrid.P99, local.P99)
}
