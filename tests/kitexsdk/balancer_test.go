package kitexsdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/circuitbreak"
	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo/comment"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/kitexsdk"
)

const service = "comment-svc"

// backend is a real Kitex comment server on a free loopback port that names
// itself in its answers.
type backend struct {
	id    string
	delay time.Duration
	fail  bool
}

func (b *backend) Get(context.Context, *demo.GetRequest) (*demo.GetResponse, error) {
	time.Sleep(b.delay)
	if b.fail {
		return nil, errors.New("broken on purpose")
	}
	return &demo.GetResponse{Instance: b.id}, nil
}

func startBackend(t *testing.T, b *backend) string {
	t.Helper()
	ln, err := kitexx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gate := sdk.NewGate(sdk.GateOptions{})
	srv := comment.NewServer(b, append(kitexx.ServerOptions(service, ln), server.WithSuite(kitexsdk.NewServerSuite(gate, nil)))...)
	done := kitexx.Serve(srv)
	t.Cleanup(func() { _ = srv.Stop(); <-done })
	return ln.Addr().String()
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// discovery is an sdk.Discovery following a stand-in mesh-core that
// answers snap, and holds it.
func discovery(t *testing.T, instances []sdk.Instance) *sdk.Discovery {
	t.Helper()
	snap := sdk.Snapshot{Discovery: api.Discovery{Service: service, Version: 7, Instances: instances, Overload: sdk.Overload{State: "normal"}}}
	mc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("version") == strconv.FormatInt(snap.Version, 10) {
			select { // the long poll: nothing new
			case <-r.Context().Done():
			case <-time.After(time.Second):
			}
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if r.URL.Path == "/v1/discovery" { // the poll for several services
			_ = json.NewEncoder(w).Encode(api.DiscoveryBatch{Version: snap.Version, Services: []api.Discovery{snap.Discovery}})
			return
		}
		_ = json.NewEncoder(w).Encode(snap)
	}))
	t.Cleanup(mc.Close)
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: mc.Listener.Addr().String(), Wait: time.Second})
	t.Cleanup(d.Close)
	d.Watch(service, nil, nil)
	testenv.Eventually(t, 10*time.Second, func() error {
		if s, ok := d.Get(service); !ok || s.Version != snap.Version {
			return errors.New("no answer from mesh-core yet")
		}
		return nil
	})
	return d
}

func newClient(t *testing.T, d *sdk.Discovery, opts []kitexsdk.Option, extra ...client.Option) comment.Client {
	t.Helper()
	o := append(kitexsdk.ClientOptions(service, d, nil, nil, opts...), client.WithRPCTimeout(5*time.Second))
	c, err := comment.NewClient(service, append(o, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// load makes workers x calls calls and counts the answers by instance.
func load(c comment.Client, workers, calls int) (served map[string]int, failed int) {
	var mu sync.Mutex
	served = map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range calls {
				resp, err := c.Get(context.Background(), &demo.GetRequest{Id: "1"})
				mu.Lock()
				if err != nil {
					failed++
				} else {
					served[resp.Instance]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return served, failed
}

// The adapter hands mesh-core's weights and instance ids to the sdk
// balancer: through the plain weighted picker, weights 900 and 100 split
// the calls about 9:1 between two equal Kitex servers.
func TestLoadBalancerCarriesWeights(t *testing.T) {
	d := discovery(t, []sdk.Instance{
		{Instance: "heavy", Addr: startBackend(t, &backend{id: "heavy"}), Weight: 900, Healthy: true},
		{Instance: "light", Addr: startBackend(t, &backend{id: "light"}), Weight: 100, Healthy: true},
	})
	plain := kitexsdk.NewLoadBalancer(func() sdk.Balancer { return new(sdk.Picker) })
	served, failed := load(newClient(t, d, []kitexsdk.Option{kitexsdk.WithLoadBalancer(plain)}), 1, 1000)
	if failed != 0 || served["light"] < 60 || served["light"] > 140 || served["heavy"]+served["light"] != 1000 {
		t.Fatalf("served %v, %d failed; want about 900/100", served, failed)
	}
}

// Through the hybrid balancer, two equal Kitex servers with
// weights 900 and 100 share sequential calls about 9:1: the local rule
// leaves the weights alone while latencies stay within its tolerance. The
// servers take 30 ms, so that the scheduling delays of a busy machine (a
// few ms, at times tens) stay small beside it.
func TestHybridBalancerFollowsWeights(t *testing.T) {
	d := discovery(t, []sdk.Instance{
		{Instance: "heavy", Addr: startBackend(t, &backend{id: "heavy", delay: 30 * time.Millisecond}), Weight: 900, Healthy: true},
		{Instance: "light", Addr: startBackend(t, &backend{id: "light", delay: 30 * time.Millisecond}), Weight: 100, Healthy: true},
	})
	// A tolerance of 10: the scheduling delays of a busy machine (tens of
	// ms at times, on one call of 30 ms) stay within it, as a real
	// service's own variation stays within the default's.
	hybrid := kitexsdk.NewHybridBalancer(sdk.HybridOptions{Tolerance: 10})
	served, failed := load(newClient(t, d, []kitexsdk.Option{kitexsdk.WithLoadBalancer(hybrid)}), 1, 200)
	t.Logf("served %v", served)
	if failed != 0 || served["light"] < 6 || served["light"] > 50 || served["heavy"]+served["light"] != 200 {
		t.Fatalf("served %v, %d failed; want about 180/20", served, failed)
	}
}

// With equal weights, a Kitex server 50 times slower than the other gets
// far less than its half of concurrent calls through the default (hybrid)
// balancer, which sees its latency.
func TestHybridBalancerAvoidsSlowInstance(t *testing.T) {
	d := discovery(t, []sdk.Instance{
		{Instance: "fast", Addr: startBackend(t, &backend{id: "fast", delay: time.Millisecond}), Weight: 100, Healthy: true},
		{Instance: "slow", Addr: startBackend(t, &backend{id: "slow", delay: 50 * time.Millisecond}), Weight: 100, Healthy: true},
	})
	served, failed := load(newClient(t, d, nil), 16, 40)
	share := float64(served["slow"]) / float64(served["fast"]+served["slow"])
	t.Logf("served %v; the slow instance's share %.3f", served, share)
	if failed != 0 || share >= 0.25 {
		t.Fatalf("served %v, %d failed: the slow instance took %.0f%% of the calls, want well under its equal-weight 50%%", served, failed, share*100)
	}
}

// Instances mesh-core ejects (unhealthy, or weight 0) get no call, though
// they are up and would answer.
func TestHybridBalancerSkipsEjected(t *testing.T) {
	d := discovery(t, []sdk.Instance{
		{Instance: "a", Addr: startBackend(t, &backend{id: "a"}), Weight: 100, Healthy: true},
		{Instance: "b", Addr: startBackend(t, &backend{id: "b"}), Weight: 100, Healthy: true},
		{Instance: "unhealthy", Addr: startBackend(t, &backend{id: "unhealthy"}), Weight: 100, Healthy: false},
		{Instance: "zero", Addr: startBackend(t, &backend{id: "zero"}), Weight: 0, Healthy: true},
	})
	served, failed := load(newClient(t, d, nil), 4, 100)
	if failed != 0 || served["unhealthy"] != 0 || served["zero"] != 0 || served["a"]+served["b"] != 400 {
		t.Fatalf("served %v, %d failed; want all 400 on a and b", served, failed)
	}
}

// counting wraps a HybridPicker and counts what the adapter tells it.
type counting struct {
	sdk.Balancer
	mu                   sync.Mutex
	picks, dones, failed map[string]int
}

func (c *counting) Pick() (sdk.Instance, error) {
	in, err := c.Balancer.Pick()
	if err == nil {
		c.mu.Lock()
		c.picks[in.Instance]++
		c.mu.Unlock()
	}
	return in, err
}

func (c *counting) Done(instance string, latency time.Duration, failed bool) {
	c.mu.Lock()
	c.dones[instance]++
	if failed {
		c.failed[instance]++
	}
	c.mu.Unlock()
	c.Balancer.Done(instance, latency, failed)
}

// Every pick is settled exactly once, whatever became of it: served,
// answered with an error, refused a connection (Kitex tries another
// instance in the same call), or refused by Kitex's instance circuit
// breaker before reaching the instance middlewares. So no in-flight count
// is left behind.
func TestHybridBalancerSettlesEveryAttempt(t *testing.T) {
	d := discovery(t, []sdk.Instance{
		{Instance: "ok", Addr: startBackend(t, &backend{id: "ok", delay: time.Millisecond}), Weight: 100, Healthy: true},
		{Instance: "broken", Addr: startBackend(t, &backend{id: "broken", fail: true}), Weight: 100, Healthy: true},
		{Instance: "dead", Addr: deadAddr(t), Weight: 100, Healthy: true},
	})
	cnt := &counting{Balancer: sdk.NewHybridPicker(sdk.HybridOptions{}),
		picks: map[string]int{}, dones: map[string]int{}, failed: map[string]int{}}
	lb := kitexsdk.NewLoadBalancer(func() sdk.Balancer { return cnt })

	cb := circuitbreak.NewCBSuite(circuitbreak.RPCInfo2Key)
	t.Cleanup(func() { _ = cb.Close() })
	cb.UpdateInstanceCBConfig(circuitbreak.CBConfig{Enable: true, ErrRate: 0.5, MinSample: 3})
	var mu sync.Mutex
	reached := map[string]int{} // attempts that got past the breaker, by instance
	countReached := func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req, resp any) error {
			id, _ := rpcinfo.GetRPCInfo(ctx).To().Tag(kitexsdk.InstanceTag)
			mu.Lock()
			reached[id]++
			mu.Unlock()
			return next(ctx, req, resp)
		}
	}
	c := newClient(t, d, []kitexsdk.Option{kitexsdk.WithLoadBalancer(lb)},
		client.WithCircuitBreaker(cb), client.WithInstanceMW(countReached))
	served, failed := load(c, 8, 40)

	cnt.mu.Lock()
	defer cnt.mu.Unlock()
	t.Logf("served %v, %d calls failed; picks %v, settled %v (failed %v), past the breaker %v", served, failed, cnt.picks, cnt.dones, cnt.failed, reached)
	for _, id := range []string{"ok", "broken", "dead"} {
		if cnt.picks[id] != cnt.dones[id] {
			t.Errorf("%s: %d picks, %d settled", id, cnt.picks[id], cnt.dones[id])
		}
	}
	if cnt.failed["broken"] == 0 || cnt.failed["broken"] != cnt.dones["broken"] || cnt.failed["dead"] != cnt.dones["dead"] || cnt.failed["ok"] != 0 {
		t.Errorf("want every attempt on broken and dead settled as failed, none on ok")
	}
	if reached["dead"] >= cnt.picks["dead"] {
		t.Errorf("the breaker refused no attempt on the dead instance (%d picks, %d past it): that path went untested", cnt.picks["dead"], reached["dead"])
	}
}
