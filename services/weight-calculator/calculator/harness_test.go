package calculator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/callopt"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// fakeClock is the calculator's clock in scenario tests: each step is one
// window, whatever the machine's speed.
type fakeClock struct{ ms atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// policySink is a MeshCore server that records what the calculator publishes
// and holds it to the contract: versions increase per service, weights are in
// range and not all zero.
type policySink struct {
	t  testing.TB
	mu sync.Mutex
	// service -> policies in arrival order
	got map[string][]*meshcore.Policy
}

func (s *policySink) PublishPolicy(_ context.Context, req *meshcore.PublishPolicyRequest) (*meshcore.PublishPolicyResponse, error) {
	p := req.GetPolicy()
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.got[p.Service]
	if n := len(prev); n > 0 && p.Version <= prev[n-1].Version {
		return nil, &meshcore.PolicyRejected{Code: "stale_version", Message: "stale", CurrentVersion: prev[n-1].Version}
	}
	positive := 0
	for _, w := range p.Weights {
		if w.Weight < 0 || w.Weight > 1000 || (w.Weight == 0) != w.Ejected {
			s.t.Errorf("%s v%d: weight %d (ejected %v) of %s out of contract", p.Service, p.Version, w.Weight, w.Ejected, w.Instance)
		}
		if w.Weight > 0 {
			positive++
		}
	}
	if len(p.Weights) > 0 && positive == 0 {
		s.t.Errorf("%s v%d: every weight is zero", p.Service, p.Version)
	}
	s.got[p.Service] = append(prev, p)
	return &meshcore.PublishPolicyResponse{StoredVersion: p.Version}, nil
}

// PublishPolicies holds each policy of the batch to the same contract.
func (s *policySink) PublishPolicies(ctx context.Context, req *meshcore.PublishPoliciesRequest) (*meshcore.PublishPoliciesResponse, error) {
	resp := &meshcore.PublishPoliciesResponse{}
	for _, p := range req.GetPolicies() {
		out := &meshcore.PolicyOutcome{Service: p.Service}
		if r, err := s.PublishPolicy(ctx, &meshcore.PublishPolicyRequest{Policy: p}); err != nil {
			out.Rejected = err.(*meshcore.PolicyRejected)
		} else {
			out.StoredVersion = r.StoredVersion
		}
		resp.Results = append(resp.Results, out)
	}
	return resp, nil
}

func (s *policySink) latest(service string) *meshcore.Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.got[service]
	if len(ps) == 0 {
		return nil
	}
	return ps[len(ps)-1]
}

func (s *policySink) count(service string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got[service])
}

func startPolicySink(t *testing.T) (*policySink, string) {
	t.Helper()
	sink := &policySink{t: t, got: map[string][]*meshcore.Policy{}}
	ln, err := kitexx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := meshcoresvc.NewServer(sink, kitexx.ServerOptions("mesh-core-test", ln)...)
	done := kitexx.Serve(srv)
	t.Cleanup(func() { srv.Stop(); <-done })
	return sink, ln.Addr().String()
}

// scenario is one calculator shard, stepped window by window, fed over its
// Kitex API, publishing to a policySink.
type scenario struct {
	t      *testing.T
	clock  *fakeClock
	calc   *calculator.Calculator
	sink   *policySink
	client aggregatorsvc.Client
	step   int
}

func newScenario(t *testing.T, knobs map[string]calculator.Knobs) *scenario {
	t.Helper()
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	cli := etcd.Client(t)
	for service, k := range knobs {
		b, _ := json.Marshal(k)
		if _, err := cli.Put(context.Background(), api.Keys{Prefix: prefix}.Config(service, calculator.KnobsKind, ""), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	sink, addr := startPolicySink(t)
	clock := &fakeClock{}
	clock.ms.Store(time.Date(2026, 11, 21, 12, 0, 0, 500_000_000, time.UTC).UnixMilli()) // mid-window
	calc := calculatortest.Start(t, etcd, prefix, "calc-1", func(c *calculator.Config) {
		c.ManualRounds, c.Now, c.MeshCoreAddr = true, clock.Now, addr
	})
	kc, err := aggregatorsvc.NewClient("weight-calculator", client.WithHostPorts(calc.KitexAddr()))
	if err != nil {
		t.Fatal(err)
	}
	s := &scenario{t: t, clock: clock, calc: calc, sink: sink, client: kc}
	// Wait until the shard sees itself in etcd and its knobs are loaded.
	testenv.Eventually(t, 20*time.Second, func() error {
		for _, r := range testenv.Ready(t, calc.AdminAddr()) {
			return fmt.Errorf("not ready: %s", r)
		}
		for service, k := range knobs {
			if got := calc.KnobsFor(service); got != k {
				return fmt.Errorf("knobs of %s not loaded yet", service)
			}
		}
		return nil
	})
	return s
}

// window sends one window of records, then moves the clock a window on and
// runs the round that evaluates it. It returns that round's decision.
func (s *scenario) window(service string, batch *aggregator.ReportBatch) calculator.Decision {
	s.t.Helper()
	ts := s.clock.Now().UnixMilli()
	for _, r := range batch.Servers {
		r.TimestampMs, r.WindowMs = ts, 1000
	}
	for _, e := range batch.Edges {
		e.TimestampMs, e.WindowMs = ts, 1000
	}
	resp, err := s.client.Ingest(context.Background(), batch, callopt.WithRPCTimeout(10*time.Second))
	if err != nil {
		s.t.Fatalf("step %d: Ingest: %v", s.step, err)
	}
	if resp.RecordsRefused != 0 {
		s.t.Fatalf("step %d: %d records refused", s.step, resp.RecordsRefused)
	}
	s.clock.Advance(time.Second)
	s.calc.Round(s.clock.Now())
	s.step++
	d, ok := s.calc.Decision(service)
	if !ok {
		s.t.Fatalf("step %d: no decision for %s", s.step, service)
	}
	if d.Published { // what data planes see next: wait for it to reach mesh-core
		testenv.Eventually(s.t, 20*time.Second, func() error {
			if p := s.sink.latest(service); p == nil || p.ComputedAtMs != d.RoundAtMs {
				return fmt.Errorf("step %d: policy of round %d not published yet", s.step, d.RoundAtMs)
			}
			return nil
		})
	}
	return d
}

// published returns the weights data planes hold for service: instance -> weight.
func (s *scenario) published(service string) map[string]int32 {
	out := map[string]int32{}
	if p := s.sink.latest(service); p != nil {
		for _, w := range p.Weights {
			out[w.Instance] = w.Weight
		}
	}
	return out
}
