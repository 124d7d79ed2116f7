package hertzsdk_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/protocol"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
)

// A Hertz server behind the admission middleware, called by a Hertz client
// with the reporting middleware: priorities below the threshold get 503 with
// Retry-After, the others through; enforced access rules answer 403, dry-run
// ones let the request through.
func TestAdmissionOverHTTP(t *testing.T) {
	var threshold atomic.Int32
	threshold.Store(sdk.Priority{Business: 64}.Level()) // all of priority 64 and above
	rules := &sdk.AccessRules{Rules: []api.AccessRule{
		{Name: "no-batch", Type: "deny", Callers: []string{"batch-job"}, Mode: "enforce"},
		{Name: "trial", Type: "deny", Callers: []string{"feed-api"}, Mode: "dry_run"},
	}}
	gate := sdk.NewGate(sdk.GateOptions{Threshold: func() int32 { return threshold.Load() }, Access: func() *sdk.AccessRules { return rules }})
	srv, err := httpx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Use(hertzsdk.Admission(gate, nil))
	srv.GET("/comment", func(_ context.Context, c *app.RequestContext) { c.String(consts.StatusOK, "ok") })
	srv.Start()
	defer srv.Stop(context.Background())

	call := func(caller string, priority int32) *protocol.Response {
		cli, _ := client.NewClient()
		cli.Use(hertzsdk.CallReporter(caller, "comment-svc", nil))
		req, resp := protocol.AcquireRequest(), protocol.AcquireResponse()
		req.SetRequestURI("http://" + srv.Addr() + "/comment")
		if err := cli.Do(hertzsdk.WithPriority(context.Background(), priority), req, resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := call("front", 10); r.StatusCode() != 503 || string(r.Header.Peek("Retry-After")) != "1" {
		t.Fatalf("priority 10 under threshold 64: %d %s", r.StatusCode(), r.Body())
	}
	if r := call("front", 120); r.StatusCode() != 200 {
		t.Fatalf("priority 120: %d %s", r.StatusCode(), r.Body())
	}
	if r := call("batch-job", 120); r.StatusCode() != 403 {
		t.Fatalf("denied caller: %d %s", r.StatusCode(), r.Body())
	}
	if r := call("feed-api", 120); r.StatusCode() != 200 {
		t.Fatalf("dry-run rule blocked a request: %d %s", r.StatusCode(), r.Body())
	}
	threshold.Store(0)
	if r := call("front", 10); r.StatusCode() != 200 {
		t.Fatalf("after the threshold fell: %d", r.StatusCode())
	}
}
