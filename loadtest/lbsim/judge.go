package main

import (
	"fmt"
	"strings"

	"github.com/sextant-mesh/sextant/loadtest/lbsim/sim"
)

type verdict struct {
	lines              []string
	hybridBest, judged int
}

// Local strategies, the baselines Sextant's must beat.
var local = map[string]bool{"equal": true, "a58-wrr": true, "p2c-ewma": true, "least-request": true}

// judge checks the goals of docs/lb-quality.md on the results.
func judge(scenarios []sim.Scenario, results [][]sim.Result) verdict {
	var v verdict
	add := func(ok bool, format string, args ...any) {
		mark := "ok  "
		if !ok {
			mark = "MISS"
		}
		v.lines = append(v.lines, mark+" "+fmt.Sprintf(format, args...))
	}
	v.lines = append(v.lines, "", "## goals")
	for i, sc := range scenarios {
		by := map[string]sim.Result{}
		for _, r := range results[i] {
			by[r.Strategy] = r
		}
		hybrid, hasHybrid := by["sextant-hybrid"]
		central, hasCentral := by["sextant-central"]
		a58, hasA58 := by["a58-wrr"]
		if hasCentral && hasA58 {
			add(central.P99 <= 1.05*a58.P99 && central.ErrorShare <= a58.ErrorShare+0.0001,
				"%s: sextant-central p99 %.1f ms, errors %.3f %% vs a58-wrr %.1f ms, %.3f %% (no worse)",
				sc.Name, central.P99, 100*central.ErrorShare, a58.P99, 100*a58.ErrorShare)
		}
		if hasHybrid && len(results[i]) > 1 {
			best := results[i][0]
			for _, r := range results[i] {
				if r.P99 < best.P99 {
					best = r
				}
			}
			ok := hybrid.P99 <= 1.05*best.P99
			v.judged++
			if ok {
				v.hybridBest++
			}
			add(ok, "%s: sextant-hybrid p99 %.1f ms, best %s %.1f ms (within 5 %%)", sc.Name, hybrid.P99, best.Strategy, best.P99)
			if sc.Name == "many-callers" || sc.Name == "fast-failure" {
				worse := beaten(results[i], func(r sim.Result) bool { return sim.StrictlyBetter(hybrid, r) })
				add(len(worse) == 0, "%s: sextant-hybrid strictly better than every local rule (fewer errors, p99 and p99.9 within 5 %%)%s",
					sc.Name, missing(worse))
			}
		}
		for _, r := range results[i] {
			if r.Timeline == nil || len(r.Timeline) == 0 {
				continue
			}
			if strings.HasPrefix(sc.Name, "hetero") {
				add(r.Imbalance <= 1.05, "%s: %s load imbalance %.3f (<= 1.05)", sc.Name, r.Strategy, r.Imbalance)
			}
			if sc.Name == "hetero-95" {
				add(r.HealthyEjections == 0, "%s: %s ejected a healthy instance %d times (never)", sc.Name, r.Strategy, r.HealthyEjections)
			}
			add(r.WeightSpread <= 0.10, "%s: %s weights of identical healthy instances within %.1f %% of their mean (<= 10 %%)",
				sc.Name, r.Strategy, 100*r.WeightSpread)
		}
	}
	return v
}

// beaten lists the local strategies for which better(r) is false.
func beaten(rs []sim.Result, better func(sim.Result) bool) []string {
	var out []string
	for _, r := range rs {
		if local[r.Strategy] && !better(r) {
			out = append(out, r.Strategy)
		}
	}
	return out
}

func missing(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return " (not below " + strings.Join(names, ", ") + ")"
}
