package hertzsdk_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/protocol"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
)

func userBelow32(t *testing.T, below bool) string {
	for i := range 1000 {
		id := "user-" + strconv.Itoa(i)
		if u := sdk.UserPriority(id, time.Now()); (u < 32) == below && u != 31 && u != 32 {
			return id
		}
	}
	t.Fatal("no such user")
	return ""
}

// Over real Hertz servers, front -> back: the front (the edge) gives each
// request a priority from its URL rules and the user id and sends it on;
// back sheds users below its level and answers with it; the front then
// sheds those users at admission. Both measure queueing from when Hertz
// began reading the request.
func TestPriorityAlongAHertzChain(t *testing.T) {
	backLevel := sdk.Priority{Business: 100, User: 32}.Level()
	backRep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "back", Instance: "back-1"})
	var mu sync.Mutex
	var seen []sdk.Priority
	back, err := httpx.Listen("127.0.0.1:0", append(hertzsdk.ServerOptions(), server.WithExitWaitTime(100*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	back.Use(hertzsdk.Admission(sdk.NewGate(sdk.GateOptions{Threshold: func() int32 { return backLevel }, Reporter: backRep}), nil))
	back.GET("/work", func(ctx context.Context, c *app.RequestContext) {
		p, _ := sdk.PriorityFrom(ctx)
		mu.Lock()
		seen = append(seen, p)
		mu.Unlock()
		c.String(consts.StatusOK, "done")
	})
	back.Start()
	t.Cleanup(func() { back.Stop(context.Background()) })

	cli, _ := client.NewClient()
	cli.Use(hertzsdk.ClientAdmission("back", nil, sdk.NewDownstreams(0, nil)), hertzsdk.CallReporter("front", "back", nil))
	edge := sdk.NewEdge(nil)
	if err := edge.Rules.Update([]byte(`{"default": 20, "rules": [{"name": "feed", "priority": 100, "match": {"http": {"path": "/feed/*"}}}]}`)); err != nil {
		t.Fatal(err)
	}
	var frontServed atomic.Int64
	front, err := httpx.Listen("127.0.0.1:0", append(hertzsdk.ServerOptions(), server.WithExitWaitTime(100*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	front.Use(hertzsdk.Admission(sdk.NewGate(sdk.GateOptions{}), edge))
	front.GET("/feed/home", func(ctx context.Context, c *app.RequestContext) {
		frontServed.Add(1)
		req, resp := protocol.AcquireRequest(), protocol.AcquireResponse()
		defer protocol.ReleaseRequest(req)
		defer protocol.ReleaseResponse(resp)
		req.SetRequestURI("http://" + back.Addr() + "/work")
		if err := cli.Do(ctx, req, resp); err != nil || resp.StatusCode() != 200 {
			c.String(consts.StatusServiceUnavailable, "back shed")
			return
		}
		c.String(consts.StatusOK, "ok")
	})
	front.Start()
	t.Cleanup(func() { front.Stop(context.Background()) })

	outside, _ := client.NewClient()
	call := func(user string) int {
		req, resp := protocol.AcquireRequest(), protocol.AcquireResponse()
		req.SetRequestURI("http://" + front.Addr() + "/feed/home")
		req.Header.Set("x-user-id", user)
		if err := outside.Do(context.Background(), req, resp); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode()
	}
	high, low := userBelow32(t, false), userBelow32(t, true)
	if s := call(high); s != 200 {
		t.Fatalf("a user above back's level: %d", s)
	}
	want := sdk.Priority{Business: 100, User: sdk.UserPriority(high, time.Now())}
	mu.Lock()
	if len(seen) != 1 || seen[0] != want {
		t.Fatalf("back served with %+v, want %+v", seen, want)
	}
	mu.Unlock()
	if s := call(low); s != 503 {
		t.Fatalf("a user below back's level: %d", s)
	}
	before := frontServed.Load()
	for range 5 {
		if s := call(low); s != 503 {
			t.Fatalf("again: %d", s)
		}
	}
	if frontServed.Load() != before {
		t.Fatalf("the front's handler ran %d more times: not shed at admission", frontServed.Load()-before)
	}
	r := backRep.Flush(time.Now())
	if r == nil || r.Server == nil || r.Server.QueueTimeMsAvg <= 0 || r.Server.RequestsByLevel[want.Level()] != 1 {
		t.Fatalf("back's report: %+v", r.Server)
	}
}
