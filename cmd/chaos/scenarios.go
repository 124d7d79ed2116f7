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
	inject, heal func(ctx context.Context, p *plane) error
	// outage marks a fault that takes etcd away from mesh-core: it lasts
	// longer than the policy TTL, since time while etcd is away must not
	// count towards it.
	outage bool
}

// shortScenarios are the short form's, which `make test` runs.
var shortScenarios = []string{"mesh-core-sigkill", "etcd-member-lost"}

func killRestart(pick func(*plane) *process) (inject, heal func(context.Context, *plane) error) {
	return func(_ context.Context, p *plane) error { pick(p).Kill(); return nil },
		func(ctx context.Context, p *plane) error { return p.restart(ctx, pick(p)) }
}

func scenarios() []scenario {
	var list []scenario
	for _, s := range []struct {
		name string
		pick func(*plane) *process
	}{
		{"mesh-core-sigkill", func(p *plane) *process { return p.meshCore }},
		{"calculator-sigkill", func(p *plane) *process { return p.calculator }},
		{"mixer-sigkill", func(p *plane) *process { return p.mixer }},
		{"config-center-sigkill", func(p *plane) *process { return p.center }},
	} {
		inject, heal := killRestart(s.pick)
		list = append(list, scenario{name: s.name, inject: inject, heal: heal})
	}
	list = append(list,
		scenario{name: "etcd-member-lost",
			inject: func(_ context.Context, p *plane) error { p.etcd[2].Kill(); return nil },
			heal: func(ctx context.Context, p *plane) error {
				if err := p.etcd[2].Start(); err != nil {
					return err
				}
				return p.waitEtcd(ctx, 60*time.Second)
			}},
		scenario{name: "etcd-quorum-lost", outage: true,
			inject: func(_ context.Context, p *plane) error { p.etcd[1].Kill(); p.etcd[2].Kill(); return nil },
			heal: func(ctx context.Context, p *plane) error {
				for _, e := range p.etcd[1:] {
					if err := e.Start(); err != nil {
						return err
					}
				}
				return p.waitEtcd(ctx, 60*time.Second)
			}},
		scenario{name: "mesh-core-etcd-partition", outage: true,
			inject: func(_ context.Context, p *plane) error {
				for _, px := range p.coreEtcd {
					px.Cut(true)
				}
				return nil
			},
			heal: func(_ context.Context, p *plane) error {
				for _, px := range p.coreEtcd {
					px.Cut(false)
				}
				return nil
			}},
		scenario{name: "mixer-calculator-latency",
			inject: func(_ context.Context, p *plane) error { p.calcLink.Delay(300 * time.Millisecond); return nil },
			heal:   func(_ context.Context, p *plane) error { p.calcLink.Delay(0); return nil }},
		scenario{name: "influxdb-away",
			inject: func(_ context.Context, p *plane) error {
				if p.influx == nil {
					return fmt.Errorf("cannot run without influxd (make bin/influxd builds it): %v", p.influxErr)
				}
				_ = syscall.Kill(p.influx.Pid(), syscall.SIGKILL)
				p.influx.Stop() // reaps it
				return nil
			},
			heal: func(_ context.Context, p *plane) error {
				if p.influx == nil {
					return nil
				}
				return p.influx.Restart()
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
			fmt.Printf("PASS %s: recovery %s, %d calls, 0 failed, telemetry windows dropped and counted %v; weights before %s\n", r.name, r.recovery.Round(10*time.Millisecond), r.calls, r.dropped, r.before)
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

	if err := s.inject(ctx, p); err != nil {
		failf("inject: %v", err)
	}
	hold := o.fault
	if s.outage {
		hold = o.policyTTL + 5*time.Second
	}
	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	if err := s.heal(ctx, p); err != nil {
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
	return r
}
