// Command lbsim runs the load-balancing simulator: every scenario with every
// strategy, side by side, in simulated time, and prints each one's latency,
// errors, goodput and load imbalance, then whether Sextant's strategies meet
// their goals (docs/lb-quality.md).
//
//	go run ./loadtest/lbsim
//	go run ./loadtest/lbsim -scenario slow-5x -timeline
//	go run ./loadtest/lbsim -scenario overload     # the overload chain (docs/overload.md)
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/lbsim/sim"
)

func main() {
	only := flag.String("scenario", "", "run only these scenarios (comma-separated)")
	strategies := flag.String("strategy", "", "run only these strategies (comma-separated)")
	seed := flag.Uint64("seed", 1, "random seed")
	timeline := flag.Bool("timeline", false, "print the weights the callers received, per instance, every 10 s (central strategies)")
	flag.Parse()

	if *only == "overload" {
		runOverload(*seed)
		return
	}
	if *only == "zones" {
		if !runZones(*seed) {
			os.Exit(1)
		}
		return
	}
	scenarios := pick(sim.Scenarios(), *only, func(s sim.Scenario) string { return s.Name })
	strats := pick(sim.Strategies(), *strategies, func(s sim.Strategy) string { return s.Name })
	if len(scenarios) == 0 || len(strats) == 0 {
		fmt.Fprintln(os.Stderr, "lbsim: no such scenario or strategy")
		os.Exit(2)
	}
	start := time.Now()
	results := runAll(scenarios, strats, *seed)
	for i, sc := range scenarios {
		printScenario(&sc, results[i])
		if *timeline {
			for _, r := range results[i] {
				printTimeline(r)
			}
		}
	}
	verdict := judge(scenarios, results)
	for _, line := range verdict.lines {
		fmt.Println(line)
	}
	fmt.Printf("(simulated %d runs in %.1f s)\n", len(scenarios)*len(strats), time.Since(start).Seconds())
	fmt.Printf("lbsim: sextant-hybrid best or within 5 %% of best in %d/%d scenarios\n", verdict.hybridBest, verdict.judged)
}

func pick[T any](all []T, names string, name func(T) string) []T {
	if names == "" {
		return all
	}
	var out []T
	for _, n := range strings.Split(names, ",") {
		for _, x := range all {
			if name(x) == strings.TrimSpace(n) {
				out = append(out, x)
			}
		}
	}
	return out
}

// runAll runs every pair on all cores; results[scenario][strategy].
func runAll(scenarios []sim.Scenario, strats []sim.Strategy, seed uint64) [][]sim.Result {
	results := make([][]sim.Result, len(scenarios))
	type job struct{ i, j int }
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for jb := range jobs {
				results[jb.i][jb.j] = sim.Run(&scenarios[jb.i], strats[jb.j], sim.Options{Seed: seed})
			}
		})
	}
	for i := range scenarios {
		results[i] = make([]sim.Result, len(strats))
		for j := range strats {
			jobs <- job{i, j}
		}
	}
	close(jobs)
	wg.Wait()
	return results
}

func printScenario(sc *sim.Scenario, rs []sim.Result) {
	fmt.Printf("\n## %s: %s (%s, %d caller(s), %.0f req/s)\n", sc.Name, sc.Description, sc.Duration, sc.Callers, sc.Rate)
	fmt.Printf("%-16s %9s %9s %9s %8s %9s %9s %s\n", "strategy", "p50 ms", "p99 ms", "p99.9 ms", "errors", "goodput", "imbalance", "weights")
	for _, r := range rs {
		extra := ""
		if r.Timeline != nil && len(r.Timeline) > 0 {
			extra = fmt.Sprintf("spread %.1f %%, %d ejections (%d of healthy instances)", 100*r.WeightSpread, r.Ejections, r.HealthyEjections)
		}
		fmt.Printf("%-16s %9.1f %9.1f %9.1f %7.3f%% %9.0f %9.3f %s\n",
			r.Strategy, r.P50, r.P99, r.P999, 100*r.ErrorShare, r.Goodput, r.Imbalance, extra)
	}
}

func printTimeline(r sim.Result) {
	if len(r.Timeline) == 0 {
		return
	}
	fmt.Printf("timeline of %s / %s (weight, x = ejected), every 10 s:\n", r.Scenario, r.Strategy)
	for _, in := range r.Instances {
		pts := r.Timeline[in.ID]
		var b strings.Builder
		next := time.Duration(0)
		last := "-"
		for _, p := range pts {
			for p.At >= next {
				b.WriteString(fmt.Sprintf("%5s", last))
				next += 10 * time.Second
			}
			last = fmt.Sprint(p.Weight)
			if p.Ejected {
				last = "x"
			}
		}
		fmt.Printf("  %-8s util %.2f failed %5d maxq %5d |%s\n", in.ID, in.Utilization, in.Failed, in.MaxQueue, b.String())
	}
}

// runOverload runs the overload chains and prints their figures; the last
// line sums them up (goodput from the single-priority chain, high-priority
// success from the three-priority one, shed at the front the lower of both).
func runOverload(seed uint64) {
	start := time.Now()
	var single, three sim.ChainResult
	for _, sc := range sim.ChainScenarios() {
		r := sim.RunChain(&sc, seed)
		fmt.Printf("\n## %s: %s\n", sc.Name, sc.Description)
		fmt.Printf("goodput %.0f/s = %.1f %% of B's capacity (%.0f/s); p99 of admitted %.1f ms, unloaded %.1f ms (%.2fx)\n",
			r.Goodput, 100*r.GoodputShare, sim.BCapacity(), r.P99, r.UnloadedP99, r.P99/r.UnloadedP99)
		fmt.Printf("shed: %d at the front (its gate or before sending), %d at A's gate, %d at A before calling B, %d at B's gate: %.2f %% at the front\n",
			r.Shed[0], r.Shed[1], r.Shed[2], r.Shed[3], 100*r.ShedAtFront)
		for _, c := range sc.Classes {
			fmt.Printf("priority %3d: %6d sent, %.2f %% succeeded\n", c.Priority, r.Sent[c.Priority], 100*r.Success[c.Priority])
		}
		fmt.Printf("after the load dropped, the last request was shed %.0f s later\n", r.RecoveredAfter.Seconds())
		if len(sc.Classes) == 1 {
			single = r
		} else {
			three = r
		}
	}
	high := int32(-1)
	for p := range three.Sent {
		high = max(high, p)
	}
	fmt.Printf("(simulated in %.1f s)\n", time.Since(start).Seconds())
	fmt.Printf("overload: goodput %.1f %% of capacity, high-priority success %.2f %%, shed at the front %.1f %%\n",
		100*single.GoodputShare, 100*three.Success[high], 100*min(single.ShedAtFront, three.ShedAtFront))
}
