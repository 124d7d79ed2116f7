package demo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/examples/demo"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// plane is the whole control plane on fixed loopback ports, so that it can
// be stopped and started again where the SDKs expect it.
type plane struct {
	t                   *testing.T
	etcd                *testenv.Etcd
	prefix              string
	meshHTTP, meshKitex string
	mixerHTTP           string
	mc                  *core.MeshCore
	calc                *calculator.Calculator
	mx                  *mixer.Mixer
}

func startPlane(t *testing.T, knobs calculator.Knobs) *plane {
	p := &plane{t: t, etcd: testenv.StartEtcd(t), prefix: testenv.Prefix(t),
		meshHTTP: testenv.FreeAddr(t), meshKitex: testenv.FreeAddr(t), mixerHTTP: testenv.FreeAddr(t)}
	b, _ := json.Marshal(knobs)
	if _, err := p.etcd.Client(t).Put(context.Background(), api.Keys{Prefix: p.prefix}.Config(demo.Service, api.KindCalculator, ""), string(b)); err != nil {
		t.Fatal(err)
	}
	p.start()
	return p
}

func (p *plane) start() {
	p.mc = coretest.Start(p.t, p.etcd, p.prefix, func(c *core.Config) { c.HTTPAddr, c.KitexAddr = p.meshHTTP, p.meshKitex })
	p.calc = calculatortest.Start(p.t, p.etcd, p.prefix, "calc-1", func(c *calculator.Config) { c.MeshCoreAddr = p.meshKitex })
	p.mx = mixertest.Start(p.t, p.etcd, p.prefix, func(c *mixer.Config) { c.HTTPAddr = p.mixerHTTP })
}

// stop stops every Sextant service and etcd.
func (p *plane) stop() {
	ctx := context.Background()
	for _, s := range []interface{ Stop(context.Context) error }{p.mx, p.calc, p.mc} {
		if err := s.Stop(ctx); err != nil {
			p.t.Logf("stop: %v", err)
		}
	}
	p.etcd.Stop()
}

func (p *plane) restart() {
	p.etcd.Restart()
	p.start()
}

func (p *plane) cp() demo.ControlPlane {
	return demo.ControlPlane{MeshCore: p.meshHTTP, Mixer: p.mixerHTTP, Window: time.Second, Tokens: map[string]string{
		demo.Service:      testenv.ServiceToken(p.t, p.etcd, p.prefix, demo.Service),
		demo.FrontService: testenv.ServiceToken(p.t, p.etcd, p.prefix, demo.FrontService),
	}}
}

func knobs() calculator.Knobs {
	k := calculator.DefaultKnobs()
	k.EjectionMs = 5000
	k.BlackoutMs = 2000
	k.RecoverStep = 0.05
	return k
}

func startBackends(t *testing.T, cp demo.ControlPlane, n int, cost time.Duration, concurrency int) []*demo.Backend {
	var bs []*demo.Backend
	for i := 0; i < n; i++ {
		b, err := demo.StartBackend(cp, cost, concurrency, logx.Discard())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		bs = append(bs, b)
	}
	return bs
}

func startFront(t *testing.T, cp demo.ControlPlane) *demo.Front {
	f, err := demo.NewFront(cp, 2*time.Second, logx.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// waitWeighted waits until the front holds dynamic weights for n instances.
func waitWeighted(t *testing.T, f *demo.Front, n int) {
	testenv.Eventually(t, 60*time.Second, func() error {
		s, ok := f.Snapshot()
		if !ok || s.PolicyAgeMs < 0 || len(s.Instances) != n {
			return fmt.Errorf("no dynamic weights for %d instances yet: %+v", n, s)
		}
		return nil
	})
}

func othersAverage(s demo.Second, bs []*demo.Backend, except string) float64 {
	sum, n := 0.0, 0
	for _, b := range bs {
		if b.ID != except {
			sum += s.Share(b.ID)
			n++
		}
	}
	return sum / float64(n)
}

// Five instances of a Kitex service, one made five times slower: within
// 10 s its share of traffic falls below half of the others' average and
// stays there while it is slow; when it recovers, its share comes back.
func TestSlowInstanceLosesTrafficAndGetsItBack(t *testing.T) {
	p := startPlane(t, knobs())
	bs := startBackends(t, p.cp(), 5, 10*time.Millisecond, 4)
	f := startFront(t, p.cp())
	rec := demo.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := demo.ClosedLoop(ctx, f, 16, func() int32 { return 64 }, rec)
	defer wg.Wait()
	defer cancel()
	waitWeighted(t, f, 5)
	time.Sleep(3 * time.Second)

	slow := bs[4]
	slow.SetCost(50 * time.Millisecond)
	slowAt := time.Now()
	var movedAfter time.Duration
	testenv.Eventually(t, 30*time.Second, func() error {
		now := time.Now().Truncate(time.Second)
		s := rec.Window(now.Add(-time.Second), now)
		if share, avg := s.Share(slow.ID), othersAverage(s, bs, slow.ID); share >= avg/2 || avg == 0 {
			return fmt.Errorf("slow share %.3f, others' average %.3f", share, avg)
		}
		movedAfter = time.Since(slowAt)
		return nil
	})
	t.Logf("the slow instance's share fell below half of the others' after %s", movedAfter.Round(100*time.Millisecond))
	if movedAfter > 10*time.Second {
		t.Fatalf("traffic moved away after %s, want within 10 s", movedAfter)
	}
	time.Sleep(max(0, 11*time.Second-time.Since(slowAt)))
	first := rec.Window(slowAt.Truncate(time.Second).Add(time.Second), slowAt.Add(4*time.Second))
	later := rec.Window(time.Now().Add(-3*time.Second), time.Now())
	// The client's p99 is logged, not asserted: in real time, on a shared
	// machine, scheduling delays move it more than the slow instance does
	// once traffic has left it (within 1-2 s). The simulator measures the
	// latency effect in simulated time (docs/lb-quality.md); here the
	// traffic must stay away from the slow instance while it is slow.
	t.Logf("client p99: %s in the first seconds, %s later", first.P99(), later.P99())
	if share, avg := later.Share(slow.ID), othersAverage(later, bs, slow.ID); share >= avg/2 || avg == 0 {
		t.Fatalf("later, while still slow: its share %.3f, others' average %.3f; want below half", share, avg)
	}

	slow.SetCost(10 * time.Millisecond)
	testenv.Eventually(t, 60*time.Second, func() error {
		now := time.Now().Truncate(time.Second)
		s := rec.Window(now.Add(-time.Second), now)
		if share, avg := s.Share(slow.ID), othersAverage(s, bs, slow.ID); share < avg/2 {
			return fmt.Errorf("recovered instance's share %.3f, others' average %.3f", share, avg)
		}
		return nil
	})
}

// Overload end to end: three instances pushed to twice their capacity with
// low, normal and high priority traffic. The high priority keeps a success
// rate of at least 99 % while the low one is shed; after the load drops
// everything is admitted again.
func TestOverloadShedsLowPriorityEndToEnd(t *testing.T) {
	p := startPlane(t, knobs())
	bs := startBackends(t, p.cp(), 3, 10*time.Millisecond, 1) // 300 requests/s in all
	_ = bs
	f := startFront(t, p.cp())
	rec := demo.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rate atomic.Int64
	rate.Store(150)
	wg := demo.OpenLoop(ctx, f, func() int { return int(rate.Load()) }, demo.Priorities, rec)
	defer wg.Wait()
	defer cancel()
	waitWeighted(t, f, 3)

	rate.Store(600) // twice the capacity
	pushed := time.Now()
	testenv.Eventually(t, 60*time.Second, func() error {
		if s, _ := f.Snapshot(); s.Overload.AdmitMinPriority <= 10 {
			return fmt.Errorf("not shedding the low priority yet: %+v", s.Overload)
		}
		return nil
	})
	time.Sleep(10 * time.Second)
	s := rec.Window(time.Now().Add(-10*time.Second), time.Now())
	high := float64(s.OK[120]) / float64(s.OK[120]+s.Shed[120]+s.Failed[120])
	low := float64(s.Shed[10]) / float64(s.OK[10]+s.Shed[10]+s.Failed[10])
	t.Logf("at 2x capacity (%s in): high priority success %.4f (%d calls), low priority shed %.2f", time.Since(pushed).Round(time.Second), high, s.OK[120]+s.Shed[120]+s.Failed[120], low)
	if high < 0.99 {
		t.Fatalf("high priority success %.4f: ok %v, shed %v, failed %v (last error: %v)", high, s.OK, s.Shed, s.Failed, rec.LastError())
	}
	if low < 0.5 {
		t.Fatalf("only %.2f of the low priority was shed: ok %v, shed %v, failed %v (last error: %v)", low, s.OK, s.Shed, s.Failed, rec.LastError())
	}

	rate.Store(100)
	testenv.Eventually(t, 90*time.Second, func() error {
		now := time.Now().Truncate(time.Second)
		s := rec.Window(now.Add(-2*time.Second), now)
		shed := s.Shed[10] + s.Shed[64] + s.Shed[120]
		if shed > 0 || s.OK[10] == 0 {
			return fmt.Errorf("still shedding after the load dropped: ok %v, shed %v, failed %v", s.OK, s.Shed, s.Failed)
		}
		return nil
	})
}

// The control plane away: stopping every Sextant service (and etcd) does
// not fail a single request; the SDK keeps the last weights, and picks up new
// ones when the control plane returns.
func TestControlPlaneAwayFailsNothing(t *testing.T) {
	p := startPlane(t, knobs())
	bs := startBackends(t, p.cp(), 3, 10*time.Millisecond, 4)
	f := startFront(t, p.cp())
	rec := demo.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := demo.ClosedLoop(ctx, f, 8, func() int32 { return 64 }, rec)
	defer wg.Wait()
	defer cancel()
	waitWeighted(t, f, 3)
	before, _ := f.Snapshot()

	p.stop()
	stoppedAt := time.Now()
	time.Sleep(8 * time.Second)
	away := rec.Window(stoppedAt, time.Now())
	failed := 0
	for _, n := range away.Failed {
		failed += n
	}
	served := 0
	for _, n := range away.ByInstance {
		served += n
	}
	if failed > 0 || served == 0 {
		t.Fatalf("with the control plane away: %d calls failed, %d served", failed, served)
	}
	if s, _ := f.Snapshot(); s.Version != before.Version {
		t.Fatalf("the SDK lost its last weights: %+v", s)
	}
	t.Logf("%d calls served, none failed, with the control plane away", served)

	p.restart()
	bs[0].SetCost(50 * time.Millisecond)
	testenv.Eventually(t, 60*time.Second, func() error {
		s, ok := f.Snapshot()
		if !ok {
			return fmt.Errorf("no snapshot")
		}
		for _, in := range s.Instances {
			if in.Instance == bs[0].ID && in.Weight > 0 && in.Weight < 500 || in.Instance == bs[0].ID && !in.Healthy {
				return nil
			}
		}
		return fmt.Errorf("no new weights after the control plane returned: %+v", s.Instances)
	})
	all := rec.Window(stoppedAt, time.Now())
	for _, n := range all.Failed {
		failed += n
	}
	if failed > 0 {
		t.Fatalf("%d calls failed across the outage and the return", failed)
	}
}
