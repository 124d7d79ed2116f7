package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/lbsim/sim"
)

// runZones runs the zone-aware routing scenarios with their strategies,
// prints each table with where the callers' requests went, checks the
// goals, and says whether all were met.
func runZones(seed uint64) bool {
	start := time.Now()
	scenarios, strats := sim.ZoneScenarios(), sim.ZoneStrategies()
	results := runAll(scenarios, strats, seed)
	for i, sc := range scenarios {
		fmt.Printf("\n## %s: %s (%s, %d callers, %.0f req/s, +%s across zones)\n",
			sc.Name, sc.Description, sc.Duration, sc.Callers, sc.Rate, sc.CrossZoneRTT)
		fmt.Printf("%-16s %9s %9s %9s %8s %9s %9s %s\n", "strategy", "p50 ms", "p99 ms", "p99.9 ms", "errors", "imbalance", "crossing", "kept in the callers' zone")
		for _, r := range results[i] {
			fmt.Printf("%-16s %9.1f %9.1f %9.1f %7.3f%% %9.3f %8.1f%% %s\n",
				r.Strategy, r.P50, r.P99, r.P999, 100*r.ErrorShare, r.Imbalance, 100*r.CrossZone, localShares(r))
		}
	}
	ok := true
	check := func(good bool, format string, args ...any) {
		mark := "ok  "
		if !good {
			mark, ok = "MISS", false
		}
		fmt.Printf("%s %s\n", mark, fmt.Sprintf(format, args...))
	}
	fmt.Println("\n## goals")
	for i, sc := range scenarios {
		by := map[string]sim.Result{}
		for _, r := range results[i] {
			by[r.Strategy] = r
		}
		z, h := by["sextant-zoned"], by["sextant-hybrid"]
		check(z.ErrorShare <= h.ErrorShare+0.0001 && z.P99 <= 1.05*h.P99,
			"%s: sextant-zoned p99 %.1f ms, errors %.3f %% vs sextant-hybrid %.1f ms, %.3f %% (no worse)",
			sc.Name, z.P99, 100*z.ErrorShare, h.P99, 100*h.ErrorShare)
		switch sc.Name {
		case "zones-40":
			// Local first costs balance, not latency: the zones run unevenly, both below the headroom.
			busiest := 0.0
			for _, in := range z.Instances {
				busiest = max(busiest, in.Utilization)
			}
			check(busiest <= 0.8, "%s: sextant-zoned busiest instance at %.0f %% utilization (<= the 80 %% headroom; imbalance %.3f)", sc.Name, 100*busiest, z.Imbalance)
			check(z.LocalShare["zone-a"] >= 0.99 && z.LocalShare["zone-b"] >= 0.99,
				"%s: sextant-zoned keeps the callers' requests in their zone while it has capacity: %s (>= 99 %%)", sc.Name, localShares(z))
		case "zones-80":
			check(z.Imbalance <= 1.10, "%s: sextant-zoned load imbalance %.3f (<= 1.10: the spill keeps the zones even)", sc.Name, z.Imbalance)
			check(z.LocalShare["zone-a"] >= 0.99, "%s: zone a covers its callers: %.1f %% kept (>= 99 %%)", sc.Name, 100*z.LocalShare["zone-a"])
			// zone b serves 0.8 x 1600 of its callers' 1600 requests/s at the 80 % headroom.
			b := z.LocalShare["zone-b"]
			check(b >= 0.75 && b <= 0.85, "%s: zone b keeps what it can below the headroom and spills the rest: %.1f %% kept (80 %% +- 5)", sc.Name, 100*b)
		}
	}
	fmt.Printf("(simulated %d runs in %.1f s)\n", len(scenarios)*len(strats), time.Since(start).Seconds())
	z40, z80 := results[0][slices.IndexFunc(strats, isZoned)], results[1][slices.IndexFunc(strats, isZoned)]
	fmt.Printf("zones: kept in zone %s at 40 %% load, %s at 80 %%; crossing %.1f %% and %.1f %% (sextant-hybrid: %.1f %%, %.1f %%)\n",
		localShares(z40), localShares(z80), 100*z40.CrossZone, 100*z80.CrossZone,
		100*results[0][slices.IndexFunc(strats, isHybrid)].CrossZone, 100*results[1][slices.IndexFunc(strats, isHybrid)].CrossZone)
	return ok
}

func isZoned(s sim.Strategy) bool  { return s.Name == "sextant-zoned" }
func isHybrid(s sim.Strategy) bool { return s.Name == "sextant-hybrid" }

func localShares(r sim.Result) string {
	zones := make([]string, 0, len(r.LocalShare))
	for z := range r.LocalShare {
		zones = append(zones, z)
	}
	slices.Sort(zones)
	var parts []string
	for _, z := range zones {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", z, 100*r.LocalShare[z]))
	}
	return strings.Join(parts, ", ")
}
