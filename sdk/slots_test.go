package sdk

import (
	"context"
	"testing"
	"time"
)

// A freed slot goes to the highest priority waiting, earliest first; a
// waiter that waits too long gets none.
func TestSlotsServeHighestPriorityFirst(t *testing.T) {
	s := newSlots(1)
	if ok, _ := s.acquire(context.Background(), 0, time.Second); !ok {
		t.Fatal("a free slot was refused")
	}
	order := make(chan int32, 3)
	for _, p := range []int32{10, 120, 64} {
		go func() {
			if ok, _ := s.acquire(context.Background(), p, 10*time.Second); ok {
				order <- p
				s.release()
			}
		}()
		time.Sleep(20 * time.Millisecond) // queue them in this order
	}
	s.release()
	for _, want := range []int32{120, 64, 10} {
		if got := <-order; got != want {
			t.Fatalf("slot went to priority %d, want %d", got, want)
		}
	}
	if ok, _ := s.acquire(context.Background(), 1, time.Second); !ok {
		t.Fatal("slot not free after every release")
	}
	if ok, err := s.acquire(context.Background(), 127, 50*time.Millisecond); ok || err != nil {
		t.Fatalf("a full gate gave a slot (%v, %v)", ok, err)
	}
	if len(s.waiting) != 0 {
		t.Fatalf("%d waiters left behind", len(s.waiting))
	}
}
