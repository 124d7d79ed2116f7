package calculator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/callopt"

	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/testenv"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// Each shard computes only the services it owns. When the owner leaves, the
// next owner starts from clean windows: it publishes nothing until it holds
// a full evaluation span of its own data, then publishes above the last
// version. When the first shard comes back, the second forgets the service.
func TestOwnershipMovesWithAWarmup(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	sink, addr := startPolicySink(t)
	clock := &fakeClock{}
	clock.ms.Store(time.Date(2026, 11, 21, 12, 0, 0, 500_000_000, time.UTC).UnixMilli())
	start := func(id string) *calculator.Calculator {
		return calculatortest.Start(t, etcd, prefix, id, func(c *calculator.Config) {
			c.ManualRounds, c.Now, c.MeshCoreAddr = true, clock.Now, addr
		})
	}
	c1, c2 := start("calc-a"), start("calc-b")
	view := shard.NewView([]shard.Shard{{ID: "calc-a", Addr: "a:1"}, {ID: "calc-b", Addr: "b:1"}})
	var svc, other string // one service of each shard
	for i := 0; svc == "" || other == ""; i++ {
		name := fmt.Sprintf("svc-%d", i)
		if o, _ := view.Owner(name); o.ID == "calc-a" && svc == "" {
			svc = name
		} else if o.ID == "calc-b" && other == "" {
			other = name
		}
	}
	for _, c := range []*calculator.Calculator{c1, c2} {
		testenv.Eventually(t, 20*time.Second, func() error {
			if r := testenv.Ready(t, c.AdminAddr()); len(r) > 0 || !bothShardsSeen(t, c) {
				return fmt.Errorf("%s not ready: %v", c.ID(), r)
			}
			return nil
		})
	}
	clients := map[*calculator.Calculator]aggregatorsvc.Client{}
	clientOf := func(c *calculator.Calculator) aggregatorsvc.Client {
		if clients[c] == nil {
			kc, err := aggregatorsvc.NewClient("weight-calculator", client.WithHostPorts(c.KitexAddr()))
			if err != nil {
				t.Fatal(err)
			}
			clients[c] = kc
		}
		return clients[c]
	}
	// step sends one window of both services to the given shards (as a mixer
	// routes them), then runs a round on every live shard.
	step := func(to map[string]*calculator.Calculator, live ...*calculator.Calculator) {
		t.Helper()
		for service, c := range to {
			b := newServiceModel(service, 3).batch(nil)
			for _, r := range b.Servers {
				r.TimestampMs = clock.Now().UnixMilli()
			}
			for _, e := range b.Edges {
				e.TimestampMs = clock.Now().UnixMilli()
			}
			if _, err := clientOf(c).Ingest(context.Background(), b, callopt.WithRPCTimeout(10*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(time.Second)
		for _, c := range live {
			c.Round(clock.Now())
		}
	}

	// Misrouted records do not make a shard compute a service it does not own.
	for i := 0; i < 6; i++ {
		step(map[string]*calculator.Calculator{svc: c1, other: c1}, c1, c2)
	}
	if _, ok := c1.Decision(other); ok {
		t.Fatalf("calc-a computes %s, owned by calc-b", other)
	}
	if _, ok := c1.Decision(svc); !ok {
		t.Fatalf("calc-a computes nothing for its own %s", svc)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if sink.latest(svc) == nil {
			return fmt.Errorf("%s not published", svc)
		}
		return nil
	})
	lastByA := sink.latest(svc)

	// calc-a leaves: calc-b owns svc now and warms up first.
	if err := c1.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if bothShardsSeen(t, c2) {
			return fmt.Errorf("calc-b still sees calc-a")
		}
		return nil
	})
	warm := 0
	for ; warm < 10; warm++ {
		step(map[string]*calculator.Calculator{svc: c2}, c2)
		d, ok := c2.Decision(svc)
		if !ok {
			t.Fatalf("calc-b computes nothing for %s after taking it over", svc)
		}
		if !d.OwnershipWarmup {
			break
		}
		if p := sink.latest(svc); p.CalculatorId != "calc-a" {
			t.Fatalf("calc-b published %s during its warm-up (window %d)", svc, warm)
		}
	}
	if warm != 4 { // eval_windows + 1
		t.Fatalf("warm-up lasted %d windows, want 4", warm)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if p := sink.latest(svc); p.CalculatorId != "calc-b" {
			return fmt.Errorf("calc-b has not published %s yet", svc)
		}
		return nil
	})
	if p := sink.latest(svc); p.Version <= lastByA.Version || len(p.Weights) != 3 {
		t.Fatalf("calc-b published v%d with %d weights after calc-a's v%d", p.Version, len(p.Weights), lastByA.Version)
	}

	// calc-a comes back: svc returns to it, and calc-b forgets svc.
	c1 = start("calc-a")
	testenv.Eventually(t, 20*time.Second, func() error {
		if !bothShardsSeen(t, c2) {
			return fmt.Errorf("calc-b does not see calc-a yet")
		}
		return nil
	})
	step(map[string]*calculator.Calculator{svc: c1}, c2)
	if _, ok := c2.Decision(svc); ok {
		t.Fatalf("calc-b still computes %s after calc-a came back", svc)
	}
	if v, ok := c2.Windows(svc); ok {
		t.Fatalf("calc-b still holds windows of %s: %d instances", svc, len(v.Instances))
	}
}

func bothShardsSeen(t *testing.T, c *calculator.Calculator) bool { return len(c.Shards()) == 2 }
