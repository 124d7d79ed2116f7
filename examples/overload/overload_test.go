package overload_test

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/kitex/pkg/klog"

	"github.com/sextant-mesh/sextant/examples/overload"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// long lengthens the measured spans and adds the recovery after the three
// priorities: go test ./examples/overload -run TestOverloadChain -long -v -timeout 20m
var long = flag.Bool("long", false, "run the overload chain with long measured spans (about 7 minutes)")

// The front's priority_rules (docs/config-center.md).
const rulesDoc = `{"default": 64, "rules": [
  {"name": "feed", "priority": 100, "match": {"http": {"method": "GET", "path": "/feed/*"}}},
  {"name": "comments", "priority": 64, "match": {"http": {"method": "GET", "path": "/comments/*"}}},
  {"name": "batch", "priority": 20, "match": {"http": {"method": "GET", "path": "/batch/*"}}}]}`

// Business priorities of the classes, as rulesDoc gives them.
var classPriority = map[string]int32{"feed": 100, "comments": 64, "batch": 20}

var (
	onlyComments = []overload.Class{{Name: "comments", Path: "/comments/", Share: 1}}
	threeClasses = []overload.Class{
		{Name: "feed", Path: "/feed/", Share: 0.2},
		{Name: "comments", Path: "/comments/", Share: 0.3},
		{Name: "batch", Path: "/batch/", Share: 0.5},
	}
)

// phases are the spans of the test.
type phases struct {
	baseline        time.Duration // at 30 % of B's capacity: the unloaded p99
	warm, measure   time.Duration // one priority at twice B's capacity
	quiet           time.Duration // no request shed for this long: recovered
	warm3, measure3 time.Duration // three priorities at twice B's capacity
	recover3        bool          // also the recovery after the three priorities
}

func spans() phases {
	if *long {
		return phases{baseline: 20 * time.Second, warm: 30 * time.Second, measure: 90 * time.Second, quiet: 5 * time.Second,
			warm3: 30 * time.Second, measure3: 90 * time.Second, recover3: true}
	}
	return phases{baseline: 8 * time.Second, warm: 20 * time.Second, measure: 25 * time.Second, quiet: 4 * time.Second,
		warm3: 15 * time.Second, measure3: 20 * time.Second}
}

// The generator's timeout, and how long after a span its last requests
// may still be in flight.
const (
	timeout = time.Second
	settle  = timeout + 200*time.Millisecond
)

// startPlane starts etcd, mesh-core, the calculator and the mixer on
// loopback, each stopped when the test ends; the calculator runs with the
// default knobs.
func startPlane(t *testing.T) (overload.ControlPlane, *calculator.Calculator) {
	etcd, prefix := testenv.StartEtcd(t), testenv.Prefix(t)
	meshHTTP, meshKitex := testenv.FreeAddr(t), testenv.FreeAddr(t)
	coretest.Start(t, etcd, prefix, func(c *core.Config) { c.HTTPAddr, c.KitexAddr = meshHTTP, meshKitex })
	calc := calculatortest.Start(t, etcd, prefix, "calc-1", func(c *calculator.Config) { c.MeshCoreAddr = meshKitex })
	mx := mixertest.Start(t, etcd, prefix, nil)
	tokens := map[string]string{}
	for _, s := range []string{overload.FrontService, overload.AService, overload.BService} {
		tokens[s] = testenv.ServiceToken(t, etcd, prefix, s)
	}
	return overload.ControlPlane{MeshCore: meshHTTP, Mixer: mx.Addr(), Window: time.Second, Tokens: tokens}, calc
}

// Overload end to end over real Kitex and Hertz services: front (Hertz,
// the edge, priorities from priority rules) -> A (Kitex) -> B (Kitex, 8
// workers x 20 ms on average, gamma distributed as in the simulator: 400
// requests/s; 4 workers under the race detector),
// against the real control plane with the default knobs, driven open loop
// from the front.
//
//   - One business priority at twice B's capacity: goodput as a share of
//     B's capacity after a warm-up, the p99 of the requests served against
//     the same chain at 30 % of its capacity, and where the requests were
//     shed: at the front before any work, or at A or B.
//   - The load drops to half B's capacity: the time until no request is
//     shed, within the documented bound (one level a round while
//     recovering, rounds of a window, 1 s).
//   - Three business priorities from URL rules (feed 100, comments 64,
//     batch 20) at twice B's capacity: the success ratio of feed while the
//     others still come.
//
// Bounds are generous (a 2-core machine running other tests); the goals
// of the issue (goodput 90 %, p99 at most twice the unloaded p99, high
// priority 99.9 %, shed at the front 95 %) are logged against what was
// measured. The p99 is not asserted: under the race detector on a busy
// machine the whole chain slows, not only B's queue.
func TestOverloadChain(t *testing.T) {
	// Kitex logs every failed request at error level, and this test fails
	// many on purpose (the timeouts of the overload): its outcomes are
	// counted instead. Levels are set before any server starts.
	logx.QuietFrameworks()
	klog.SetLevel(klog.LevelFatal)
	ph := spans()
	cp, calc := startPlane(t)
	cfg := overload.Config{BWorkers: 8, BCost: 20 * time.Millisecond, BVariable: true, AWork: time.Millisecond,
		FrontTimeout: 950 * time.Millisecond, ATimeout: 900 * time.Millisecond, Rules: []byte(rulesDoc), Log: logx.Discard()}
	if raceDetector {
		cfg.BWorkers = 4 // 200 requests/s
	}
	capacity := cfg.Capacity()
	t.Logf("B: %d workers x %s, capacity %.0f requests/s (race detector: %v)", cfg.BWorkers, cfg.BCost, capacity, raceDetector)
	ch, err := overload.Start(cp, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ch.Close)
	testenv.Eventually(t, 30*time.Second, ch.Ready)

	rec := &overload.Recorder{}
	load := overload.NewLoad(ch.FrontAddr(), timeout)
	load.Set(0.3*capacity, onlyComments)
	ctx, cancel := context.WithCancel(context.Background())
	sending := load.Run(ctx, rec)
	var logging sync.WaitGroup
	logging.Go(func() { monitor(ctx, t, ch, calc, rec, load) })
	t.Cleanup(func() { // before the chain stops
		cancel()
		sending.Wait()
		logging.Wait()
		load.CloseIdle()
	})

	// The calculator owns every service of the chain and is past its
	// warm-up: its decisions reach the chain from here on.
	testenv.Eventually(t, 60*time.Second, func() error {
		for _, s := range []string{overload.FrontService, overload.AService, overload.BService} {
			if d, ok := calc.Decision(s); !ok || d.OwnershipWarmup {
				return fmt.Errorf("no decision for %s yet", s)
			}
		}
		return nil
	})

	// Unloaded: 30 % of B's capacity.
	from := time.Now()
	time.Sleep(ph.baseline + settle)
	base := rec.Window(from, from.Add(ph.baseline))
	t.Logf("unloaded (%.0f requests/s, 30 %% of B's capacity %.0f/s): %s", 0.3*capacity, capacity, describe(base))
	if base.ByOutcome[overload.OK] == 0 {
		t.Fatalf("nothing served unloaded: %s (last error %q)", describe(base), base.LastErr)
	}

	// One business priority at twice B's capacity.
	load.Set(2*capacity, onlyComments)
	from = time.Now()
	served0, late0 := ch.BServed()
	time.Sleep(ph.warm)
	served1, late1 := ch.BServed()
	time.Sleep(ph.measure)
	served2, late2 := ch.BServed()
	levels := ch.Levels()
	over := rec.Window(from.Add(ph.warm), from.Add(ph.warm+ph.measure))

	// The load drops to half B's capacity: until no request is shed.
	load.Set(0.5*capacity, onlyComments)
	dropped := time.Now()
	rounds := roundsToRecover(levels.Max(), []int32{classPriority["comments"]})
	bound := time.Duration(rounds)*time.Second*3/2 + 20*time.Second
	recovered := waitRecovered(t, rec, dropped, ph.quiet, bound)

	goodput := over.Goodput() / capacity
	p99, p99base := over.Quantile(0.99), base.Quantile(0.99)
	t.Logf("one priority at 2x (%.0f/s), after %s of warm-up, over %s: %s", 2*capacity, ph.warm, ph.measure, describe(over))
	t.Logf("goodput %.1f %% of B's capacity (goal 90 %%); p99 of the requests served %s, unloaded %s (x%.1f); shed %d: %.1f %% at the front before any work (goal 95 %%): %s",
		100*goodput, p99, p99base, float64(p99)/float64(max(p99base, 1)), over.ShedTotal(), 100*over.ShedAtFront(), shedPlaces(over))
	t.Logf("p99 of the requests served by quarter of their admission levels, lowest first: %v", round(over.QuantileByLevel(0.99, 4)))
	t.Logf("B's work after its caller's deadline (wasted): %d of %d requests in the warm-up, %d of %d in the measured span",
		late1-late0, served1-served0, late2-late1, served2-served1)
	t.Logf("after the load dropped to %.0f/s: levels in force at the drop %+v (%d rounds to come down); last request shed %s after the drop (bound %s)",
		0.5*capacity, levels, rounds, recovered.Round(100*time.Millisecond), bound)

	// Three business priorities at twice B's capacity.
	load.Set(2*capacity, threeClasses)
	from = time.Now()
	time.Sleep(ph.warm3)
	served3, _ := ch.BServed()
	time.Sleep(ph.measure3)
	served4, _ := ch.BServed()
	levels3 := ch.Levels()
	three := rec.Window(from.Add(ph.warm3), from.Add(ph.warm3+ph.measure3))
	var recovered3, bound3 time.Duration
	if ph.recover3 {
		load.Set(0.5*capacity, threeClasses)
		dropped := time.Now()
		var present []int32
		for _, p := range classPriority {
			present = append(present, p)
		}
		rounds := roundsToRecover(levels3.Max(), present)
		bound3 = time.Duration(rounds)*time.Second*3/2 + 20*time.Second
		recovered3 = waitRecovered(t, rec, dropped, ph.quiet, bound3)
		t.Logf("three priorities, after the load dropped: levels %+v (%d rounds to come down); last request shed %s after the drop (bound %s)",
			levels3, rounds, recovered3.Round(100*time.Millisecond), bound3)
	}
	t.Logf("three priorities at 2x, after %s of warm-up, over %s: %s", ph.warm3, ph.measure3, describe(three))
	// B busy near its capacity: B was the bottleneck. Far below it while
	// requests time out: this process had too little CPU to bring them to B.
	bRate3 := float64(served4-served3) / ph.measure3.Seconds()
	t.Logf("  B ran %.0f requests/s (%.0f %% of its capacity)", bRate3, 100*bRate3/capacity)
	for _, c := range threeClasses {
		t.Logf("  %-8s (priority %3d): %5d sent, success %.2f %%", c.Name, classPriority[c.Name], three.SentBy[c.Name], 100*three.Success(c.Name))
	}
	high := three.Success("feed")
	t.Logf("goodput %.1f %% of capacity; high priority success %.3f %% (goal 99.9 %%) while comments %.1f %% and batch %.1f %% succeed; shed at the front %.1f %%; levels %+v",
		100*three.Goodput()/capacity, 100*high, 100*three.Success("comments"), 100*three.Success("batch"), 100*three.ShedAtFront(), levels3)

	line := fmt.Sprintf("overload: goodput %.1f %% of capacity, high-priority success %.2f %%, shed at the front %.1f %% (p99 %s vs %s unloaded, recovered in %s)",
		100*goodput, 100*high, 100*over.ShedAtFront(), p99, p99base, recovered.Round(100*time.Millisecond))
	t.Log(line)
	fmt.Println(line)

	// Generous bounds: the goals are logged above.
	if goodput < 0.70 {
		t.Errorf("goodput %.1f %% of B's capacity at twice the capacity, want at least 70 %%", 100*goodput)
	}
	if over.ShedTotal() == 0 || over.ShedAtFront() < 0.80 {
		t.Errorf("%.1f %% of %d shed requests were shed at the front, want at least 80 %%: %s", 100*over.ShedAtFront(), over.ShedTotal(), shedPlaces(over))
	}
	if three.SentBy["comments"] == 0 || three.SentBy["batch"] == 0 || high < 0.99 {
		t.Errorf("high priority success %.3f %% (%d sent; comments %d, batch %d sent), want at least 99 %%; B ran %.0f %% of its capacity",
			100*high, three.SentBy["feed"], three.SentBy["comments"], three.SentBy["batch"], 100*bRate3/capacity)
	}
	if recovered > bound {
		t.Errorf("requests were still shed %s after the load dropped, want within %s", recovered, bound)
	}
	if recovered3 > bound3 {
		t.Errorf("three priorities: requests were still shed %s after the load dropped, want within %s", recovered3, bound3)
	}
}

// roundsToRecover is how many rounds a threshold at level takes to come
// down until no request of the business priorities present is shed, as
// docs/overload.md describes recovering: one level a round within a
// business priority whose requests carry user priorities (recover_step
// 0.01 x 64 levels, at least one), from the bottom of one to the top of
// the next lower priority present.
func roundsToRecover(level int32, present []int32) int {
	lowest := int32(sdk.UserPriorities * 128)
	for _, p := range present {
		lowest = min(lowest, p*sdk.UserPriorities)
	}
	rounds := 0
	for level > lowest {
		bottom := level / sdk.UserPriorities * sdk.UserPriorities
		if level > bottom {
			level--
		} else {
			next := int32(0)
			for _, p := range present {
				if top := p*sdk.UserPriorities + sdk.UserPriorities - 1; top < level && top > next {
					next = top
				}
			}
			level = next
		}
		rounds++
	}
	return rounds
}

// waitRecovered waits until no request sent after dropped was shed for
// quiet, and returns how long after dropped the last one was shed; it
// fails the test past bound.
func waitRecovered(t *testing.T, rec *overload.Recorder, dropped time.Time, quiet, bound time.Duration) time.Duration {
	t.Helper()
	for {
		time.Sleep(200 * time.Millisecond)
		done := time.Now().Add(-settle) // every request sent before it has its outcome
		s := rec.Window(dropped, done)
		last := dropped
		if s.LastShed.After(last) {
			last = s.LastShed
		}
		if done.Sub(last) >= quiet && s.ByOutcome[overload.OK] > 0 {
			return last.Sub(dropped)
		}
		if time.Since(dropped) > bound+quiet+settle+5*time.Second {
			t.Errorf("still shedding %s after the load dropped (bound %s): %s", time.Since(dropped).Round(time.Second), bound, describe(rec.Window(done.Add(-2*time.Second), done)))
			return time.Since(dropped)
		}
	}
}

func describe(s overload.Summary) string {
	out := fmt.Sprintf("%d sent, %.0f served/s, %d shed (%s), %d timed out, %d failed; served p50 %s p99 %s",
		s.Sent, s.Goodput(), s.ShedTotal(), shedPlaces(s), s.ByOutcome[overload.TimedOut], s.ByOutcome[overload.Failed],
		s.Quantile(0.5).Round(100*time.Microsecond), s.Quantile(0.99).Round(100*time.Microsecond))
	if s.LastErr != "" {
		out += fmt.Sprintf(" (last failure: %s)", s.LastErr)
	}
	return out
}

func shedPlaces(s overload.Summary) string {
	var parts []string
	for p := range overload.Places {
		if s.ShedAt[p] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", p, s.ShedAt[p]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// monitor logs, every 5 s, the last seconds of load and the calculator's
// decisions, until ctx ends.
func monitor(ctx context.Context, t *testing.T, ch *overload.Chain, calc *calculator.Calculator, rec *overload.Recorder, load *overload.Load) {
	const every = 5 * time.Second
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			to := now.Add(-settle)
			s := rec.Window(to.Add(-every), to)
			var ds []string
			for _, svc := range []string{overload.FrontService, overload.AService, overload.BService} {
				if d, ok := calc.Decision(svc); ok {
					o := d.Overload
					ds = append(ds, fmt.Sprintf("%s %s level %d shed %.2f (queue %.1f ms, cpu %.2f, timeouts %.3f%s)",
						svc, o.State, o.AdmitMinLevel, o.ShedTarget, o.QueueTimeMs, o.CPU, o.TimeoutRatio, reason(o.Reason)))
				}
			}
			t.Logf("[%.0f/s] %s | levels %+v | %s", load.Rate(), describe(s), ch.Levels(), strings.Join(ds, "; "))
		}
	}
}

func round(ds []time.Duration) []time.Duration {
	for i := range ds {
		ds[i] = ds[i].Round(100 * time.Microsecond)
	}
	return ds
}

func reason(r string) string {
	if r == "" {
		return ""
	}
	return ", " + r
}
