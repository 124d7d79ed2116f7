package sim_test

import (
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/lbsim/sim"
)

func chain(t *testing.T, name string) sim.ChainScenario {
	t.Helper()
	for _, sc := range sim.ChainScenarios() {
		if sc.Name == name {
			return sc
		}
	}
	t.Fatalf("no chain scenario %q", name)
	return sim.ChainScenario{}
}

// At twice B's capacity with one business priority, the chain keeps B near
// its capacity, admitted requests fast, sheds almost everything at the
// front before any work, and admits everything again after the load drops.
// The bounds are the goals, a little below what seed 1 gives
// (docs/overload.md), so a regression of the control fails here.
func TestOverloadChainOnePriority(t *testing.T) {
	sc := chain(t, "overload")
	r := sim.RunChain(&sc, 1)
	t.Logf("goodput %.1f %%, p99 %.1f ms (unloaded %.1f), shed %v, at the front %.1f %%, recovered after %s",
		100*r.GoodputShare, r.P99, r.UnloadedP99, r.Shed, 100*r.ShedAtFront, r.RecoveredAfter)
	if r.GoodputShare < 0.90 {
		t.Errorf("goodput %.1f %% of B's capacity, want at least 90 %%", 100*r.GoodputShare)
	}
	if r.P99 > 2*r.UnloadedP99 {
		t.Errorf("p99 of admitted requests %.1f ms, more than twice the unloaded %.1f ms", r.P99, r.UnloadedP99)
	}
	if r.ShedAtFront < 0.95 {
		t.Errorf("%.1f %% of the sheds at the front, want at least 95 %%: %v", 100*r.ShedAtFront, r.Shed)
	}
	// Recovery: one level per round from at most half the priority shed.
	if r.RecoveredAfter > 50*time.Second {
		t.Errorf("requests still shed %s after the load dropped", r.RecoveredAfter)
	}
}

// With three business priorities from URL rules, the highest keeps its
// requests while the lower ones are shed.
func TestOverloadChainPrioritiesShedLowestFirst(t *testing.T) {
	sc := chain(t, "overload-3")
	r := sim.RunChain(&sc, 1)
	t.Logf("success %v, goodput %.1f %%, at the front %.1f %%", r.Success, 100*r.GoodputShare, 100*r.ShedAtFront)
	if r.Success[100] < 0.999 {
		t.Errorf("priority 100 succeeded %.3f %%, want at least 99.9 %%", 100*r.Success[100])
	}
	if r.Success[64] > 0 && r.Success[20] > r.Success[64] {
		t.Errorf("priority 20 (%.3f) fared better than 64 (%.3f)", r.Success[20], r.Success[64])
	}
	if r.Success[64] <= r.Success[20] || r.Success[64] >= 1 {
		t.Errorf("priority 64 succeeded %.3f: the threshold should cut inside it (20: %.3f)", r.Success[64], r.Success[20])
	}
	if r.ShedAtFront < 0.95 {
		t.Errorf("%.1f %% of the sheds at the front, want at least 95 %%", 100*r.ShedAtFront)
	}
}
