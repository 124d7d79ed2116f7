package hertzsdk_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/protocol"

	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
)

const callee = "comment-svc"

// startInstance is a real Hertz server that answers GET /comment with its
// id and status after delay.
func startInstance(t *testing.T, id string, status int, delay time.Duration) string {
	t.Helper()
	srv, err := httpx.Listen("127.0.0.1:0", server.WithExitWaitTime(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	srv.GET("/comment", func(_ context.Context, c *app.RequestContext) {
		time.Sleep(delay)
		c.String(status, id)
	})
	srv.Start()
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	return srv.Addr()
}

// staticDiscovery never hears from mesh-core: it serves the static instances.
func staticDiscovery(t *testing.T) *sdk.Discovery {
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: "127.0.0.1:1"}) // nothing listens there
	t.Cleanup(d.Close)
	return d
}

// counting wraps a HybridPicker and counts what the middleware tells it.
type counting struct {
	sdk.Balancer
	mu                   sync.Mutex
	picks, dones, failed map[string]int
}

func newCounting() *counting {
	return &counting{Balancer: sdk.NewHybridPicker(sdk.HybridOptions{}),
		picks: map[string]int{}, dones: map[string]int{}, failed: map[string]int{}}
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

func get(cli *client.Client, url string) (int, string, error) {
	req, resp := protocol.AcquireRequest(), protocol.AcquireResponse()
	defer protocol.ReleaseRequest(req)
	defer protocol.ReleaseResponse(resp)
	req.SetRequestURI(url)
	err := cli.Do(context.Background(), req, resp)
	return resp.StatusCode(), string(resp.Body()), err
}

// Requests to http://comment-svc/... go to the instances the balancer
// picks, each settled once, a 500 as failed; CallReporter reports them to
// the instance ids, before or after Balance in the chain; a request to an
// address is left alone.
func TestBalanceSendsToPickedInstancesAndReportsThem(t *testing.T) {
	static := []sdk.Instance{
		{Instance: "a", Addr: startInstance(t, "a", 200, 0)},
		{Instance: "b", Addr: startInstance(t, "b", 200, 0)},
	}
	broken := []sdk.Instance{{Instance: "broken", Addr: startInstance(t, "broken", 500, 0)}}
	d := staticDiscovery(t)
	cnt := newCounting()
	rep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "front", Instance: "front-1"})

	balanceFirst, _ := client.NewClient()
	balanceFirst.Use(hertzsdk.Balance(callee, d, cnt, static), hertzsdk.CallReporter("front", callee, rep))
	reportFirst, _ := client.NewClient()
	reportFirst.Use(hertzsdk.CallReporter("front", callee, rep), hertzsdk.Balance(callee, d, cnt, static))
	toBroken, _ := client.NewClient()
	toBroken.Use(hertzsdk.Balance("broken-svc", d, cnt, broken), hertzsdk.CallReporter("front", "broken-svc", rep))

	answered := map[string]int{}
	call := func(cli *client.Client, url string) {
		t.Helper()
		status, body, err := get(cli, url)
		if err != nil || (body == "broken") != (status == 500) {
			t.Fatalf("%s answered %d: %v", body, status, err)
		}
		answered[body]++
	}
	for range 30 {
		call(balanceFirst, "http://"+callee+"/comment")
		call(reportFirst, "http://"+callee+"/comment")
	}
	for range 5 {
		call(toBroken, "http://broken-svc/comment")
	}
	if status, body, err := get(balanceFirst, "http://"+static[0].Addr+"/comment"); err != nil || status != 200 || body != "a" {
		t.Fatalf("a request to an address: %d %q %v", status, body, err)
	}

	cnt.mu.Lock()
	defer cnt.mu.Unlock()
	t.Logf("answered %v; picks %v, settled %v (failed %v)", answered, cnt.picks, cnt.dones, cnt.failed)
	for _, id := range []string{"a", "b", "broken"} {
		if cnt.picks[id] != answered[id] || cnt.dones[id] != answered[id] {
			t.Errorf("%s answered %d, picked %d, settled %d", id, answered[id], cnt.picks[id], cnt.dones[id])
		}
	}
	if answered["a"]+answered["b"] != 60 || cnt.failed["broken"] != 5 || cnt.failed["a"]+cnt.failed["b"] != 0 {
		t.Errorf("want 60 answers from a and b, and the 5 500s and only they settled as failed")
	}

	reported := map[string]int64{}
	if r := rep.Flush(time.Now()); r != nil {
		for _, c := range r.Calls {
			reported[c.CalleeService+"/"+c.CalleeInstance] += c.Requests
			if c.CalleeInstance == "broken" && c.Errors != c.Requests {
				t.Errorf("broken: %d of %d reported as errors", c.Errors, c.Requests)
			}
		}
	}
	want := map[string]int64{
		callee + "/a": int64(answered["a"]), callee + "/b": int64(answered["b"]), "broken-svc/broken": 5,
		callee + "/" + static[0].Addr: 1, // the request to an address, under its address
	}
	for k, n := range want {
		if reported[k] != n {
			t.Errorf("reported %v, want %v", reported, want)
			break
		}
	}
	if len(reported) != len(want) {
		t.Errorf("reported %v, want %v", reported, want)
	}
}

// With equal weights, an instance 50 times slower than the other gets far
// less than half of concurrent requests through the default (hybrid) balancer.
func TestBalanceAvoidsSlowInstance(t *testing.T) {
	static := []sdk.Instance{
		{Instance: "fast", Addr: startInstance(t, "fast", 200, time.Millisecond)},
		{Instance: "slow", Addr: startInstance(t, "slow", 200, 50*time.Millisecond)},
	}
	cli, _ := client.NewClient()
	cli.Use(hertzsdk.Balance(callee, staticDiscovery(t), nil, static))
	var mu sync.Mutex
	answered := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 30 {
				_, body, err := get(cli, "http://"+callee+"/comment")
				if err != nil {
					body = err.Error()
				}
				mu.Lock()
				answered[body]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	share := float64(answered["slow"]) / 240
	t.Logf("answered %v; the slow instance's share %.3f", answered, share)
	if answered["fast"]+answered["slow"] != 240 || share >= 0.25 {
		t.Fatalf("answered %v: the slow instance took %.0f%%, want well under its equal-weight 50%%", answered, share*100)
	}
}
