package sdk_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// recording is a Watch callback that keeps what it was given, and calls
// back into the Discovery as a user's callback may.
type recording struct {
	mu    sync.Mutex
	snaps []*sdk.Snapshot
}

func (r *recording) add(s *sdk.Snapshot) {
	r.mu.Lock()
	r.snaps = append(r.snaps, s)
	r.mu.Unlock()
}

func (r *recording) all() []*sdk.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*sdk.Snapshot{}, r.snaps...)
}

// inOrder checks that a listener got each snapshot once, in order (the
// service only gains instances here), ending with want instances.
func (r *recording) inOrder(want int) error {
	snaps := r.all()
	if len(snaps) == 0 {
		return fmt.Errorf("no snapshot")
	}
	for i := 1; i < len(snaps); i++ {
		if snaps[i].Version == snaps[i-1].Version || len(snaps[i].Instances) < len(snaps[i-1].Instances) {
			return fmt.Errorf("snapshot %d (%d instances, version %d) after %d instances, version %d",
				i, len(snaps[i].Instances), snaps[i].Version, len(snaps[i-1].Instances), snaps[i-1].Version)
		}
	}
	if n := len(snaps[len(snaps)-1].Instances); n != want {
		return fmt.Errorf("last snapshot has %d instances, want %d", n, want)
	}
	return nil
}

// A Watch callback may call Get and Watch: it runs outside the Discovery's
// lock, for the snapshot in hand and for each new one, in order. Listeners
// added while snapshots arrive miss none and get none twice.
func TestWatchCallbackMayCallGet(t *testing.T) {
	const svc = "comment-svc"
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	token := testenv.ServiceToken(t, etcd, prefix, svc)
	register := func(i int) {
		addr := fmt.Sprintf("10.0.0.%d:9000", i)
		r := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: mc.Addr(), Token: token, Registration: sdk.Registration{Service: svc, Instance: addr, Addr: addr}})
		t.Cleanup(r.Close)
	}
	register(1)
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: mc.Addr(), Token: testenv.ServiceToken(t, etcd, prefix, "caller"), Wait: time.Second})
	d.Watch(svc, nil, nil)
	testenv.Eventually(t, 20*time.Second, func() error {
		if s, ok := d.Get(svc); !ok || len(s.Instances) != 1 {
			return fmt.Errorf("no snapshot with one instance yet")
		}
		return nil
	})

	// A snapshot is in hand: Watch calls the new listener with it at once.
	first := &recording{}
	returned := make(chan struct{})
	go func() {
		d.Watch(svc, nil, func(s *sdk.Snapshot) {
			got, ok := d.Get(svc)
			if !ok || got == nil {
				t.Errorf("Get in a callback: %v %v", got, ok)
			}
			d.Watch(svc, nil, nil)
			first.add(s)
		})
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		// d is left open: its goroutines are stuck behind the callback.
		t.Fatal("Watch did not return: its callback called Get and deadlocked")
	}
	defer d.Close()
	if snaps := first.all(); len(snaps) != 1 || len(snaps[0].Instances) != 1 {
		t.Fatalf("Watch called the new listener with %d snapshots, want the one in hand", len(snaps))
	}

	// New snapshots arrive while more listeners are added.
	var late []*recording
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 2; i <= 5; i++ {
			register(i)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for i := 0; i < 20; i++ {
		r := &recording{}
		late = append(late, r)
		d.Watch(svc, nil, func(s *sdk.Snapshot) { d.Get(svc); r.add(s) })
		time.Sleep(10 * time.Millisecond)
	}
	<-done
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := first.inOrder(5); err != nil {
			return fmt.Errorf("first listener: %w", err)
		}
		for i, r := range late {
			if err := r.inOrder(5); err != nil {
				return fmt.Errorf("listener %d: %w", i, err)
			}
		}
		return nil
	})
}
