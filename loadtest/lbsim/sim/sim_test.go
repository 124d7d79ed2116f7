package sim_test

import (
	"slices"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/lbsim/sim"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// These tests drive the calculator's own code through the simulator, in
// simulated time with fixed seeds: they fail when a mechanism of
// docs/weights.md regresses, whatever the machine's speed.

func scenario(t *testing.T, name string, d time.Duration) sim.Scenario {
	t.Helper()
	sc, ok := sim.ScenarioByName(name)
	if !ok {
		t.Fatalf("no scenario %q", name)
	}
	if d > 0 {
		sc.Duration = d
	}
	return sc
}

func strategy(t *testing.T, name string) sim.Strategy {
	t.Helper()
	st, ok := sim.StrategyByName(name)
	if !ok {
		t.Fatalf("no strategy %q", name)
	}
	return st
}

// episodes are the ejections of one instance as the callers saw them: start and end.
func episodes(points []sim.WeightPoint) [][2]time.Duration {
	var out [][2]time.Duration
	in := false
	for _, p := range points {
		switch {
		case p.Ejected && !in:
			out = append(out, [2]time.Duration{p.At, 0})
			in = true
		case !p.Ejected && in:
			out[len(out)-1][1] = p.At
			in = false
		}
	}
	if in {
		out = out[:len(out)-1] // still ejected at the end: length unknown
	}
	return out
}

func TestPanicThresholdKeepsInstancesTheOthersCannotDoWithout(t *testing.T) {
	// 10 instances at 85 % of their capacity; 3 fail 10 % of their calls.
	// Ejecting even one would leave the rest above 90 % utilization.
	sc := scenario(t, "slow-5x", 2*time.Minute)
	sc.Rate = 0.85 * 10 * sc.Instances[0].Capacity()
	for _, i := range []int{2, 5, 8} {
		sc.Instances[i].Behave = func(time.Duration) sim.Behavior { return sim.Behavior{Slowdown: 1, ErrRate: 0.10} }
	}
	sc.Instances[3].Behave = nil
	central := strategy(t, "sextant-central")

	r := sim.Run(&sc, central, sim.Options{Seed: 7})
	if r.Ejections != 0 {
		t.Errorf("with the panic threshold: %d ejections, want none (the others could not carry the load)", r.Ejections)
	}
	// The same loop without the threshold ejects: the check above can fail.
	k := calculator.DefaultKnobs()
	k.PanicUtilization = 1
	k.MaxEjectionPercent = 100
	k.ErrorUtilizationPenalty = 1
	loose := sim.Run(&sc, central, sim.Options{Seed: 7, Knobs: &k})
	if loose.Ejections == 0 {
		t.Errorf("panic_utilization 1: no ejection at all; the scenario does not exercise the threshold")
	}

	// At 95 % of a heterogeneous service's capacity, no healthy instance is ever ejected.
	hot := scenario(t, "hetero-95", 2*time.Minute)
	if r := sim.Run(&hot, central, sim.Options{Seed: 7}); r.HealthyEjections != 0 {
		t.Errorf("hetero-95: %d ejections of healthy instances, want none", r.HealthyEjections)
	}
}

func TestEjectionsOfARepeatOffenderGrowLonger(t *testing.T) {
	sc := scenario(t, "slow-5x", 8*time.Minute)
	r := sim.Run(&sc, strategy(t, "sextant-central"), sim.Options{Seed: 3})
	eps := episodes(r.Timeline["i-03"])
	if len(eps) < 3 {
		t.Fatalf("the slow instance was ejected %d times in 8 minutes, want at least 3: %v", len(eps), eps)
	}
	k := calculator.DefaultKnobs()
	base := time.Duration(k.EjectionMs) * time.Millisecond
	for i, e := range eps {
		got := e[1] - e[0]
		want := min(base*time.Duration(i+1), time.Duration(k.MaxEjectionMs)*time.Millisecond)
		// Seen by the callers: within a round and the delivery delays; the
		// first may have begun during the calculator's ownership warm-up.
		if (got < want-2*time.Second && i > 0) || got > want+3*time.Second {
			t.Errorf("ejection %d lasted %s, want about %s (ejection_ms x %d): %v", i+1, got, want, i+1, eps)
		}
	}
}

func TestInstanceBackFromEjectionStartsLowAndIsNotFlooded(t *testing.T) {
	sc := scenario(t, "slow-5x", 5*time.Minute)
	r := sim.Run(&sc, strategy(t, "sextant-central"), sim.Options{Seed: 5})
	pts := r.Timeline["i-03"]
	returns := 0
	for i := 1; i < len(pts); i++ {
		if !pts[i-1].Ejected || pts[i].Ejected {
			continue
		}
		returns++
		healthy := medianWeightAt(r, pts[i].At)
		if float64(pts[i].Weight) > 0.15*healthy {
			t.Errorf("back from ejection at %s with weight %d, want at most 15 %% of the healthy median %.0f", pts[i].At, pts[i].Weight, healthy)
		}
	}
	if returns == 0 {
		t.Fatal("the slow instance never came back from ejection")
	}
	slow := r.Instances[3]
	// Its capacity is 80 requests/s; flooded, its queue would pass hundreds
	// and its requests time out by the hundred.
	if share := float64(slow.Failed) / float64(max(slow.Served, 1)); share > 0.10 {
		t.Errorf("the slow instance failed %d of %d requests (%.0f %%): flooded after a return", slow.Failed, slow.Served, 100*share)
	}
	if r.P99 > 80 {
		t.Errorf("p99 %.1f ms, want under 80 ms (the healthy instances' p99 is about 50)", r.P99)
	}
}

func medianWeightAt(r sim.Result, at time.Duration) float64 {
	var ws []float64
	for id, pts := range r.Timeline {
		if id == "i-03" {
			continue
		}
		for i := len(pts) - 1; i >= 0; i-- {
			if pts[i].At <= at {
				ws = append(ws, float64(pts[i].Weight))
				break
			}
		}
	}
	slices.Sort(ws)
	if len(ws) == 0 {
		return 0
	}
	return ws[len(ws)/2]
}

func TestWeightsOfIdenticalHealthyInstancesStayClose(t *testing.T) {
	for _, name := range []string{"slow-5x", "hetero-80"} {
		sc := scenario(t, name, 3*time.Minute)
		r := sim.Run(&sc, strategy(t, "sextant-central"), sim.Options{Seed: 11})
		if r.WeightSpread > 0.10 {
			t.Errorf("%s: weights of identical healthy instances up to %.1f %% from their mean, want at most 10 %%", name, 100*r.WeightSpread)
		}
		if name == "hetero-80" && r.Imbalance > 1.05 {
			t.Errorf("%s: load imbalance %.3f, want at most 1.05", name, r.Imbalance)
		}
	}
}

func TestHybridBeatsEveryLocalRuleWhereTheCentralViewKnowsMore(t *testing.T) {
	for _, name := range []string{"many-callers", "fast-failure"} {
		sc := scenario(t, name, 2*time.Minute)
		hybrid := sim.Run(&sc, strategy(t, "sextant-hybrid"), sim.Options{Seed: 1})
		for _, local := range []string{"equal", "a58-wrr", "p2c-ewma", "least-request"} {
			r := sim.Run(&sc, strategy(t, local), sim.Options{Seed: 1})
			if !sim.StrictlyBetter(hybrid, r) {
				t.Errorf("%s: hybrid errors %.3f %%, p99 %.1f ms, p99.9 %.1f ms; %s %.3f %%, %.1f ms, %.1f ms", name,
					100*hybrid.ErrorShare, hybrid.P99, hybrid.P999, local, 100*r.ErrorShare, r.P99, r.P999)
			}
		}
	}
}

func TestRunsAreDeterministic(t *testing.T) {
	sc := scenario(t, "flapping", time.Minute)
	a := sim.Run(&sc, strategy(t, "sextant-hybrid"), sim.Options{Seed: 9})
	b := sim.Run(&sc, strategy(t, "sextant-hybrid"), sim.Options{Seed: 9})
	if a.P99 != b.P99 || a.ErrorShare != b.ErrorShare || a.Goodput != b.Goodput || a.Ejections != b.Ejections {
		t.Errorf("same seed, different runs: %+v vs %+v", a, b)
	}
}
