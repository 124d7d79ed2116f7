package etcdx

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/freeport"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/internal/logx"
)

type recorder struct {
	mu     sync.Mutex
	kvs    map[string]string
	resets int
}

func (r *recorder) Reset(kvs []Event, _ int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resets++
	r.kvs = map[string]string{}
	for _, kv := range kvs {
		r.kvs[kv.Key] = string(kv.Value)
	}
}

func (r *recorder) Apply(events []Event, _ int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range events {
		if ev.Deleted {
			delete(r.kvs, ev.Key)
		} else {
			r.kvs[ev.Key] = string(ev.Value)
		}
	}
}

func (r *recorder) snapshot() (map[string]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.kvs), r.resets
}

func freeAddr(t *testing.T) string {
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func eventually(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for err := cond(); err != nil; err = cond() {
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A mirror whose resume revision was compacted away lists again and ends up
// with exactly what etcd holds.
func TestMirrorRelistsAfterCompaction(t *testing.T) {
	e, err := StartEmbedded(t.TempDir(), freeAddr(t), freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := NewClient(Config{Endpoints: e.ClientURL})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("/p/k%d", i), "v1"); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	m := NewMirror(cli, "/p/", rec, logx.Discard())
	if err := m.list(ctx); err != nil {
		t.Fatal(err)
	}
	// Changes the mirror misses, then a compaction past its revision: as if
	// it had been disconnected for a long time.
	if _, err := cli.Delete(ctx, "/p/k0"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Put(ctx, "/p/k9", "v9")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The watch, resumed from the revision of the first listing, finds it
	// compacted and asks for a listing.
	if !m.consume(cli.Watch(wctx, "/p/", clientv3.WithPrefix(), clientv3.WithRev(m.Revision()+1))) {
		t.Fatal("a watch from a compacted revision did not ask for a listing")
	}
	// Run lists again and follows from there.
	go m.Run(wctx)
	eventually(t, func() error {
		kvs, resets := rec.snapshot()
		if _, ok := kvs["k0"]; ok || kvs["k9"] != "v9" || resets < 2 {
			return fmt.Errorf("mirror holds %v after %d listings", kvs, resets)
		}
		return nil
	})
}

// Synced follows etcd itself, not the watch's creation: true once the
// listing succeeded and etcd confirmed the watch, false while the etcd server
// is stopped (the client retries the watch underneath without a word), and
// true again when it is back, with what changed meanwhile.
func TestMirrorSyncedFollowsEtcd(t *testing.T) {
	dir, clientAddr, peerAddr := t.TempDir(), freeAddr(t), freeAddr(t)
	e, err := StartEmbedded(dir, clientAddr, peerAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if e != nil {
			e.Close()
		}
	}()
	cli, err := NewClient(Config{Endpoints: e.ClientURL})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(context.Background(), "/p/a", "1"); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	m := NewMirror(cli, "/p/", rec, logx.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	synced := func(want bool) func() error {
		return func() error {
			if m.Synced() != want {
				return fmt.Errorf("Synced() is %v, want %v", !want, want)
			}
			return nil
		}
	}
	eventually(t, synced(true))
	if kvs, _ := rec.snapshot(); kvs["a"] != "1" {
		t.Fatalf("mirror holds %v", kvs)
	}

	stopped := time.Now()
	e.Close()
	e = nil
	eventually(t, synced(false))
	t.Logf("not synced %s after etcd stopped", time.Since(stopped).Round(time.Millisecond))
	if kvs, _ := rec.snapshot(); kvs["a"] != "1" {
		t.Fatalf("the mirror lost its state while etcd was away: %v", kvs)
	}

	if e, err = StartEmbedded(dir, clientAddr, peerAddr); err != nil {
		t.Fatal(err)
	}
	eventually(t, synced(true))
	if _, err := cli.Put(context.Background(), "/p/b", "2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		if kvs, _ := rec.snapshot(); kvs["a"] != "1" || kvs["b"] != "2" {
			return fmt.Errorf("mirror holds %v after etcd came back", kvs)
		}
		return nil
	})
}
