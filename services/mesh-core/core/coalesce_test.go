package core

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// A burst of registrations makes a version at once and then at most one per
// coalescing window, however many registrations the burst holds; the last
// version holds all of them.
func TestBurstsMakeFewVersions(t *testing.T) {
	const window = 50 * time.Millisecond
	c := NewCache(time.Minute, 100, slog.New(slog.DiscardHandler))
	c.SetCoalesce(window)
	var versions atomic.Int64
	c.onSnapshot = func() { versions.Add(1) }
	mirror := registryMirror{c}
	start := time.Now()
	for i := range 200 {
		id := fmt.Sprintf("10.0.0.%d:80", i)
		b, _ := json.Marshal(api.Registration{Service: "svc", Instance: id, Addr: id, StaticWeight: 100})
		mirror.Apply([]etcdx.Event{{Key: "svc/" + id, Value: b}}, int64(i+1))
	}
	elapsed := time.Since(start)
	deadline := time.Now().Add(10 * time.Second)
	for c.Get("svc").Instances != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("the last version holds %d of 200 instances", c.Get("svc").Instances)
		}
		time.Sleep(window / 5)
	}
	// One version at once, then one per window the burst spanned, plus the
	// trailing one.
	if n, most := versions.Load(), int64(2+elapsed/window); n > most {
		t.Fatalf("200 registrations in %s made %d versions, want at most %d", elapsed, n, most)
	}
	t.Logf("200 registrations in %s: %d versions", elapsed, versions.Load())

	// Without coalescing every registration is a version.
	c.SetCoalesce(0)
	before := versions.Load()
	for i := range 20 {
		id := fmt.Sprintf("10.0.1.%d:80", i)
		b, _ := json.Marshal(api.Registration{Service: "svc", Instance: id, Addr: id, StaticWeight: 100})
		mirror.Apply([]etcdx.Event{{Key: "svc/" + id, Value: b}}, int64(300+i))
	}
	if n := versions.Load() - before; n != 20 {
		t.Fatalf("20 registrations without coalescing made %d versions", n)
	}
}

// A poll for several services waits on one subscription and is released by
// a new version of any one of them.
func TestSubscribersHearOfNewVersions(t *testing.T) {
	c := NewCache(time.Minute, 100, slog.New(slog.DiscardHandler))
	mirror := registryMirror{c}
	put := func(service, id string) {
		b, _ := json.Marshal(api.Registration{Service: service, Instance: id, Addr: id, StaticWeight: 100})
		mirror.Apply([]etcdx.Event{{Key: service + "/" + id, Value: b}}, 1)
	}
	put("a", "10.0.0.1:80")
	put("b", "10.0.0.2:80")
	changed := make(chan struct{}, 1)
	cancel := c.Subscribe([]string{"a", "b"}, changed)
	put("c", "10.0.0.3:80") // not followed
	select {
	case <-changed:
		t.Fatal("told of a service not subscribed to")
	default:
	}
	put("b", "10.0.0.4:80")
	select {
	case <-changed:
	default:
		t.Fatal("not told of a new version of b")
	}
	cancel()
	put("a", "10.0.0.5:80")
	select {
	case <-changed:
		t.Fatal("told after cancel")
	default:
	}
}
