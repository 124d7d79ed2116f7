package calculator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/callopt"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/testenv"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// A service moves from one shard to another (the first stops) while one of
// its instances is ejected and the service sheds load. The new owner
// continues from the last policy published (read back from etcd, where
// mesh-core stores it): the instance stays ejected until the same time,
// although its new reports are clean, and the admission level is kept and
// rises from there rather than starting again from 0.
func TestHandOverKeepsEjectionsAndOverloadLevel(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	keys := api.Keys{Prefix: prefix}
	cli := etcd.Client(t)

	// One service of calc-a's, its five instances registered.
	view := shard.NewView([]shard.Shard{{ID: "calc-a", Addr: "a:1"}, {ID: "calc-b", Addr: "b:1"}})
	svc := ""
	for i := 0; svc == ""; i++ {
		if o, _ := view.Owner(fmt.Sprintf("svc-%d", i)); o.ID == "calc-a" {
			svc = fmt.Sprintf("svc-%d", i)
		}
	}
	m := newServiceModel(svc, 5)
	m.capacity = 5_000 // CPU 0.4 each
	for _, in := range m.instances {
		b, _ := json.Marshal(map[string]any{"service": svc, "instance": in.id, "addr": in.id, "static_weight": 100, "ttl_s": 300})
		resp, err := testenv.HTTP.Post("http://"+mc.Addr()+"/v1/instances", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("register %s: %d", in.id, resp.StatusCode)
		}
	}
	// Overloaded by CPU every window; a long ejection.
	k := calculator.DefaultKnobs()
	k.OverloadCPU, k.EjectionMs, k.ShedStep = 0.3, 60_000, 0.05
	kb, _ := json.Marshal(k)
	if _, err := cli.Put(context.Background(), keys.Config(svc, api.KindCalculator, ""), string(kb)); err != nil {
		t.Fatal(err)
	}

	clock := &fakeClock{}
	clock.ms.Store(time.Now().Truncate(time.Second).Add(500 * time.Millisecond).UnixMilli())
	start := func(id string) *calculator.Calculator {
		return calculatortest.Start(t, etcd, prefix, id, func(c *calculator.Config) {
			c.ManualRounds, c.Now, c.MeshCoreAddr = true, clock.Now, mc.KitexAddr()
		})
	}
	c1, c2 := start("calc-a"), start("calc-b")
	for _, c := range []*calculator.Calculator{c1, c2} {
		testenv.Eventually(t, 20*time.Second, func() error {
			if r := testenv.Ready(t, c.AdminAddr()); len(r) > 0 || len(c.Shards()) != 2 || c.KnobsFor(svc).OverloadCPU != 0.3 {
				return fmt.Errorf("%s not ready: %v", c.ID(), r)
			}
			return nil
		})
	}
	// step sends one window to c, as a mixer routes it, and runs its round.
	step := func(c *calculator.Calculator) {
		t.Helper()
		b := m.batch(nil)
		for _, r := range b.Servers {
			r.TimestampMs = clock.Now().UnixMilli()
			// Arrivals spread over every business priority, so that the
			// level rises a step at a time.
			r.RequestsByPriority = map[int32]int64{}
			for l := int32(0); l < 128; l++ {
				r.RequestsByPriority[l] = max(r.Requests/128, 1)
			}
		}
		for _, e := range b.Edges {
			e.TimestampMs = clock.Now().UnixMilli()
		}
		kc, err := aggregatorsvc.NewClient("weight-calculator", client.WithHostPorts(c.KitexAddr()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kc.Ingest(context.Background(), b, callopt.WithRPCTimeout(10*time.Second)); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
		c.Round(clock.Now())
	}
	stored := func() *api.Policy {
		t.Helper()
		resp, err := cli.Get(context.Background(), keys.Policy(svc))
		if err != nil || len(resp.Kvs) == 0 {
			return nil
		}
		var p api.Policy
		if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	ejected := func(p *api.Policy, id string) (api.InstanceWeight, bool) {
		for _, w := range p.Weights {
			if w.Instance == id && w.Ejected {
				return w, true
			}
		}
		return api.InstanceWeight{}, false
	}

	bad := m.instances[0]
	bad.errRate = 0.3
	for i := 0; i < 10; i++ {
		step(c1)
	}
	var byA *api.Policy
	testenv.Eventually(t, 20*time.Second, func() error {
		p := stored()
		if p == nil || p.CalculatorID != "calc-a" || p.Overload.AdmitMinLevel == 0 {
			return fmt.Errorf("calc-a's policy with a level not stored yet: %+v", p)
		}
		if _, ok := ejected(p, bad.id); !ok {
			return fmt.Errorf("%s not ejected in %+v", bad.id, p.Weights)
		}
		byA = p
		return nil
	})
	if err := c1.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	byA = stored() // calc-a's last word
	wantEject, _ := ejected(byA, bad.id)
	if wantEject.EjectedUntilMs <= clock.Now().UnixMilli() || wantEject.Ejections < 1 {
		t.Fatalf("calc-a published the ejection of %s without its end: %+v", bad.id, wantEject)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if len(c2.Shards()) != 1 {
			return fmt.Errorf("calc-b still sees calc-a")
		}
		return nil
	})

	// calc-b takes svc over; the instance's reports are clean from now on.
	bad.errRate = 0
	for i := 0; i < 8; i++ {
		step(c2)
		d, ok := c2.Decision(svc)
		if !ok {
			t.Fatalf("calc-b computes nothing for %s", svc)
		}
		if d.RestoredFrom != "calc-a" {
			t.Fatalf("calc-b did not continue from calc-a's policy: restored from %q", d.RestoredFrom)
		}
		if d.Overload.AdmitMinLevel < byA.Overload.AdmitMinLevel {
			t.Fatalf("window %d after the move: level %d, below calc-a's %d", i, d.Overload.AdmitMinLevel, byA.Overload.AdmitMinLevel)
		}
		if w, _, _ := weightOf(d, bad.id); w != 0 {
			t.Fatalf("window %d after the move: %s back at weight %d before its ejection ends", i, bad.id, w)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		p := stored()
		if p.CalculatorID != "calc-b" {
			return fmt.Errorf("calc-b has not published %s yet", svc)
		}
		w, ok := ejected(p, bad.id)
		if !ok || w.EjectedUntilMs != wantEject.EjectedUntilMs {
			return fmt.Errorf("calc-b's policy: %s %+v, want ejected until %d", bad.id, w, wantEject.EjectedUntilMs)
		}
		if p.Overload.State != api.StateOverloaded || p.Overload.AdmitMinLevel < byA.Overload.AdmitMinLevel {
			return fmt.Errorf("calc-b's overload %+v after calc-a's %+v", p.Overload, byA.Overload)
		}
		if p.Version <= byA.Version {
			return fmt.Errorf("calc-b published v%d after calc-a's v%d", p.Version, byA.Version)
		}
		return nil
	})
	t.Logf("calc-a: level %d, %s ejected until %d; calc-b continues: %+v", byA.Overload.AdmitMinLevel, bad.id, wantEject.EjectedUntilMs, stored().Overload)
}
