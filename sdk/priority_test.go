package sdk_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

const (
	rulesA = `{"default": 40, "rules": [
		{"name": "feed", "priority": 100, "match": {"http": {"method": "GET", "path": "/api/feed/*"}}},
		{"name": "batch-comments", "priority": 20, "match": {"method": "PostComment", "headers": {"x-client": "batch"}}}]}`
	rulesB = `{"default": 30, "rules": [{"name": "feed", "priority": 110, "match": {"http": {"path": "/api/feed/*"}}}]}`
)

var (
	feedGet   = sdk.PriorityFeatures{HTTPMethod: "GET", Path: "/api/feed/home"}
	batchPost = sdk.PriorityFeatures{Method: "PostComment", Header: func(k string) string {
		if k == "x-client" {
			return "batch"
		}
		return ""
	}}
	other = sdk.PriorityFeatures{HTTPMethod: "POST", Path: "/api/orders"}
)

func wantPriority(t testing.TB, p *sdk.PriorityRules, f sdk.PriorityFeatures, want int32, wantOK bool) {
	t.Helper()
	if got, ok := p.Priority(f); got != want || ok != wantOK {
		t.Fatalf("%+v: priority %d (%v), want %d (%v)", f, got, ok, want, wantOK)
	}
}

func TestPriorityRulesUpdate(t *testing.T) {
	p := sdk.NewPriorityRules()
	wantPriority(t, p, feedGet, 64, false)
	var none *sdk.PriorityRules
	wantPriority(t, none, feedGet, 64, false)

	if err := p.Update([]byte(rulesA)); err != nil {
		t.Fatal(err)
	}
	wantPriority(t, p, feedGet, 100, true)
	wantPriority(t, p, batchPost, 20, true)
	wantPriority(t, p, other, 40, true)
	if rule, pr, ok := p.Match(batchPost); rule != "batch-comments" || pr != 20 || !ok {
		t.Fatalf("match %q %d %v", rule, pr, ok)
	}
	if p.Revision() != 0 {
		t.Fatalf("revision %d after Update", p.Revision())
	}

	// A bad document is refused with the field, and the rules stay.
	for doc, field := range map[string]string{
		`{"rules": [{"name": "x", "priority": 1, "match": {"http": {"path": "/a/**"}}}]}`: "rules[0].match.http.path",
		`{"rules": [{"name": "x", "priority": 300, "match": {"method": "M"}}]}`:           "rules[0].priority",
		`{"rules": [{"name": "x", "priority": 1, "match": {}}]}`:                          "rules[0].match",
		`{"default": 1, "extra": true}`:                                                   "extra",
		`not json`:                                                                        "",
	} {
		err := p.Update([]byte(doc))
		var fe *api.FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Fatalf("%s: %v, want an error on %q", doc, err, field)
		}
		wantPriority(t, p, feedGet, 100, true)
	}

	if err := p.Update([]byte(rulesB)); err != nil {
		t.Fatal(err)
	}
	wantPriority(t, p, feedGet, 110, true)
	wantPriority(t, p, batchPost, 30, true)
	p.Clear()
	wantPriority(t, p, feedGet, 64, false)
	if rule, pr, ok := p.Match(feedGet); rule != "" || pr != 64 || ok {
		t.Fatalf("match after Clear: %q %d %v", rule, pr, ok)
	}
}

func TestPriorityRulesDoNotAllocate(t *testing.T) {
	p := sdk.NewPriorityRules()
	if err := p.Update([]byte(rulesA)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []sdk.PriorityFeatures{feedGet, batchPost, other} {
		if n := testing.AllocsPerRun(100, func() { p.Priority(f) }); n != 0 {
			t.Errorf("%+v: %v allocations", f, n)
		}
	}
}

// Readers see either document whole while writers swap them (run with -race).
func TestPriorityRulesConcurrentUse(t *testing.T) {
	p := sdk.NewPriorityRules()
	if err := p.Update([]byte(rulesA)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				feed, _ := p.Priority(feedGet)
				if feed != 100 && feed != 110 {
					errs <- fmt.Errorf("feed priority %d", feed)
					return
				}
				if o, ok := p.Priority(other); !ok || o != 40 && o != 30 {
					errs <- fmt.Errorf("default %d %v", o, ok)
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		doc := rulesA
		if i%2 == 1 {
			doc = rulesB
		}
		if err := p.Update([]byte(doc)); err != nil {
			t.Fatal(err)
		}
		_ = p.Update([]byte(`{"rules": [{"name": "bad", "priority": 1, "match": {}}]}`))
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// fakeCenter serves /v1/watch with the answer a test sets, long-polling as
// the config-center does.
type fakeCenter struct {
	mu      sync.Mutex
	answer  sdk.WatchAnswer
	changed chan struct{}
}

func newFakeCenter(t *testing.T) (*fakeCenter, string) {
	f := &fakeCenter{changed: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/watch" {
			http.NotFound(w, r)
			return
		}
		f.mu.Lock()
		a, ch := f.answer, f.changed
		f.mu.Unlock()
		if r.URL.Query().Get("version") == fmt.Sprint(a.Version) {
			select {
			case <-ch:
			case <-time.After(200 * time.Millisecond):
			}
			f.mu.Lock()
			a = f.answer
			f.mu.Unlock()
			if r.URL.Query().Get("version") == fmt.Sprint(a.Version) {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
		_ = json.NewEncoder(w).Encode(a)
	}))
	t.Cleanup(srv.Close)
	return f, strings.TrimPrefix(srv.URL, "http://")
}

// set makes the answer: the version changes, and priority_rules configs
// are given as scope -> (revision, document).
func (f *fakeCenter) set(version int64, configs ...sdk.EffectiveConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = sdk.WatchAnswer{Service: "feed-api", Version: version, Configs: configs}
	close(f.changed)
	f.changed = make(chan struct{})
}

func priorityConfig(scope string, revision int64, doc string) sdk.EffectiveConfig {
	return sdk.EffectiveConfig{Kind: sdk.PriorityRulesKind, Scope: scope, Revision: revision, Source: "current", Document: json.RawMessage(doc)}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPriorityRulesFollowTheWatcher(t *testing.T) {
	fc, addr := newFakeCenter(t)
	fc.set(1, priorityConfig("feed-api", 5, rulesA),
		// Another service's rules and another kind: not this service's.
		priorityConfig("other-api", 9, rulesB),
		sdk.EffectiveConfig{Kind: "limit", Scope: "feed-api", Revision: 3, Document: json.RawMessage(`{"qps_limit": 1}`)})
	w := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: addr, Service: "feed-api", Instance: "10.0.0.1:80", Wait: time.Second})
	w.Start()
	defer w.Close()
	eventually(t, "the first answer", func() bool { return w.Current() != nil })

	// Follow after the first answer: in force at once.
	p := sdk.NewPriorityRules()
	p.Follow(w)
	// Listeners run in order: when this one sees an answer, p has applied it.
	applied := make(chan int64, 16)
	w.OnChange(func(a *sdk.WatchAnswer) { applied <- a.Version })
	waitApplied := func(version int64) {
		t.Helper()
		for {
			select {
			case v := <-applied:
				if v == version {
					return
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("answer %d not applied", version)
			}
		}
	}
	wantPriority(t, p, feedGet, 100, true)
	wantPriority(t, p, other, 40, true)
	if p.Revision() != 5 {
		t.Fatalf("revision %d, want 5", p.Revision())
	}

	// A new revision replaces the rules.
	fc.set(2, priorityConfig("feed-api", 6, rulesB))
	eventually(t, "revision 6", func() bool { return p.Revision() == 6 })
	wantPriority(t, p, feedGet, 110, true)

	// A document the SDK refuses leaves the rules in force.
	fc.set(3, priorityConfig("feed-api", 7, `{"rules": [{"name": "x", "priority": 1, "match": {"http": {"path": "nope"}}}]}`))
	waitApplied(3)
	wantPriority(t, p, feedGet, 110, true)
	if p.Revision() != 6 {
		t.Fatalf("revision %d after a refused document, want 6", p.Revision())
	}

	// The config deleted: no rules.
	fc.set(4)
	eventually(t, "no rules", func() bool { _, ok := p.Priority(feedGet); return !ok })

	// And written again.
	fc.set(5, priorityConfig("feed-api", 8, rulesA))
	eventually(t, "revision 8", func() bool { return p.Revision() == 8 })
	wantPriority(t, p, batchPost, 20, true)
}

// Follow before the watcher has any answer: no rules until it has one.
func TestPriorityRulesFollowBeforeTheFirstAnswer(t *testing.T) {
	fc, addr := newFakeCenter(t)
	w := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: addr, Service: "feed-api", Instance: "10.0.0.1:80", Wait: time.Second})
	p := sdk.NewPriorityRules()
	p.Follow(w)
	wantPriority(t, p, feedGet, 64, false)
	fc.set(1, priorityConfig("feed-api", 5, rulesA))
	w.Start()
	defer w.Close()
	eventually(t, "revision 5", func() bool { return p.Revision() == 5 })
	wantPriority(t, p, feedGet, 100, true)
}

// QueueTimeFrom follows queue_time_ms of the service's overload config:
// the default without one or without the field, the refused document
// leaving the value in force.
func TestQueueTimeFollowsTheOverloadConfig(t *testing.T) {
	fc, addr := newFakeCenter(t)
	overload := func(revision int64, doc string) sdk.EffectiveConfig {
		return sdk.EffectiveConfig{Kind: api.KindOverload, Scope: "feed-api", Revision: revision, Source: "current", Document: json.RawMessage(doc)}
	}
	w := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: addr, Service: "feed-api", Instance: "10.0.0.1:80", Wait: time.Second})
	qt := sdk.QueueTimeFrom(w)
	if got := qt(); got != sdk.DefaultQueueTime {
		t.Fatalf("before any answer: %s, want %s", got, sdk.DefaultQueueTime)
	}
	fc.set(1, overload(1, `{"queue_time_ms": 35.5}`))
	w.Start()
	defer w.Close()
	eventually(t, "35.5 ms", func() bool { return qt() == 35500*time.Microsecond })
	// Listeners run in order: when this one sees an answer, qt has applied it.
	var seen atomic.Int64
	w.OnChange(func(a *sdk.WatchAnswer) { seen.Store(a.Version) })
	fc.set(2, overload(2, `{"queue_time_ms": -1}`))
	eventually(t, "answer 2", func() bool { return seen.Load() == 2 })
	if got := qt(); got != 35500*time.Microsecond {
		t.Fatalf("after a refused document: %s, want the 35.5 ms in force", got)
	}
	fc.set(3, overload(3, `{"cpu": 0.9}`))
	eventually(t, "the default again", func() bool { return qt() == sdk.DefaultQueueTime })
}
