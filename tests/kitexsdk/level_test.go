package kitexsdk_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/server"

	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo/comment"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/kitexsdk"
)

// tier is a real Kitex comment server whose handler records the priority
// it serves with and, when next is set, calls next with the handler's ctx.
type tier struct {
	served atomic.Int64
	mu     sync.Mutex
	seen   []sdk.Priority
	next   comment.Client
}

func (s *tier) Get(ctx context.Context, req *demo.GetRequest) (*demo.GetResponse, error) {
	s.served.Add(1)
	p, _ := sdk.PriorityFrom(ctx)
	s.mu.Lock()
	s.seen = append(s.seen, p)
	s.mu.Unlock()
	if s.next != nil {
		return s.next.Get(ctx, req)
	}
	return &demo.GetResponse{Instance: "b"}, nil
}

func startTier(t *testing.T, s *tier, gate *sdk.Gate, edge *sdk.Edge) string {
	t.Helper()
	ln, err := kitexx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := comment.NewServer(s, append(kitexx.ServerOptions(service, ln), server.WithSuite(kitexsdk.NewServerSuite(gate, edge)))...)
	done := kitexx.Serve(srv)
	t.Cleanup(func() { _ = srv.Stop(); <-done })
	return ln.Addr().String()
}

// userAt finds a user id whose user priority, now, is below (or not) 32.
func userAt(t *testing.T, low bool) string {
	for i := range 1000 {
		id := "user-" + strconv.Itoa(i)
		if u := sdk.UserPriority(id, time.Now()); (u < 32) == low && u != 31 && u != 32 {
			return id
		}
	}
	t.Fatal("no such user")
	return ""
}

// Over real Kitex servers, client -> A -> B: A (the edge) gives requests
// their priority from its rules and the user id; B sees the same priority;
// B sheds users below its level and answers with it; A then sheds those
// users at admission, before any work.
func TestPriorityTravelsAndShedsBeforeSending(t *testing.T) {
	bLevel := sdk.Priority{Business: 64, User: 32}.Level()
	rep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "b", Instance: "b-1"})
	b := &tier{}
	bAddr := startTier(t, b, sdk.NewGate(sdk.GateOptions{Threshold: func() int32 { return bLevel }, Reporter: rep}), nil)

	edge := sdk.NewEdge(nil)
	if err := edge.Rules.Update([]byte(`{"default": 10, "rules": [{"name": "get", "priority": 64, "match": {"method": "Get"}}]}`)); err != nil {
		t.Fatal(err)
	}
	a := &tier{next: newClient(t, discovery(t, []sdk.Instance{{Instance: "b-1", Addr: bAddr, Weight: 100, Healthy: true}}), nil)}
	aAddr := startTier(t, a, sdk.NewGate(sdk.GateOptions{}), edge)
	cli := newClient(t, discovery(t, []sdk.Instance{{Instance: "a-1", Addr: aAddr, Weight: 100, Healthy: true}}), nil)

	call := func(user string) error {
		ctx := metainfoUser(context.Background(), user)
		_, err := cli.Get(ctx, &demo.GetRequest{Id: "1"})
		return err
	}
	high, low := userAt(t, false), userAt(t, true)
	if err := call(high); err != nil {
		t.Fatalf("a user above B's level: %v", err)
	}
	want := sdk.Priority{Business: 64, User: sdk.UserPriority(high, time.Now())}
	b.mu.Lock()
	if len(b.seen) != 1 || b.seen[0] != want {
		t.Fatalf("B served with %+v, want %+v (the edge's, carried along)", b.seen, want)
	}
	b.mu.Unlock()

	if err := call(low); !kitexsdk.IsShed(err) {
		t.Fatalf("a user below B's level: %v, want shed", err)
	}
	aBefore, bBefore := a.served.Load(), b.served.Load()
	if bBefore != 1 {
		t.Fatalf("B served %d, want only the first call", bBefore)
	}
	// B answered A with its level: A (the edge) now sheds the same user at
	// admission, before its handler does any work, and tells its caller.
	for range 5 {
		if err := call(low); !kitexsdk.IsShed(err) {
			t.Fatalf("again: %v, want shed", err)
		}
	}
	if a.served.Load() != aBefore || b.served.Load() != bBefore {
		t.Fatalf("A served %d -> %d, B %d -> %d: not shed at the edge", aBefore, a.served.Load(), bBefore, b.served.Load())
	}
	if err := call(high); err != nil {
		t.Fatalf("the high user after: %v", err)
	}
	// B measured its queueing from when Kitex began reading the request.
	r := rep.Flush(time.Now())
	if r == nil || r.Server == nil || r.Server.QueueTimeMsAvg <= 0 || r.Server.RequestsByLevel[want.Level()] == 0 {
		t.Fatalf("B's report: %+v", r)
	}
}

// metainfoUser sets the user id as a caller would: a metainfo key the edge reads.
func metainfoUser(ctx context.Context, user string) context.Context {
	return metainfo.WithValue(ctx, sdk.DefaultUserIDKey, user)
}

// A priority set with the Kitex adapter travels as persistent metainfo, which
// a Kitex server's ctx carries on, and reads back from it; one set by a
// caller that sends only a business priority gets the highest user priority.
func TestPriorityTravelsAsMetainfo(t *testing.T) {
	p := sdk.Priority{Business: 100, User: 7}
	ctx := kitexsdk.ContextWithPriority(context.Background(), p)
	v, _ := metainfo.GetPersistentValue(ctx, sdk.PriorityKey)
	u, _ := metainfo.GetPersistentValue(ctx, sdk.UserPriorityKey)
	server := metainfo.WithPersistentValue(metainfo.WithPersistentValue(context.Background(), sdk.PriorityKey, v), sdk.UserPriorityKey, u)
	if got, ok := sdk.PriorityFrom(kitexsdk.PriorityContext(server)); !ok || got != p {
		t.Fatalf("from metainfo: %+v %v", got, ok)
	}
	old := metainfo.WithValue(context.Background(), sdk.PriorityKey, "20")
	if got, ok := sdk.PriorityFrom(kitexsdk.PriorityContext(old)); !ok || got != (sdk.Priority{Business: 20, User: sdk.UserPriorities - 1}) {
		t.Fatalf("business only: %+v %v", got, ok)
	}
}
