package sdk_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// Zone-aware routing end to end: instances in two zones report their load
// and callers in both zones report their calls through the real mixer; the
// real calculator computes the routing, mesh-core hands it out, and the
// SDK's Discovery of a caller with a zone answers weights that follow it.
// Zone a has 6 instances, zone b 4, each serving 320 requests/s at 80 %
// (a capacity of 400/s); callers in each zone send 1,600/s: zone b can
// serve 0.8 x 1,600 of its callers' requests below the 80 % headroom and
// sends the rest to zone a.
func TestZoneAwareRoutingEndToEnd(t *testing.T) {
	const svc = "shop"
	etcd, prefix := testenv.StartEtcd(t), testenv.Prefix(t)
	meshHTTP, meshKitex := testenv.FreeAddr(t), testenv.FreeAddr(t)
	coretest.Start(t, etcd, prefix, func(c *core.Config) { c.HTTPAddr, c.KitexAddr = meshHTTP, meshKitex })
	calculatortest.Start(t, etcd, prefix, "calc-1", func(c *calculator.Config) { c.MeshCoreAddr = meshKitex })
	mx := mixertest.Start(t, etcd, prefix, nil)
	shopToken, frontToken := testenv.ServiceToken(t, etcd, prefix, svc), testenv.ServiceToken(t, etcd, prefix, "front")

	type inst struct{ id, zone string }
	var insts []inst
	for i := range 10 {
		zone := "zone-a"
		if i >= 6 {
			zone = "zone-b"
		}
		id := fmt.Sprintf("10.0.%d.%d:80", i/6, i)
		insts = append(insts, inst{id, zone})
		r := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: meshHTTP, Token: shopToken,
			Registration: sdk.Registration{Service: svc, Instance: id, Addr: id, Zone: zone}})
		t.Cleanup(r.Close)
	}
	post := func(token, body string) {
		req, _ := http.NewRequest("POST", "http://"+mx.Addr()+"/v1/telemetry", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	// One report per process and window, as the SDK's reporters send them.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			now := time.Now().UnixMilli()
			for _, in := range insts {
				post(shopToken, fmt.Sprintf(`{"reporter":{"service":%q,"instance":%q,"zone":%q},"window_ms":1000,"timestamp_ms":%d,
					"server":{"requests":320,"cpu_util":0.8,"queue_time_ms_avg":1,"queue_time_ms_p99":2,"inflight":4,"client_timeouts":0}}`,
					svc, in.id, in.zone, now))
			}
			for _, zone := range []string{"zone-a", "zone-b"} {
				var calls []string
				for _, in := range insts {
					calls = append(calls, fmt.Sprintf(`{"callee_service":%q,"callee_instance":%q,"requests":160,"errors":0,"timeouts":0,"latency_ms_avg":5,"latency_ms_p99":9}`, svc, in.id))
				}
				post(frontToken, fmt.Sprintf(`{"reporter":{"service":"front","instance":"front-%s","zone":%q},"window_ms":1000,"timestamp_ms":%d,"calls":[%s]}`,
					zone, zone, now, strings.Join(calls, ",")))
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	caller := func(zone string) *sdk.Discovery {
		d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: meshHTTP, Token: frontToken, Wait: time.Second, Zone: zone})
		t.Cleanup(d.Close)
		d.Watch(svc, nil, nil)
		return d
	}
	inB, inA, noZone := caller("zone-b"), caller("zone-a"), caller("")
	// share is the share of a snapshot's weight in each zone: what picking
	// by weight sends there.
	share := func(d *sdk.Discovery) (map[string]float64, *sdk.Snapshot) {
		snap, ok := d.Get(svc)
		if !ok {
			return nil, nil
		}
		out, total := map[string]float64{}, 0.0
		for in, w := range sdk.Eligible(snap) {
			out[in.Zone] += float64(w)
			total += float64(w)
		}
		for z := range out {
			out[z] /= total
		}
		return out, snap
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 0.03 }
	testenv.Eventually(t, 60*time.Second, func() error {
		b, snap := share(inB)
		if snap == nil || len(snap.ZoneRouting) == 0 || !near(b["zone-b"], 0.8) || !near(b["zone-a"], 0.2) {
			return fmt.Errorf("a caller in zone b: weight shares %v, routing %v", b, snap)
		}
		return nil
	})
	// Each caller's Discovery polls on its own: it holds the routing a moment later.
	var snap *sdk.Snapshot
	testenv.Eventually(t, 30*time.Second, func() error {
		var a map[string]float64
		if a, snap = share(inA); snap == nil || len(snap.ZoneRouting) == 0 || !near(a["zone-a"], 1) {
			return fmt.Errorf("a caller in zone a: weight shares %v, want all in zone a", a)
		}
		return nil
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		all, s := share(noZone)
		if s == nil || len(s.ZoneRouting) == 0 || !near(all["zone-a"], 0.6) || !near(all["zone-b"], 0.4) {
			return fmt.Errorf("a caller without a zone: weight shares %v, want the weights as they are (60/40)", all)
		}
		return nil
	})
	t.Logf("routing %v", snap.ZoneRouting)
}
