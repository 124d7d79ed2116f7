package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/lifecycle"
)

// journal records what the components of a test did, in order.
type journal struct {
	mu     sync.Mutex
	events []string
}

func (j *journal) add(event string) {
	j.mu.Lock()
	j.events = append(j.events, event)
	j.mu.Unlock()
}

func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

// fake is a Starter that writes to a journal: "start x" when started, "run x"
// when it runs, "stop x" when its context ends, "release x" when the group
// stops it before it started.
type fake struct {
	name     string
	j        *journal
	startErr error // Start's error
	stopErr  error // Run's error on a clean stop
	hang     chan struct{}
	started  bool
}

func (f *fake) Start() error {
	f.j.add("start " + f.name)
	f.started = f.startErr == nil
	return f.startErr
}

func (f *fake) Run(ctx context.Context) error {
	if !f.started && ctx.Err() != nil {
		f.j.add("release " + f.name)
		return nil
	}
	f.j.add("run " + f.name)
	<-ctx.Done()
	if f.hang != nil {
		<-f.hang
	}
	f.j.add("stop " + f.name)
	return f.stopErr
}

var _ lifecycle.Starter = (*fake)(nil)

func TestGroupStartsInOrderAndStopsInReverse(t *testing.T) {
	j := &journal{}
	g := lifecycle.NewGroup()
	g.Add("a", &fake{name: "a", j: j})
	g.Add("b", &fake{name: "b", j: j})
	g.Add("loop", lifecycle.Loop(func(ctx context.Context) {
		j.add("run loop")
		<-ctx.Done()
		j.add("stop loop")
	}))
	g.Add("c", &fake{name: "c", j: j})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if got := with(j.get(), "start "); !slices.Equal(got, []string{"start a", "start b", "start c"}) {
		t.Fatalf("start order %v", got)
	}
	// Run is called in the background: wait until every part runs.
	waitFor(t, func() bool { return len(with(j.get(), "run ")) == 4 })
	if err := g.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := with(j.get(), "stop "); !slices.Equal(got, []string{"stop c", "stop loop", "stop b", "stop a"}) {
		t.Fatalf("stop order %v, want c, loop, b, a", got)
	}
}

// without is the events that do not start with prefix.
func without(events []string, prefix string) []string {
	return slices.DeleteFunc(events, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

// with is the events that start with prefix.
func with(events []string, prefix string) []string {
	var out []string
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}

func TestGroupStartReturnsTheFirstErrorAndStopsWhatStarted(t *testing.T) {
	j := &journal{}
	boom := errors.New("port taken")
	g := lifecycle.NewGroup()
	g.Add("a", &fake{name: "a", j: j})
	g.Add("b", &fake{name: "b", j: j})
	g.Add("c", &fake{name: "c", j: j, startErr: boom})
	g.Add("d", &fake{name: "d", j: j, startErr: errors.New("never reached")})
	err := g.Start()
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "c: port taken") {
		t.Fatalf("Start: %v, want c's error", err)
	}
	// What started stopped, in reverse; c and d, never started, released
	// what they hold; d was never asked to start.
	want := []string{"start a", "start b", "start c", "release d", "release c", "stop b", "stop a"}
	if got := without(j.get(), "run "); !slices.Equal(got, want) {
		t.Fatalf("journal\n got %v\nwant %v", got, want)
	}
	if err := g.Stop(context.Background()); err != nil {
		t.Fatalf("Stop after a failed Start: %v", err)
	}
	if err := g.Start(); !errors.Is(err, lifecycle.ErrStopped) {
		t.Fatalf("Start again: %v", err)
	}
}

func TestGroupStartFailsWhenAPartFailsMeanwhile(t *testing.T) {
	boom := errors.New("serve failed")
	g := lifecycle.NewGroup()
	g.Add("failing", lifecycle.Func(func(context.Context) error { return boom }))
	g.Add("slow", starterFunc(func() error {
		// Starting takes until the part before has failed.
		for g.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		return nil
	}))
	g.Add("next", starterFunc(func() error {
		t.Error("a part started after a failure")
		return nil
	}))
	if err := g.Start(); !errors.Is(err, boom) {
		t.Fatalf("Start: %v, want the failure of a part started before", err)
	}
}

// starterFunc is a Starter of its Start; its Run waits for ctx.
type starterFunc func() error

func (f starterFunc) Start() error { return f() }

func (f starterFunc) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func TestGroupStopReturnsTheErrorsFirstToStopFirst(t *testing.T) {
	j := &journal{}
	errA, errB := errors.New("a did not flush"), errors.New("b did not drain")
	g := lifecycle.NewGroup()
	g.Add("a", &fake{name: "a", j: j, stopErr: errA})
	g.Add("b", &fake{name: "b", j: j, stopErr: errB})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	err := g.Stop(context.Background())
	if !errors.Is(err, errA) || !errors.Is(err, errB) {
		t.Fatalf("Stop: %v, want both errors", err)
	}
	if want := "b: b did not drain\na: a did not flush"; err.Error() != want {
		t.Fatalf("Stop: %q, want %q (b stops first)", err, want)
	}
	if again := g.Stop(context.Background()); again != err {
		t.Fatalf("second Stop: %v, want the same errors", again)
	}
}

func TestGroupStopWithinTheDeadline(t *testing.T) {
	j := &journal{}
	hang := make(chan struct{})
	defer close(hang)
	aCancelled := make(chan struct{})
	g := lifecycle.NewGroup()
	g.Add("a", lifecycle.Loop(func(ctx context.Context) {
		<-ctx.Done()
		close(aCancelled)
	}))
	g.Add("stuck", &fake{name: "stuck", j: j, hang: hang})
	g.Add("b", &fake{name: "b", j: j})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := g.Stop(ctx)
	if took := time.Since(began); took > time.Second {
		t.Fatalf("Stop took %v past its deadline", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "stuck: not stopped") {
		t.Fatalf("Stop: %v, want stuck: not stopped: deadline exceeded", err)
	}
	// b stopped before; a, after the stuck part, was cancelled anyway.
	if !slices.Contains(j.get(), "stop b") {
		t.Fatalf("b not stopped: %v", j.get())
	}
	select {
	case <-aCancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the part after the stuck one was not cancelled")
	}
}

func TestGroupReportsAFailureAfterStart(t *testing.T) {
	boom := errors.New("listener gone")
	fail := make(chan struct{})
	g := lifecycle.NewGroup()
	g.Add("http", lifecycle.Func(func(ctx context.Context) error {
		select {
		case <-fail:
			return boom
		case <-ctx.Done():
			return nil
		}
	}))
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if g.Err() != nil {
		t.Fatalf("Err before any failure: %v", g.Err())
	}
	close(fail)
	select {
	case <-g.Failed():
	case <-time.After(5 * time.Second):
		t.Fatal("Failed not closed")
	}
	if err := g.Err(); !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "http: ") {
		t.Fatalf("Err: %v", err)
	}
	if err := g.Stop(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Stop: %v, want the failure too", err)
	}
}

func TestOnStopGetsTheStopContext(t *testing.T) {
	type key struct{}
	var got context.Context
	g := lifecycle.NewGroup()
	g.Add("closer", lifecycle.OnStop(func(ctx context.Context) error {
		got = ctx
		return nil
	}))
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), key{}, "stop"), time.Minute)
	defer cancel()
	if err := g.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Deadline(); !ok || got.Value(key{}) != "stop" {
		t.Fatal("OnStop did not get Stop's context")
	}
}

func TestStopBeforeStartReleases(t *testing.T) {
	j := &journal{}
	closed := false
	g := lifecycle.NewGroup()
	g.Add("client", lifecycle.Closer(closerFunc(func() error { closed = true; return nil })))
	g.Add("server", &fake{name: "server", j: j})
	if err := g.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !closed || !slices.Equal(j.get(), []string{"release server"}) {
		t.Fatalf("closed %v, journal %v", closed, j.get())
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
