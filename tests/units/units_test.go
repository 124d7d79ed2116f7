// Package units_test runs unit routing end to end: real etcd, mesh-core,
// config-center, telemetry-mixer and weight-calculator, real Hertz
// instances of a callee in three clusters, and a caller whose SDK follows
// the callee's unit_routing through its config watcher and picks with an
// sdk.UnitBalancer in hertzsdk.Balance.
package units_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/protocol"

	"github.com/sextant-mesh/sextant/api/unitrouting"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

const (
	callee = "orders"
	caller = "front"
)

type mesh struct {
	t        *testing.T
	center   string
	revision int64 // of the callee's unit_routing
	disc     *sdk.Discovery
	router   *sdk.UnitRouter
	watcher  *sdk.ConfigWatcher
	cli      *client.Client
	regs     map[string]*sdk.Registrar // by instance
	rep      *sdk.Reporter
}

// startInstance is a real Hertz server of the callee in cluster that
// answers "<cluster> <addr>".
func startInstance(t *testing.T, cluster string) string {
	t.Helper()
	srv, err := httpx.Listen("127.0.0.1:0", server.WithExitWaitTime(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	srv.GET("/orders/:id", func(_ context.Context, c *app.RequestContext) {
		c.String(200, cluster+" "+addr)
	})
	srv.Start()
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	return addr
}

// start runs the control plane, two instances in c1, two in c2 and one in
// c3, and the caller's SDK.
func start(t *testing.T) *mesh {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	mx := mixertest.Start(t, etcd, prefix, nil)
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 1)
	mc := coretest.Start(t, etcd, prefix, nil)
	cc := centertest.Start(t, etcd, prefix, nil)
	m := &mesh{t: t, center: "http://" + cc.Addr(), regs: map[string]*sdk.Registrar{}}

	calleeToken := testenv.ServiceToken(t, etcd, prefix, callee)
	for _, cluster := range []string{"c1", "c1", "c2", "c2", "c3"} {
		addr := startInstance(t, cluster)
		r := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: mc.Addr(), Token: calleeToken,
			Registration: sdk.Registration{Service: callee, Instance: addr, Addr: addr, Cluster: cluster}})
		t.Cleanup(r.Close)
		m.regs[addr] = r
	}

	token := testenv.ServiceToken(t, etcd, prefix, caller)
	m.disc = sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: mc.Addr(), Token: token, Wait: time.Second})
	t.Cleanup(m.disc.Close)
	m.disc.Watch(callee, nil, nil)
	testenv.Eventually(t, 20*time.Second, func() error {
		if s, ok := m.disc.Get(callee); !ok || len(s.Instances) != 5 {
			return fmt.Errorf("no snapshot with the 5 instances yet")
		}
		return nil
	})
	m.rep = sdk.NewReporter(sdk.ReporterOptions{Mixer: mx.Addr(), Token: token, Service: caller, Instance: "10.0.0.1:8080",
		Window: 100 * time.Millisecond, MaxPending: 1000})
	m.rep.Start()
	t.Cleanup(m.rep.Close)
	m.watcher = sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: cc.Addr(), Service: caller, Instance: "10.0.0.1:8080",
		Calls: []string{callee}, Wait: 2 * time.Second, Token: token})
	m.router = sdk.NewUnitRouter(caller, m.rep)
	m.router.Follow(m.watcher)
	m.watcher.Start()
	t.Cleanup(m.watcher.Close)
	m.cli, _ = client.NewClient()
	m.cli.Use(hertzsdk.Balance(callee, m.disc, sdk.NewUnitBalancer(callee, m.router, nil), nil))
	return m
}

// do is one request of the operator's to the config-center.
func (m *mesh) do(method, path, body string, header ...string) (int, []byte) {
	m.t.Helper()
	req, err := http.NewRequest(method, m.center+path, strings.NewReader(body))
	if err != nil {
		m.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+centertest.AdminToken)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// rules writes the callee's unit_routing and waits until the caller's SDK
// applies it.
func (m *mesh) rules(doc string) {
	m.t.Helper()
	var h []string
	if m.revision != 0 {
		h = []string{"If-Match", strconv.Quote(strconv.FormatInt(m.revision, 10))}
	}
	status, body := m.do("PUT", "/v1/configs/unit_routing/"+callee, doc, h...)
	if status != 200 {
		m.t.Fatalf("PUT unit_routing: %d %s", status, body)
	}
	var e struct {
		Revision int64 `json:"revision"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Revision == 0 {
		m.t.Fatalf("PUT unit_routing answered %s", body)
	}
	m.revision = e.Revision
	testenv.Eventually(m.t, 20*time.Second, func() error {
		if r := m.router.Revision(callee); r != m.revision {
			return fmt.Errorf("the SDK applies revision %d, want %d", r, m.revision)
		}
		return nil
	})
}

// call sends one request with headers (key, value, ...); it answers the
// cluster of the instance that served it.
func (m *mesh) call(kv ...string) (string, error) {
	req, resp := protocol.AcquireRequest(), protocol.AcquireResponse()
	defer protocol.ReleaseRequest(req)
	defer protocol.ReleaseResponse(resp)
	req.SetRequestURI("http://" + callee + "/orders/1")
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	if err := m.cli.Do(context.Background(), req, resp); err != nil {
		return "", err
	}
	if resp.StatusCode() != 200 {
		return "", fmt.Errorf("status %d", resp.StatusCode())
	}
	cluster, _, _ := strings.Cut(string(resp.Body()), " ")
	return cluster, nil
}

func (m *mesh) mustCall(kv ...string) string {
	m.t.Helper()
	c, err := m.call(kv...)
	if err != nil {
		m.t.Fatalf("request %v: %v", kv, err)
	}
	return c
}

func (m *mesh) count(rule, unit, outcome string) int64 {
	return m.router.Count(sdk.UnitCount{Callee: callee, Rule: rule, Unit: unit, Outcome: outcome})
}

// unitsReport is GET /v1/units/report's answer, per rule: unit -> outcome -> count.
func (m *mesh) unitsReport() map[string]map[string]map[string]int64 {
	status, body := m.do("GET", "/v1/units/report?service="+callee, "")
	if status != 200 {
		return nil
	}
	var r struct {
		Rules []struct {
			Rule   string                      `json:"rule"`
			ByUnit map[string]map[string]int64 `json:"by_unit"`
		} `json:"rules"`
	}
	if json.Unmarshal(body, &r) != nil {
		return nil
	}
	out := map[string]map[string]map[string]int64{}
	for _, ru := range r.Rules {
		out[ru.Rule] = ru.ByUnit
	}
	return out
}

// waitReport waits until the config-center's report shows every counter
// of the caller's SDK.
func (m *mesh) waitReport() map[string]map[string]map[string]int64 {
	m.t.Helper()
	var got map[string]map[string]map[string]int64
	testenv.Eventually(m.t, 30*time.Second, func() error {
		got = m.unitsReport()
		for k, n := range m.router.Counts() {
			if got[k.Rule][k.Unit][k.Outcome] != n {
				return fmt.Errorf("report %v, want %s/%s/%s = %d", got, k.Rule, k.Unit, k.Outcome, n)
			}
		}
		return nil
	})
	return got
}

func tenant(i int) string { return fmt.Sprintf("tenant-%03d", i) }

// A rule in observe mode changes nothing, and the report shows where the
// requests would have gone; the rule enforced for 30 % of the tenants sends
// the same tenants to the unit each time; at 100 % all of them.
func TestObserveThenRamp(t *testing.T) {
	m := start(t)
	const tenants, perTenant = 100, 4
	m.rules(`{"rules": [{"name": "gold-to-c2", "match": {"headers": {"x-tier": "gold"}}, "unit": "c2", "mode": "observe"}]}`)

	// Each gold request is followed by one the rule does not match, through
	// the same balancer: both are spread by the weights in force (which the
	// calculator moves, e.g. a tenth for an instance in slow start), so in
	// observe mode the two spreads are alike; enforced, every gold request
	// would go to c2.
	byCluster, plain := map[string]int{}, map[string]int{}
	for i := range tenants {
		for range perTenant {
			byCluster[m.mustCall("x-tier", "gold", "x-tenant-id", tenant(i))]++
			plain[m.mustCall("x-tenant-id", tenant(i))]++
		}
	}
	t.Logf("observe: gold requests by cluster %v, requests no rule matches %v", byCluster, plain)
	for _, c := range []string{"c1", "c2", "c3"} {
		if d := byCluster[c] - plain[c]; d > 40 || d < -40 {
			t.Errorf("observe mode changed the routing: gold %v, others %v", byCluster, plain)
			break
		}
	}
	if byCluster["c2"] == tenants*perTenant {
		t.Errorf("observe mode sent every gold request to the rule's unit: %v", byCluster)
	}
	if n := m.count("gold-to-c2", "c2", unitrouting.Observed); n != tenants*perTenant {
		t.Errorf("observed %d, want %d", n, tenants*perTenant)
	}
	if rep := m.waitReport(); rep["gold-to-c2"]["c2"][unitrouting.Observed] != tenants*perTenant {
		t.Errorf("report %v", rep)
	}

	// 30 %: the tenants whose key hashes below 30 go to c2, every time.
	m.rules(`{"rules": [{"name": "gold-to-c2", "match": {"headers": {"x-tier": "gold"}}, "unit": "c2", "mode": "enforce", "percent": 30}]}`)
	inRamp := 0
	for i := range tenants {
		if unitrouting.Bucket(tenant(i)) < 30 {
			inRamp++
		}
	}
	onlyC2 := map[string]bool{}
	for round := range 2 {
		routedBefore := m.count("gold-to-c2", "c2", unitrouting.Routed)
		allC2 := 0
		for i := range tenants {
			clusters := map[string]int{}
			for range perTenant {
				clusters[m.mustCall("x-tier", "gold", "x-tenant-id", tenant(i))]++
			}
			ramped := unitrouting.Bucket(tenant(i)) < 30
			if ramped && clusters["c2"] != perTenant {
				t.Errorf("round %d: %s is in the 30 %% and went to %v", round, tenant(i), clusters)
			}
			if clusters["c2"] == perTenant {
				allC2++
				if round == 0 {
					onlyC2[tenant(i)] = true
				}
			}
		}
		routed := m.count("gold-to-c2", "c2", unitrouting.Routed) - routedBefore
		t.Logf("30 %% round %d: %d of %d tenants in the ramp (%d requests routed to c2); %d tenants had every request served by c2",
			round, inRamp, tenants, routed, allC2)
		if routed != int64(inRamp*perTenant) {
			t.Errorf("round %d: %d requests routed, want %d", round, routed, inRamp*perTenant)
		}
	}
	if inRamp < 20 || inRamp > 40 {
		t.Errorf("%d of %d tenants in a 30 %% ramp", inRamp, tenants)
	}

	// 100 %: every gold tenant; other requests as before.
	m.rules(`{"rules": [{"name": "gold-to-c2", "match": {"headers": {"x-tier": "gold"}}, "unit": "c2", "mode": "enforce", "percent": 100}]}`)
	others := map[string]int{}
	for i := range tenants {
		if c := m.mustCall("x-tier", "gold", "x-tenant-id", tenant(i)); c != "c2" {
			t.Fatalf("at 100 %% %s went to %s", tenant(i), c)
		}
		others[m.mustCall("x-tenant-id", tenant(i))]++
	}
	// Spread by the weights in force (the calculator may give the single
	// c3 instance a small share, e.g. in slow start), not steered to c2.
	if others["c2"] == tenants || len(others) < 2 {
		t.Errorf("requests no rule matches: %v, want them spread as without the rule", others)
	}
	rep := m.waitReport()
	t.Logf("report: %v", rep)
}

// A rule that lets only some callers into a unit refuses the others; a
// rule that denies a caller refuses it.
func TestGovernanceByRule(t *testing.T) {
	m := start(t)
	// A second caller in the same process, with its own router following
	// the same answers: checkout may enter the secure unit.
	checkout := sdk.NewUnitRouter("checkout", nil)
	checkout.Follow(m.watcher)
	checkoutBal := sdk.NewUnitBalancer(callee, checkout, nil)

	m.rules(`{"rules": [
	  {"name": "secure", "match": {"http": {"path": "/orders/*"}, "headers": {"x-data": "pii"}}, "unit": "c2", "mode": "enforce", "allow_callers": ["checkout"]},
	  {"name": "no-front-drills", "match": {"caller": "front", "headers": {"x-drill": "yes"}}, "unit": "c3", "mode": "enforce", "deny": true}]}`)
	testenv.Eventually(t, 20*time.Second, func() error {
		if checkout.Revision(callee) != m.revision {
			return fmt.Errorf("checkout's router is behind")
		}
		return nil
	})
	for range 10 {
		if _, err := m.call("x-data", "pii"); !errors.Is(err, sdk.ErrUnitDenied) {
			t.Fatalf("front into the secure unit: %v, want ErrUnitDenied", err)
		}
		if _, err := m.call("x-drill", "yes"); !errors.Is(err, sdk.ErrUnitDenied) {
			t.Fatalf("front's drill: %v, want ErrUnitDenied", err)
		}
		if c := m.mustCall("x-data", "none"); c == "" {
			t.Fatal("no answer")
		}
	}
	snap, _ := m.disc.Get(callee)
	checkoutBal.Update(snap)
	for range 10 {
		in, err := checkoutBal.PickFor(sdk.UnitFeatures{HTTPMethod: "GET", Path: "/orders/7",
			Header: func(k string) string { return map[string]string{"x-data": "pii"}[k] }})
		if err != nil || in.Cluster != "c2" {
			t.Fatalf("checkout into the secure unit: %+v %v", in, err)
		}
		checkoutBal.Done(in.Instance, time.Millisecond, false)
	}
	if d := m.count("secure", "c2", unitrouting.Denied); d != 10 {
		t.Errorf("secure denied %d, want 10", d)
	}
	if d := m.count("no-front-drills", "c3", unitrouting.Denied); d != 10 {
		t.Errorf("no-front-drills denied %d, want 10", d)
	}
	if r := checkout.Count(sdk.UnitCount{Callee: callee, Rule: "secure", Unit: "c2", Outcome: unitrouting.Routed}); r != 10 {
		t.Errorf("checkout routed %d, want 10", r)
	}
	t.Logf("report: %v", m.waitReport())
}

// A unit with no healthy instance fails the request or falls back, as its
// rule says, and each is counted.
func TestFallback(t *testing.T) {
	m := start(t)
	m.rules(`{"rules": [
	  {"name": "drill-fail", "match": {"headers": {"x-drill": "fail"}}, "unit": "c3", "mode": "enforce"},
	  {"name": "drill-any", "match": {"headers": {"x-drill": "any"}}, "unit": "c3", "mode": "enforce", "fallback": "any"},
	  {"name": "drill-c1", "match": {"headers": {"x-drill": "c1"}}, "unit": "c3", "mode": "enforce", "fallback": "c1"}]}`)
	for _, v := range []string{"fail", "any", "c1"} {
		if c := m.mustCall("x-drill", v); c != "c3" {
			t.Fatalf("x-drill %s went to %s while c3 is up", v, c)
		}
	}
	// c3's only instance leaves.
	for addr, r := range m.regs {
		snap, _ := m.disc.Get(callee)
		for _, in := range snap.Instances {
			if in.Instance == addr && in.Cluster == "c3" {
				r.Close()
			}
		}
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		snap, _ := m.disc.Get(callee)
		if len(snap.Instances) != 4 {
			return fmt.Errorf("%d instances", len(snap.Instances))
		}
		return nil
	})
	anyClusters := map[string]int{}
	for range 20 {
		if _, err := m.call("x-drill", "fail"); !errors.Is(err, sdk.ErrUnitUnavailable) {
			t.Fatalf("drill-fail: %v, want ErrUnitUnavailable", err)
		}
		anyClusters[m.mustCall("x-drill", "any")]++
		if c := m.mustCall("x-drill", "c1"); c != "c1" {
			t.Fatalf("drill-c1 fell back to %s", c)
		}
	}
	// Spread by the weights in force over what is left (one cluster may
	// hold a small share, e.g. in slow start): served there, all of them.
	if anyClusters["c1"]+anyClusters["c2"] != 20 {
		t.Errorf("fallback any: %v, want all 20 served by the clusters left", anyClusters)
	}
	for _, c := range []struct {
		rule, outcome string
		want          int64
	}{
		{"drill-fail", unitrouting.Failed, 20}, {"drill-any", unitrouting.FellBack, 20}, {"drill-c1", unitrouting.FellBack, 20},
		{"drill-fail", unitrouting.Routed, 1}, {"drill-any", unitrouting.Routed, 1}, {"drill-c1", unitrouting.Routed, 1},
	} {
		if n := m.count(c.rule, "c3", c.outcome); n != c.want {
			t.Errorf("%s %s: %d, want %d", c.rule, c.outcome, n, c.want)
		}
	}
	t.Logf("report: %v", m.waitReport())
}
