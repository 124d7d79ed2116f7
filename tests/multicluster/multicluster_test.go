// Package multicluster_test runs two Sextant control planes, each over its
// own etcd, on loopback: cluster A exports a service, cluster B imports it
// (docs/discovery.md#multi-cluster).
package multicluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/protocol"
	kclient "github.com/cloudwego/kitex/client"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/unitrouting"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

const (
	shared = "comment-svc" // exported by A, served in both clusters
	secret = "secret-svc"  // A's, not exported
	local  = "local-svc"   // B's own
)

// backend is a real HTTP server standing for one instance: it counts the
// requests it serves and answers its name.
type backend struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	hits int
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b.mu.Lock()
		b.hits++
		b.mu.Unlock()
		io.WriteString(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

// register keeps an instance of service registered with mesh-core at addr.
func register(t *testing.T, meshCore, token, service, cluster string, b *backend) *sdk.Registrar {
	r := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: meshCore, Token: token,
		Registration: sdk.Registration{Service: service, Instance: b.addr(), Addr: b.addr(), Cluster: cluster}})
	t.Cleanup(r.Close)
	return r
}

// preferLocal is how a data plane keeps its calls in its own cluster and
// fails over to the imported instances when none of its own is eligible:
// the cluster's own healthy instances, else every instance.
func preferLocal(snap *sdk.Snapshot, cluster string) *sdk.Snapshot {
	mine := *snap
	mine.Instances = nil
	for _, in := range snap.Instances {
		if in.Cluster == cluster && in.Peer == "" && in.Healthy && in.Weight > 0 {
			mine.Instances = append(mine.Instances, in)
		}
	}
	if len(mine.Instances) == 0 {
		return snap
	}
	return &mine
}

// localFirst is the SDK's weighted picker over preferLocal's instances, as
// an sdk.Balancer for the Hertz client. (Unit-routing rules in the SDK,
// built apart, choose the cluster by request; this is the simplest rule.)
type localFirst struct {
	cluster string
	sdk.Picker
}

func (b *localFirst) Update(snap *sdk.Snapshot) { b.Picker.Update(preferLocal(snap, b.cluster)) }

// call sends one request to http://service/ through the Hertz client and
// returns who served it.
func call(cli *client.Client, service string) (string, error) {
	req, resp := protocol.AcquireRequest(), protocol.AcquireResponse()
	defer protocol.ReleaseRequest(req)
	defer protocol.ReleaseResponse(resp)
	req.SetRequestURI("http://" + service + "/")
	if err := cli.Do(context.Background(), req, resp); err != nil {
		return "", err
	}
	if resp.StatusCode() != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode())
	}
	return string(resp.Body()), nil
}

// callWith is call with a request header.
func callWith(cli *client.Client, service, key, value string) (string, error) {
	req, resp := protocol.AcquireRequest(), protocol.AcquireResponse()
	defer protocol.ReleaseRequest(req)
	defer protocol.ReleaseResponse(resp)
	req.SetRequestURI("http://" + service + "/")
	req.Header.Set(key, value)
	if err := cli.Do(context.Background(), req, resp); err != nil {
		return "", err
	}
	if resp.StatusCode() != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode())
	}
	return string(resp.Body()), nil
}

// hertzClient is a Hertz client of B's data plane: requests to
// http://{service}/ go to the instance localFirst picks from d.
func hertzClient(t *testing.T, d *sdk.Discovery, service string) *client.Client {
	cli, err := client.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	cli.Use(hertzsdk.Balance(service, d, &localFirst{cluster: "b"}, nil))
	return cli
}

func byCluster(snap *sdk.Snapshot) map[string]int {
	out := map[string]int{}
	for _, in := range snap.Instances {
		out[in.Cluster+"/"+in.Peer]++
	}
	return out
}

func readyz(t *testing.T, addr string) (int, map[string]any) {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer resp.Body.Close()
	var v map[string]any
	json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

func peerState(t *testing.T, addr, peer string) string {
	_, v := readyz(t, addr)
	peers, _ := v["peers"].(map[string]any)
	p, _ := peers[peer].(map[string]any)
	s, _ := p["state"].(string)
	return s
}

func TestTwoControlPlanes(t *testing.T) {
	// Cluster A: its own etcd and mesh-core, exporting shared only.
	etcdA, prefixA := testenv.StartEtcd(t), testenv.Prefix(t)
	mcA := coretest.Start(t, etcdA, prefixA, func(c *core.Config) { c.Peering.Export = []string{shared} })
	// The token A issues to B: a data-plane token of A, held in a file by B.
	tokenFile := filepath.Join(t.TempDir(), "peer-a.token")
	if err := os.WriteFile(tokenFile, []byte(testenv.ServiceToken(t, etcdA, prefixA, "peer-b")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Cluster B: its own etcd and mesh-core, importing from A.
	const ttl = 3 * time.Second
	etcdB, prefixB := testenv.StartEtcd(t), testenv.Prefix(t)
	mcB := coretest.Start(t, etcdB, prefixB, func(c *core.Config) {
		c.Peering.Peers = []core.Peer{{Name: "a", URL: "http://" + mcA.Addr(), TokenFile: tokenFile}}
		c.Peering.TTL, c.Peering.Wait = ttl, 2*time.Second
	})

	// A's instances carry no cluster: B marks them with the peer's name.
	a1, a2, aSecret := newBackend(t, "a1"), newBackend(t, "a2"), newBackend(t, "a-secret")
	tokA := testenv.ServiceToken(t, etcdA, prefixA, shared)
	register(t, mcA.Addr(), tokA, shared, "", a1)
	register(t, mcA.Addr(), tokA, shared, "", a2)
	register(t, mcA.Addr(), testenv.ServiceToken(t, etcdA, prefixA, secret), secret, "", aSecret)
	b1, bLocal := newBackend(t, "b1"), newBackend(t, "b-local")
	regB1 := register(t, mcB.Addr(), testenv.ServiceToken(t, etcdB, prefixB, shared), shared, "b", b1)
	register(t, mcB.Addr(), testenv.ServiceToken(t, etcdB, prefixB, local), local, "b", bLocal)

	// A data plane of B, on B's poll port with a token of B.
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: mcB.PollAddr(), Token: testenv.ServiceToken(t, etcdB, prefixB, "caller"), Wait: time.Second})
	defer d.Close()
	for _, s := range []string{shared, secret, local} {
		d.Watch(s, nil, nil)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		snap, ok := d.Get(shared)
		if !ok {
			return fmt.Errorf("no snapshot")
		}
		if got := byCluster(snap); got["b/"] != 1 || got["a/a"] != 2 || len(got) != 2 {
			return fmt.Errorf("%s in B by cluster/peer: %v, want b/: 1, a/a: 2", shared, got)
		}
		if s, ok := d.Get(local); !ok || len(s.Instances) != 1 {
			return fmt.Errorf("%s: no instance yet", local)
		}
		return nil
	})
	snap, _ := d.Get(shared)
	for _, in := range snap.Instances {
		if in.Peer == "a" && (in.Weight != api.DefaultStaticWeight || !in.Healthy) {
			t.Errorf("imported %s: weight %d healthy %v, want A's weight as it came (%d, healthy)", in.Instance, in.Weight, in.Healthy, api.DefaultStaticWeight)
		}
	}
	// Not exported: not imported.
	if s, _ := d.Get(secret); len(s.Instances) != 0 {
		t.Errorf("%s is not exported by A, but B serves %d instances of it", secret, len(s.Instances))
	}
	// Read-only in B: not in B's etcd, not removable through B's registry.
	kvs, err := etcdB.Client(t).Get(context.Background(), api.Keys{Prefix: prefixB}.Registry(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs.Kvs {
		if strings.Contains(string(kv.Value), a1.addr()) || strings.Contains(string(kv.Value), a2.addr()) {
			t.Errorf("A's instance stored in B's etcd: %s", kv.Key)
		}
	}
	if n := len(kvs.Kvs); n != 2 {
		t.Errorf("B's etcd holds %d registrations, want its own 2", n)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+mcB.Addr()+"/v1/instances/"+shared+"/"+a1.addr(), nil)
	if resp, err := testenv.HTTP.Do(req); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE of an imported instance in B: %v %v, want 404", resp.StatusCode, err)
	}

	// Calls from B (a Hertz client through the SDK) stay in B while B has
	// an instance.
	cli := hertzClient(t, d, shared)
	for range 20 {
		if who, err := call(cli, shared); err != nil || who != "b1" {
			t.Fatalf("call from B with a local instance served by %q (%v), want b1", who, err)
		}
	}

	// A unit-routing rule of B's data plane: gold requests go to unit b
	// (cluster b), falling back to unit a (cluster a, the peer's instances)
	// when b has no healthy instance.
	router := sdk.NewUnitRouter("caller", nil)
	if err := router.Update(shared, []byte(`{"rules": [{"name": "home", "match": {"headers": {"x-tier": "gold"}},
		"unit": "b", "mode": "enforce", "percent": 100, "fallback": "a"}]}`)); err != nil {
		t.Fatal(err)
	}
	ruled, err := client.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ruled.Use(hertzsdk.Balance(shared, d, sdk.NewUnitBalancer(shared, router, nil), nil))
	gold := func() (string, error) { return callWith(ruled, shared, "x-tier", "gold") }
	for range 10 {
		if who, err := gold(); err != nil || who != "b1" {
			t.Fatalf("a gold call with unit b healthy served by %q (%v), want b1", who, err)
		}
	}

	// B's calculator ejects B's only instance (a policy that also weighs
	// A's imported instances, as B's callers report calls to them): calls
	// fail over to A's instances, by B's weights.
	pub, err := meshcoresvc.NewClient("mesh-core", kclient.WithHostPorts(mcB.KitexAddr()), kclient.WithRPCTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	pol := &meshcore.Policy{Service: shared, Version: 1, ComputedAtMs: time.Now().UnixMilli(), CalculatorId: "test", Overload: &meshcore.Overload{State: "normal"}, Weights: []*meshcore.InstanceWeight{
		{Instance: b1.addr(), Weight: 0, Ejected: true, Reason: "errors"},
		{Instance: a1.addr(), Weight: 300, Reason: "computed"},
		{Instance: a2.addr(), Weight: 100, Reason: "computed"},
	}}
	if _, err := pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: pol}); err != nil {
		t.Fatalf("B's policy ejecting B's instance: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		snap, _ := d.Get(shared)
		for _, in := range snap.Instances {
			if in.Instance == b1.addr() && in.Healthy {
				return fmt.Errorf("b1 not ejected yet")
			}
		}
		return nil
	})
	served := map[string]int{}
	for range 40 {
		who, err := call(cli, shared)
		if err != nil {
			t.Fatalf("call with B's instance ejected: %v", err)
		}
		served[who]++
	}
	if served["a1"] != 30 || served["a2"] != 10 {
		t.Errorf("with B's instance ejected, calls served by %v, want a1 30 and a2 10 (B's weights 300:100)", served)
	}
	// The rule's fallback sends gold calls to cluster a, counted as such.
	for range 10 {
		if who, err := gold(); err != nil || (who != "a1" && who != "a2") {
			t.Fatalf("a gold call with unit b ejected served by %q (%v), want A's instances by the rule's fallback", who, err)
		}
	}
	fellBack := int64(0)
	for c, n := range router.Counts() {
		if c.Rule == "home" && c.Outcome == unitrouting.FellBack {
			fellBack += n
		}
	}
	if fellBack != 10 {
		t.Errorf("fallbacks counted %d, want the 10 gold calls (counts %v)", fellBack, router.Counts())
	}

	// B's only instance goes: calls go to A's instances.
	regB1.Close()
	testenv.Eventually(t, 20*time.Second, func() error {
		snap, _ := d.Get(shared)
		if got := byCluster(snap); got["b/"] != 0 || got["a/a"] != 2 {
			return fmt.Errorf("%s in B: %v, want only A's 2", shared, got)
		}
		return nil
	})
	served = map[string]int{}
	for range 40 {
		who, err := call(cli, shared)
		if err != nil {
			t.Fatalf("call after B's instance left: %v", err)
		}
		served[who]++
	}
	if served["a1"]+served["a2"] != 40 || served["a1"] == 0 || served["a2"] == 0 {
		t.Errorf("after B's instance left, calls served by %v, want all 40 by a1 and a2", served)
	}

	// A's control plane stops (mesh-core and etcd): B's own services do not
	// change, B stays ready, A's instances are kept until the TTL, then dropped.
	before, _ := d.Get(local)
	if code, _ := readyz(t, mcB.Addr()); code != http.StatusOK || peerState(t, mcB.Addr(), "a") != core.PeerConnected {
		t.Fatalf("B before A stops: readyz %d, peer a %q", code, peerState(t, mcB.Addr(), "a"))
	}
	// B's TTL counts from A's last answer: at the latest, as A stops.
	stopped := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := mcA.Stop(ctx); err != nil {
		t.Fatalf("stop A's mesh-core: %v", err)
	}
	etcdA.Stop()
	testenv.Eventually(t, 20*time.Second, func() error {
		if s := peerState(t, mcB.Addr(), "a"); s != core.PeerUnreachable {
			return fmt.Errorf("peer a is %q, want unreachable", s)
		}
		return nil
	})
	if snap, _ := d.Get(shared); byCluster(snap)["a/a"] != 2 && time.Since(stopped) < ttl {
		t.Errorf("A's instances dropped %s after A stopped, before the TTL (%s)", time.Since(stopped), ttl)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		snap, _ := d.Get(shared)
		if n := len(snap.Instances); n != 0 {
			return fmt.Errorf("%s in B: %d instances, want A's dropped after %s", shared, n, ttl)
		}
		return nil
	})
	if gone := time.Since(stopped); gone < ttl {
		t.Errorf("A's instances dropped %s after A stopped, before the TTL (%s)", gone, ttl)
	}
	if s := peerState(t, mcB.Addr(), "a"); s != core.PeerLost {
		t.Errorf("peer a is %q after the TTL, want lost", s)
	}
	if v := testenv.Metric(t, mcB.Addr(), `sextant_meshcore_peer_drops_total{peer="a"}`); v != 1 {
		t.Errorf("peer drops: %v, want 1", v)
	}
	if v := testenv.Metric(t, mcB.Addr(), `sextant_meshcore_peer_up{peer="a"}`); v != 0 {
		t.Errorf("peer_up: %v, want 0", v)
	}
	// B's own service: the same answer as before A stopped, and B ready.
	after, _ := d.Get(local)
	if after.Version != before.Version || after.Stale || len(after.Instances) != 1 || after.Instances[0].Addr != bLocal.addr() {
		t.Errorf("%s in B after A stopped: version %d stale %v %d instances, want version %d with %s",
			local, after.Version, after.Stale, len(after.Instances), before.Version, bLocal.addr())
	}
	if code, v := readyz(t, mcB.Addr()); code != http.StatusOK || v["status"] != "ready" || v["stale"] == true {
		t.Errorf("B's readyz with A lost: %d %v, want 200 ready, not stale", code, v)
	}
	if who, err := call(hertzClient(t, d, local), local); err != nil || who != "b-local" {
		t.Errorf("call to %s in B with A lost: %q %v", local, who, err)
	}
}
