package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/sdk"
)

// User priorities spread ids evenly, stay put within the hour, and are
// reshuffled the next hour (so the same users are not always the ones shed).
func TestUserPriorityIsEvenAndRotatesHourly(t *testing.T) {
	hour := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	var counts [sdk.UserPriorities]int
	moved := 0
	const n = 64_000
	for i := range n {
		id := "user-" + strconv.Itoa(i)
		u := sdk.UserPriority(id, hour)
		if u < 0 || u >= sdk.UserPriorities {
			t.Fatalf("%s: %d", id, u)
		}
		counts[u]++
		if sdk.UserPriority(id, hour.Add(59*time.Minute)) != u {
			t.Fatalf("%s moved within the hour", id)
		}
		if sdk.UserPriority(id, hour.Add(time.Hour)) != u {
			moved++
		}
	}
	for u, c := range counts {
		if c < n/64*8/10 || c > n/64*12/10 {
			t.Errorf("user priority %d holds %d of %d ids, want about %d", u, c, n, n/64)
		}
	}
	if moved < n*9/10 {
		t.Errorf("%d of %d ids kept their priority the next hour", n-moved, n)
	}
}

// A priority travels in ctx for any client; carried as text (headers,
// metainfo) it parses back, the user priority the highest when absent.
func TestPriorityTravelsWithTheContext(t *testing.T) {
	p := sdk.Priority{Business: 100, User: 7}
	ctx := sdk.ContextWithPriority(context.Background(), p)
	if got, ok := sdk.PriorityFrom(ctx); !ok || got != p {
		t.Fatalf("from ctx: %+v %v", got, ok)
	}
	if got, ok := sdk.ParsePriorities("100", "7"); !ok || got != p {
		t.Fatalf("parsed: %+v %v", got, ok)
	}
	// A caller that sets only a business priority: the highest user priority.
	if got, ok := sdk.ParsePriorities("20", ""); !ok || got != (sdk.Priority{Business: 20, User: sdk.UserPriorities - 1}) {
		t.Fatalf("business only: %+v %v", got, ok)
	}
	if _, ok := sdk.PriorityFrom(context.Background()); ok {
		t.Fatal("a priority from nothing")
	}
}

// The edge gives the rules' priority, and a user priority from the user id,
// else the request id, else at random; the overload config renames the keys.
func TestEdgeAssigns(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	e := sdk.NewEdge(nil)
	if err := e.Rules.Update([]byte(`{"default": 30, "rules": [{"name": "feed", "priority": 100, "match": {"http": {"path": "/feed/*"}}}]}`)); err != nil {
		t.Fatal(err)
	}
	headers := func(h map[string]string) func(string) string { return func(k string) string { return h[k] } }
	p := e.Assign(sdk.PriorityFeatures{HTTPMethod: "GET", Path: "/feed/1", Header: headers(map[string]string{"x-user-id": "alice", "x-request-id": "r1"})}, now)
	if p.Business != 100 || p.User != sdk.UserPriority("alice", now) {
		t.Fatalf("feed with a user: %+v", p)
	}
	p = e.Assign(sdk.PriorityFeatures{HTTPMethod: "GET", Path: "/other", Header: headers(map[string]string{"x-request-id": "r1"})}, now)
	if p.Business != 30 || p.User != sdk.UserPriority("r1", now) {
		t.Fatalf("default with a request id: %+v", p)
	}
	seen := map[int32]bool{}
	for range 1000 {
		seen[e.Assign(sdk.PriorityFeatures{Path: "/other"}, now).User] = true
	}
	if len(seen) < 50 {
		t.Fatalf("without ids, %d distinct user priorities of 64", len(seen))
	}
	var nilEdge *sdk.Edge
	if p := nilEdge.Assign(sdk.PriorityFeatures{Header: headers(map[string]string{"x-user-id": "bob"})}, now); p.Business != 64 || p.User != sdk.UserPriority("bob", now) {
		t.Fatalf("nil edge: %+v", p)
	}

	// The overload config of the service renames the user id key.
	fc, addr := newFakeCenter(t)
	fc.set(1, sdk.EffectiveConfig{Kind: "overload", Scope: "feed-api", Revision: 2, Document: json.RawMessage(`{"user_id_key": "x-uid"}`)})
	w := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: addr, Service: "feed-api", Instance: "10.0.0.1:80", Wait: time.Second})
	w.Start()
	defer w.Close()
	eventually(t, "the first answer", func() bool { return w.Current() != nil })
	followed := sdk.NewEdge(w)
	p = followed.Assign(sdk.PriorityFeatures{Header: headers(map[string]string{"x-uid": "carol", "x-user-id": "alice"})}, now)
	if p.User != sdk.UserPriority("carol", now) {
		t.Fatalf("user id from x-uid: %+v, want %d", p, sdk.UserPriority("carol", now))
	}
}

// Callers shed before sending what the callee's answers or policy say it
// would shed, and forget an answer after the TTL.
func TestDownstreamsShedBeforeSending(t *testing.T) {
	now := time.Unix(1e9, 0)
	d := sdk.NewDownstreams(2*time.Second, func() time.Time { return now })
	low, high := sdk.Priority{Business: 64, User: 3}, sdk.Priority{Business: 64, User: 40}
	d.Observe("b", sdk.Priority{Business: 64, User: 32}.Level())
	if shed, _ := d.ShedBeforeSending("b", low, 0); !shed {
		t.Fatal("a level below the answer's was sent")
	}
	if shed, _ := d.ShedBeforeSending("b", high, 0); shed {
		t.Fatal("a level above the answer's was shed")
	}
	if shed, level := d.ShedBeforeSending("b", high, sdk.Priority{Business: 100}.Level()); !shed || level != 6400 {
		t.Fatalf("the policy's level: shed %v at %d", shed, level)
	}
	now = now.Add(3 * time.Second)
	if shed, _ := d.ShedBeforeSending("b", low, 0); shed {
		t.Fatal("an answer older than the TTL still sheds")
	}
}

// A Gate answers its callers with the level its callees answered while it
// served the same method, when above its own, until the TTL passes.
func TestGateAdvertisesItsCalleesLevel(t *testing.T) {
	now := time.Unix(1e9, 0)
	own := sdk.Priority{Business: 64, User: 10}.Level()
	g := sdk.NewGate(sdk.GateOptions{Threshold: func() int32 { return own }, Now: func() time.Time { return now }, DownstreamTTL: 2 * time.Second})
	p := sdk.Priority{Business: 64, User: 50}
	a, err := g.Enter(context.Background(), now, p, "front", "Get")
	if err != nil {
		t.Fatal(err)
	}
	ctx := a.Context(context.Background())
	if got, _ := sdk.PriorityFrom(ctx); got != p {
		t.Fatalf("the admitted request's ctx carries %+v", got)
	}
	callee := sdk.Priority{Business: 64, User: 30}.Level()
	sdk.ObserveDownstream(ctx, callee)
	a.Done()
	if l := g.AdmitLevel("Get"); l != callee {
		t.Fatalf("Get answers %d, want the callee's %d", l, callee)
	}
	if l := g.AdmitLevel("Put"); l != own {
		t.Fatalf("another method answers %d, want the Gate's own %d", l, own)
	}
	now = now.Add(3 * time.Second)
	if l := g.AdmitLevel("Get"); l != own {
		t.Fatalf("after the TTL: %d, want %d", l, own)
	}
}

// A request served past its caller's deadline counts as a client timeout in
// the server's report, once.
func TestGateCountsClientTimeouts(t *testing.T) {
	now := time.Unix(1e9, 0)
	clock := func() time.Time { return now }
	rep := sdk.NewReporter(sdk.ReporterOptions{Service: "b", Instance: "b-1", Now: clock, Utilization: func(time.Duration) float64 { return 0.5 }})
	g := sdk.NewGate(sdk.GateOptions{Reporter: rep, Now: clock})
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(100*time.Millisecond))
	defer cancel()
	late, _ := g.Enter(ctx, now, sdk.Priority{Business: 64}, "a", "Get")
	longer, cancel2 := context.WithDeadline(context.Background(), now.Add(time.Second))
	defer cancel2()
	inTime, _ := g.Enter(longer, now, sdk.Priority{Business: 64}, "a", "Get")
	now = now.Add(200 * time.Millisecond)
	late.Done()
	inTime.Done()
	r := rep.Flush(now.Add(time.Second))
	if r == nil || r.Server == nil || r.Server.ClientTimeouts != 1 || r.Server.Requests != 2 {
		t.Fatalf("report %+v", r.Server)
	}
	if len(r.Server.RequestsByLevel) != 1 || r.Server.RequestsByLevel[sdk.Priority{Business: 64}.Level()] != 2 {
		t.Fatalf("requests by level %v", r.Server.RequestsByLevel)
	}
}

// A request whose caller's deadline has passed is shed, not served; a wait
// for a slot lasts no longer than the caller waits.
func TestGateShedsWhatItsCallerGaveUpOn(t *testing.T) {
	g := sdk.NewGate(sdk.GateOptions{Concurrency: 1, MaxQueueWait: time.Minute})
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	if _, err := g.Enter(past, time.Now(), sdk.Priority{Business: 64}, "a", "Get"); !errors.Is(err, sdk.ErrShed) {
		t.Fatalf("past its deadline: %v, want shed", err)
	}
	holder, err := g.Enter(context.Background(), time.Now(), sdk.Priority{Business: 64}, "a", "Get")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Done()
	soon, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	start := time.Now()
	if _, err := g.Enter(soon, time.Now(), sdk.Priority{Business: 64}, "a", "Get"); !errors.Is(err, sdk.ErrShed) {
		t.Fatalf("no slot before the deadline: %v, want shed", err)
	}
	if waited := time.Since(start); waited > 30*time.Second {
		t.Fatalf("waited %s for a slot with a 50 ms deadline and a minute's MaxQueueWait", waited)
	}
}

// A Gate with a concurrency bound sheds, from its queue for slots, the
// lowest waiter that has waited three times the overload queueing threshold,
// and gives the slot to the higher one.
func TestGateTrimsItsStandingQueue(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Unix(1e9, 0).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	g := sdk.NewGate(sdk.GateOptions{Concurrency: 1, Now: now, QueueTime: func() time.Duration { return 10 * time.Millisecond }})
	holder, err := g.Enter(context.Background(), now(), sdk.Priority{Business: 64, User: 63}, "a", "Get")
	if err != nil {
		t.Fatal(err)
	}
	low, high := sdk.Priority{Business: 64, User: 5}, sdk.Priority{Business: 64, User: 50}
	errs := map[int32]chan error{}
	for _, p := range []sdk.Priority{low, high} {
		ch := make(chan error, 1)
		errs[p.Level()] = ch
		go func() {
			a, err := g.Enter(context.Background(), now(), p, "a", "Get")
			if err == nil {
				a.Done()
			}
			ch <- err
		}()
		time.Sleep(20 * time.Millisecond)
	}
	clock.Add(int64(40 * time.Millisecond)) // past three times the queueing threshold
	holder.Done()
	if err := <-errs[low.Level()]; !errors.Is(err, sdk.ErrShed) {
		t.Fatalf("the lowest waiter: %v, want shed", err)
	}
	if err := <-errs[high.Level()]; err != nil {
		t.Fatalf("the higher waiter: %v, want admitted", err)
	}
}
