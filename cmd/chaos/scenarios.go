package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/sdk"
)

type options struct {
	fault, policyTTL, recoveryBound time.Duration
	rate                            int
}

// scenario is one fault: inject starts it, heal ends it.
type scenario struct {
	name         string
	inject, heal func(ctx context.Context, p *plane, l *load) error
	// outage marks a fault that takes etcd away from mesh-core: it lasts
	// longer than the policy TTL, since time while etcd is away must not
	// count towards it.
	outage bool
	// hold is how long the fault lasts when not -fault (or, for an
	// outage, the policy TTL and 5 s more).
	hold time.Duration
	// lossBound is how many windows each backend reporter had accepted
	// (answered 202) that may not reach the calculator: 0 but where a
	// crash may lose what the mixer held (docs/architecture.md, "What a
	// crash loses"); -1 when the calculator restarts (its totals start
	// again), which leaves the count unchecked, and says so.
	lossBound int64
	// check asserts what is particular to the fault, once recovered.
	check func(ctx context.Context, p *plane, l *load, before *faultState) []string
}

// faultState is what a check compares with: taken as the fault began.
type faultState struct {
	relists   map[string]int // "listing again" after compaction, per service log
	corrected float64        // the mixer's reports_clock_corrected_total
	windows   map[string]calcTotals
}

// shortScenarios are the short form's, which `make test` runs.
var shortScenarios = []string{"mesh-core-sigkill", "etcd-member-lost"}

func killRestart(pick func(*plane) *process) (inject, heal func(context.Context, *plane, *load) error) {
	return func(_ context.Context, p *plane, _ *load) error { pick(p).Kill(); return nil },
		func(ctx context.Context, p *plane, _ *load) error { return p.restart(ctx, pick(p)) }
}

func cutAll(links []*proxy, cut bool) {
	for _, px := range links {
		px.Cut(cut)
	}
}

// packetLoss is the loss of the packet-loss scenario (lossModel says what
// is emulated): on every link the suite proxies.
var packetLoss = lossModel{Hold: 0.15, Reset: 0.01, RTOMin: 200 * time.Millisecond, RTOMax: 400 * time.Millisecond}

// The clocks of the clock-skew scenario's data planes.
const (
	skewAhead  = 3 * time.Minute
	skewBehind = -2 * time.Minute
)

func scenarios() []scenario {
	var list []scenario
	for _, s := range []struct {
		name      string
		pick      func(*plane) *process
		lossBound int64
	}{
		{"mesh-core-sigkill", func(p *plane) *process { return p.meshCore }, 0},
		{"calculator-sigkill", func(p *plane) *process { return p.calculator }, -1},
		// What the mixer accepted in its last flush interval (100 ms), at
		// most one window of each reporter (they send one a second).
		{"mixer-sigkill", func(p *plane) *process { return p.mixer }, 1},
		{"config-center-sigkill", func(p *plane) *process { return p.center }, 0},
	} {
		inject, heal := killRestart(s.pick)
		list = append(list, scenario{name: s.name, inject: inject, heal: heal, lossBound: s.lossBound})
	}
	restartMember := func(ctx context.Context, p *plane, members ...*process) error {
		for _, e := range members {
			if err := e.Start(); err != nil {
				return err
			}
		}
		return p.waitEtcd(ctx, 60*time.Second)
	}
	list = append(list,
		scenario{name: "etcd-member-lost",
			inject: func(_ context.Context, p *plane, _ *load) error { p.etcd[2].Kill(); return nil },
			heal:   func(ctx context.Context, p *plane, _ *load) error { return restartMember(ctx, p, p.etcd[2]) }},
		scenario{name: "etcd-quorum-lost", outage: true,
			inject: func(_ context.Context, p *plane, _ *load) error { p.etcd[1].Kill(); p.etcd[2].Kill(); return nil },
			heal:   func(ctx context.Context, p *plane, _ *load) error { return restartMember(ctx, p, p.etcd[1:]...) }},
		scenario{name: "mesh-core-etcd-partition", outage: true,
			inject: func(_ context.Context, p *plane, _ *load) error { cutAll(p.etcdLinks["mesh-core"], true); return nil },
			heal:   func(_ context.Context, p *plane, _ *load) error { cutAll(p.etcdLinks["mesh-core"], false); return nil }},
		scenario{name: "mixer-calculator-latency",
			inject: func(_ context.Context, p *plane, _ *load) error { p.calcLink.Delay(300 * time.Millisecond); return nil },
			heal:   func(_ context.Context, p *plane, _ *load) error { p.calcLink.Delay(0); return nil }},
		scenario{name: "influxdb-away",
			inject: func(_ context.Context, p *plane, _ *load) error {
				if p.influx == nil {
					return fmt.Errorf("cannot run without influxd (make bin/influxd builds it): %v", p.influxErr)
				}
				_ = syscall.Kill(p.influx.Pid(), syscall.SIGKILL)
				p.influx.Stop() // reaps it
				return nil
			},
			heal: func(_ context.Context, p *plane, _ *load) error {
				if p.influx == nil {
					return nil
				}
				return p.influx.Restart()
			}},
		// Compaction to the current revision and defragmentation of every
		// member while the load runs; then every service's connections to
		// etcd are reset, so that each watch resumes from a revision that
		// compaction took away and must list its prefix again.
		scenario{name: "etcd-compact-defrag",
			inject: func(ctx context.Context, p *plane, _ *load) error { return p.compactAndDefrag(ctx) },
			heal:   func(context.Context, *plane, *load) error { return nil },
			check: func(ctx context.Context, p *plane, _ *load, before *faultState) []string {
				// A watch resumes once its client has reconnected: give the
				// slowest (gRPC's reconnection backoff) up to 30 s.
				var out []string
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
					out = nil
					for name, n := range p.relists() {
						if n <= before.relists[name] {
							out = append(out, fmt.Sprintf("%s: no watch listed its prefix again after the compaction (%q in its log)", name, relistLine))
						}
					}
					if len(out) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
						return out
					}
				}
			}},
		// Packet loss (lossModel) on every link the suite proxies: the
		// services' links to etcd, the mixer's to the calculator, and the
		// data planes' to mesh-core, the mixer and the config-center.
		scenario{name: "packet-loss", hold: 10 * time.Second,
			inject: func(_ context.Context, p *plane, _ *load) error {
				for _, px := range p.links() {
					px.held.Store(0)
					px.resets.Store(0)
					px.Loss(packetLoss)
				}
				return nil
			},
			heal: func(_ context.Context, p *plane, _ *load) error {
				var held, resets int64
				for _, px := range p.links() {
					px.Loss(lossModel{})
					held, resets = held+px.held.Load(), resets+px.resets.Load()
				}
				fmt.Printf("  packet-loss: %d chunks held 200 to 400 ms, %d connections reset\n", held, resets)
				return nil
			}},
		// The data planes cut from the control plane (mesh-core's HTTP and
		// poll ports, the mixer, the config-center); calls between them go
		// on, on the last weights; reports wait in the reporters' buffers.
		scenario{name: "data-planes-partitioned",
			inject: func(_ context.Context, p *plane, _ *load) error { cutAll(p.dpLinks(), true); return nil },
			heal: func(_ context.Context, p *plane, l *load) error {
				pending, running := 0, l.running()
				for _, r := range running {
					pending += r.Stats().Pending
				}
				cutAll(p.dpLinks(), false)
				if pending < len(running) {
					return fmt.Errorf("%d windows waited in the reporters at the end of the partition, want them all buffered (at least one each)", pending)
				}
				fmt.Printf("  data-planes-partitioned: %d windows buffered in the reporters at the heal\n", pending)
				return nil
			}},
		// Two more chaos-front data planes, one with a clock 3 min ahead,
		// one 2 min behind, call backend as the first does: every window
		// of theirs must be accepted and land where the others of its time
		// do (no record late at the calculator, no weight moved), by the
		// mixer's correction (api.HeaderSentAt).
		scenario{name: "clock-skew",
			inject: func(ctx context.Context, _ *plane, l *load) error {
				ahead, behind := l.startSkewed(ctx, skewAhead, 25), l.startSkewed(ctx, skewBehind, 25)
				l.stopSkewed = func() { ahead(); behind() }
				return nil
			},
			heal: func(_ context.Context, _ *plane, l *load) error {
				l.stopSkewed()
				return nil
			},
			check: func(ctx context.Context, p *plane, _ *load, before *faultState) []string {
				var out []string
				if n, err := p.metric(ctx, p.mixerHTTP, "sextant_mixer_reports_clock_corrected_total"); err != nil {
					out = append(out, err.Error())
				} else if n <= before.corrected {
					out = append(out, "the mixer corrected no report's timestamp")
				} else {
					fmt.Printf("  clock-skew: %.0f reports' timestamps moved onto the mixer's clock\n", n-before.corrected)
				}
				return out
			}},
		// Combined: an etcd member lost, and mesh-core killed and started
		// again while it is away.
		scenario{name: "etcd-member-lost+mesh-core-sigkill",
			inject: func(ctx context.Context, p *plane, _ *load) error {
				p.etcd[2].Kill()
				p.meshCore.Kill()
				time.Sleep(2 * time.Second)
				return p.restart(ctx, p.meshCore)
			},
			heal: func(ctx context.Context, p *plane, _ *load) error { return restartMember(ctx, p, p.etcd[2]) }},
		// Combined: the quorum lost, and the calculator killed during it and
		// started while it lasts (it cannot be ready before etcd is back).
		scenario{name: "etcd-quorum-lost+calculator-sigkill", outage: true, lossBound: -1,
			inject: func(_ context.Context, p *plane, _ *load) error {
				p.etcd[1].Kill()
				p.etcd[2].Kill()
				time.Sleep(time.Second)
				p.calculator.Kill()
				time.Sleep(2 * time.Second)
				return p.calculator.Start()
			},
			heal: func(ctx context.Context, p *plane, _ *load) error {
				if err := restartMember(ctx, p, p.etcd[1:]...); err != nil {
					return err
				}
				return p.waitReady(ctx, p.calculator, 60*time.Second)
			}},
	)
	return list
}

// result is what one scenario showed.
type result struct {
	name     string
	failures []string
	recovery time.Duration
	calls    int64
	dropped  map[string]int64
	before   string
	// accounting says what the calculator received of the windows the
	// backend reporters had accepted.
	accounting string
}

// runSuite starts the plane and the load once and runs each selected
// scenario in turn.
func runSuite(ctx context.Context, binDir, dataDir string, o options, selected func(string) bool) (passed, failed int) {
	var chosen []scenario
	for _, s := range scenarios() {
		if selected(s.name) {
			chosen = append(chosen, s)
		}
	}
	fail := func(why string) (int, int) {
		for _, s := range chosen {
			fmt.Printf("FAIL %s: %s\n", s.name, why)
		}
		return 0, len(chosen)
	}
	for _, name := range []string{"mesh-core", "weight-calculator", "telemetry-mixer", "config-center"} {
		if _, err := os.Stat(binDir + "/" + name); err != nil {
			return fail(fmt.Sprintf("no service binary: %v (make chaos builds them)", err))
		}
	}
	start := time.Now()
	p, err := startPlane(ctx, binDir, dataDir, o.policyTTL)
	if p != nil {
		defer p.Close()
	}
	if err != nil {
		return fail("the control plane did not start: " + err.Error())
	}
	l, err := startLoad(ctx, p, o.rate)
	if err != nil {
		return fail("the load did not start: " + err.Error())
	}
	defer l.Close()
	fmt.Printf("chaos: control plane and load up in %s\n", time.Since(start).Round(time.Millisecond))
	for _, s := range chosen {
		r := runScenario(ctx, p, l, o, s)
		if len(r.failures) == 0 {
			passed++
			fmt.Printf("PASS %s: recovery %s, %d calls, 0 failed, telemetry windows dropped and counted %v; %s; weights before %s\n", r.name, r.recovery.Round(10*time.Millisecond), r.calls, r.dropped, r.accounting, r.before)
		} else {
			failed++
			fmt.Printf("FAIL %s: %s (recovery %s, %d calls)\n", r.name, strings.Join(r.failures, "; "), r.recovery.Round(10*time.Millisecond), r.calls)
		}
	}
	return passed, failed
}

// steady waits until the SDK holds a fresh dynamic policy of backend with
// its three instances, and returns that answer.
func steady(ctx context.Context, p *plane, l *load, timeout time.Duration) (*sdk.Snapshot, error) {
	deadline := time.Now().Add(timeout)
	var why string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		s, ok := l.disc.Get(backend)
		switch {
		case !ok:
			why = "no answer"
		case s.Stale || s.Cached:
			why = "a stale answer"
		case s.PolicyAgeMs < 0:
			why = "static weights (no policy yet)"
		case healthy(s) < len(l.servers):
			why = fmt.Sprintf("%d healthy instances of %d", healthy(s), len(l.servers))
		default:
			_, err := freshSince(ctx, p, time.Now().Add(-3*time.Second))
			if err == nil {
				return s, nil
			}
			why = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil, fmt.Errorf("no steady state after %s: %s", timeout, why)
}

func healthy(s *sdk.Snapshot) int {
	n := 0
	for _, in := range s.Instances {
		if in.Healthy && in.Weight > 0 {
			n++
		}
	}
	return n
}

// freshSince checks that mesh-core answers, not stale, a policy of backend
// published after t.
func freshSince(ctx context.Context, p *plane, t time.Time) (time.Duration, error) {
	asked := time.Now()
	d, err := p.discovery(ctx, backend)
	if err != nil {
		return 0, err
	}
	if d.Stale {
		return 0, fmt.Errorf("mesh-core answers stale")
	}
	if d.PolicyAgeMs < 0 {
		return 0, fmt.Errorf("mesh-core answers static weights")
	}
	published := asked.Add(-time.Duration(d.PolicyAgeMs) * time.Millisecond)
	if published.Before(t) {
		return 0, fmt.Errorf("mesh-core's policy is %d ms old", d.PolicyAgeMs)
	}
	return time.Since(t), nil
}

// flips compares an answer the SDK holds during a fault with the one it
// held before: a weight or threshold that went back to a default, or an
// instance that went away or was ejected.
func flips(before, now *sdk.Snapshot) []string {
	var out []string
	if now.PolicyAgeMs < 0 {
		out = append(out, "the policy expired: static weights")
	}
	if before.Overload.AdmitMinLevel != 0 && now.Overload.AdmitMinLevel == 0 {
		out = append(out, fmt.Sprintf("the threshold went from %d to 0", before.Overload.AdmitMinLevel))
	}
	cur := map[string]sdk.Instance{}
	for _, in := range now.Instances {
		cur[in.Instance] = in
	}
	for _, b := range before.Instances {
		n, ok := cur[b.Instance]
		switch {
		case !ok:
			out = append(out, b.Instance+" went away")
		case b.Healthy && b.Weight > 0 && (!n.Healthy || n.Weight == 0):
			out = append(out, b.Instance+" was ejected")
		case !b.Healthy && n.Healthy:
			out = append(out, b.Instance+" came back from an ejection")
		}
	}
	return out
}

// weights shows an answer's weights by port; the slow instance is starred.
func weights(s *sdk.Snapshot, slow string) string {
	var parts []string
	for _, in := range s.Instances {
		mark := ""
		if in.Instance == slow {
			mark = "*"
		}
		parts = append(parts, fmt.Sprintf("%s%s=%d", in.Instance[strings.LastIndexByte(in.Instance, ':')+1:], mark, in.Weight))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func runScenario(ctx context.Context, p *plane, l *load, o options, s scenario) result {
	r := result{name: s.name}
	failf := func(format string, a ...any) { r.failures = append(r.failures, fmt.Sprintf(format, a...)) }
	before, err := steady(ctx, p, l, 90*time.Second)
	if err != nil {
		failf("before the fault: %v", err)
		return r
	}
	r.before = fmt.Sprintf("%s policy %d ms old", weights(before, l.slow), before.PolicyAgeMs)
	calls0, failed0 := l.calls.Load(), l.failed.Load()
	_, dropped0 := l.uncounted()
	state := &faultState{relists: p.relists()}
	state.corrected, _ = p.metric(ctx, p.mixerHTTP, "sextant_mixer_reports_clock_corrected_total")
	sent0 := l.sent()
	if state.windows, err = p.windows(ctx); err != nil {
		failf("before the fault: %v", err)
		return r
	}

	// Watch what the SDK holds while the fault lasts and until recovery.
	var mu sync.Mutex
	seen := map[string]bool{}
	var flipped []string
	injected := time.Now()
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for watchCtx.Err() == nil {
			if now, ok := l.disc.Get(backend); ok {
				for _, f := range flips(before, now) {
					mu.Lock()
					if !seen[f] {
						seen[f] = true
						at := time.Since(injected).Round(100 * time.Millisecond)
						core := "mesh-core unreachable"
						if d, err := p.discovery(watchCtx, backend); err == nil {
							core = fmt.Sprintf("mesh-core answers stale=%v, policy_age_ms=%d", d.Stale, d.PolicyAgeMs)
						}
						flipped = append(flipped, fmt.Sprintf("%s %s after the fault began (before %s, then %s; %s)", f, at, weights(before, l.slow), weights(now, l.slow), core))
					}
					mu.Unlock()
				}
			}
			select {
			case <-watchCtx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	if err := s.inject(ctx, p, l); err != nil {
		failf("inject: %v", err)
	}
	hold := o.fault
	switch {
	case s.outage:
		hold = o.policyTTL + 5*time.Second
	case s.hold > 0:
		hold = s.hold
	}
	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	if err := s.heal(ctx, p, l); err != nil {
		failf("heal: %v", err)
	}
	healed := time.Now()
	fmt.Printf("  %s: fault from 0 to %s\n", s.name, healed.Sub(injected).Round(100*time.Millisecond))
	for {
		d, err := freshSince(ctx, p, healed)
		sdkSnap, _ := l.disc.Get(backend)
		if err == nil && sdkSnap != nil && !sdkSnap.Stale {
			r.recovery = d
			break
		}
		if time.Since(healed) > o.recoveryBound || ctx.Err() != nil {
			r.recovery = time.Since(healed)
			failf("no fresh policy %s after the fault: %v", o.recoveryBound, err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopWatch()
	wg.Wait()
	// The reporters settle what the fault held back.
	time.Sleep(3 * time.Second)
	r.calls = l.calls.Load() - calls0
	if n := l.failed.Load() - failed0; n > 0 {
		last, _ := l.lastErr.Load().(string)
		failf("%d of %d calls failed (last: %s)", n, r.calls, last)
	}
	for _, f := range flipped {
		failf("flipped during the fault: %s", f)
	}
	uncounted, dropped := l.uncounted()
	r.dropped = map[string]int64{}
	for reason, n := range dropped {
		if d := n - dropped0[reason]; d > 0 {
			r.dropped[reason] = d
		}
	}
	if uncounted > 0 {
		failf("%d telemetry windows neither sent, pending nor counted", uncounted)
	}
	r.accounting = account(ctx, p, l, s, sent0, state.windows, failf)
	if s.check != nil {
		for _, f := range s.check(ctx, p, l, state) {
			failf("%s", f)
		}
	}
	return r
}

// account waits until the reporters have sent what the fault held back,
// then compares, per backend instance, the windows its reporter had
// accepted (answered 202) during the scenario with the server records the
// calculator received: the difference must be within the scenario's
// lossBound, give or take one window in the mixer at either end of the
// count (and one sent twice when the mixer died before answering).
func account(ctx context.Context, p *plane, l *load, s scenario, sent0 map[string]int64, calc0 map[string]calcTotals, failf func(string, ...any)) string {
	var sent map[string]int64
	var calc map[string]calcTotals
	var err error
	prev := ""
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		drained := true
		for _, r := range l.running() {
			if r.Stats().Pending > 1 { // one may be in flight
				drained = false
			}
		}
		sent = l.sent()
		if calc, err = p.windows(ctx); err != nil && s.lossBound >= 0 {
			failf("after the fault: %v", err)
			return "accounting failed"
		}
		// Settled: drained, and every accepted window received, or
		// nothing moved for a second (what is lost stays lost).
		settled, now := drained, fmt.Sprint(sent, calc)
		for in, n := range sent {
			if s.lossBound >= 0 && n-sent0[in] != calc[in].records-calc0[in].records {
				settled = false
			}
		}
		if settled || (drained && now == prev) || ctx.Err() != nil {
			break
		}
		prev = now
		if time.Now().After(deadline) {
			if !drained {
				failf("windows still wait in the reporters 30 s after the fault")
			}
			break
		}
	}
	if s.lossBound < 0 {
		return "accepted windows not compared with the calculator's (it restarted: its totals start again)"
	}
	var accepted, delivered, late int64
	var parts []string
	for in, n := range sent {
		a, d := n-sent0[in], calc[in].records-calc0[in].records
		lt := calc[in].late - calc0[in].late
		accepted, delivered, late = accepted+a, delivered+d, late+lt
		lost := a - d
		if lost > s.lossBound+1+lt || lost < -2 {
			failf("instance %s: %d windows accepted, %d received by the calculator (%d late), %d lost: beyond the bound of %d", in, a, d, lt, lost, s.lossBound)
		}
		parts = append(parts, fmt.Sprint(lost))
	}
	if s.name == "clock-skew" && late > 0 {
		failf("%d records late at the calculator: a skewed data plane's windows did not land with the others'", late)
	}
	return fmt.Sprintf("%d backend windows accepted, %d received by the calculator (%d records late), lost per instance %s (bound %d)", accepted, delivered, late, strings.Join(parts, "/"), s.lossBound)
}
