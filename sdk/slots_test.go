package sdk

import (
	"context"
	"errors"
	"sync/atomic"
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
	if s.waiting.Len() != 0 {
		t.Fatalf("%d waiters left behind", s.waiting.Len())
	}
}

// A standing queue is trimmed from its low end: whenever a request joins
// or a slot is freed, the lowest waiter of the lowest business priority
// waiting that has waited past the bound is shed, unless it is of the
// highest level waiting.
func TestSlotsTrimTheLowEndOfAStandingQueue(t *testing.T) {
	var clock atomic.Int64
	s := newSlots(1)
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }
	s.standing = func() time.Duration { return 40 * time.Millisecond }
	if ok, _ := s.acquire(context.Background(), 0, time.Second); !ok {
		t.Fatal("a free slot was refused")
	}
	type result struct {
		ok  bool
		err error
	}
	wait := func(p int32) chan result {
		ch := make(chan result, 1)
		go func() {
			ok, err := s.acquire(context.Background(), p, 10*time.Second)
			ch <- result{ok, err}
		}()
		time.Sleep(20 * time.Millisecond) // queued in this order
		return ch
	}
	trimmed := func(name string, ch chan result) {
		t.Helper()
		if r := <-ch; r.ok || !errors.Is(r.err, errTrimmed) {
			t.Fatalf("%s: %+v, want trimmed", name, r)
		}
	}
	granted := func(name string, ch chan result) {
		t.Helper()
		if r := <-ch; !r.ok {
			t.Fatalf("%s: %+v, want a slot", name, r)
		}
	}
	w10, w120 := wait(10), wait(120)
	clock.Add(int64(30 * time.Millisecond)) // within the bound: nothing trimmed
	s.release()
	granted("120", w120)
	w64 := wait(64)
	clock.Add(int64(20 * time.Millisecond)) // 10 waited 50 ms, 64 20 ms
	s.release()
	trimmed("10", w10)
	granted("64", w64)
	// The lowest of the waiters past the bound goes, not a lower one that
	// just came; the highest level waiting stays however long it waited.
	w30, w100 := wait(30), wait(100)
	clock.Add(int64(time.Second))
	w5 := wait(5) // joining trims 30
	trimmed("30", w30)
	s.release()
	granted("100", w100)
	s.release()
	granted("5", w5)
	// A waiter of a higher business priority (a level / 64) is not shed
	// while one of a lower business priority waits, however long it waited.
	w70, w200 := wait(70), wait(200)
	clock.Add(int64(time.Second))
	w6 := wait(6)
	s.release()
	granted("200", w200)
	s.release()
	granted("70", w70)
	s.release()
	granted("6", w6)
	// One level waiting, however long: its requests are served in turn.
	a, b := wait(64), wait(64)
	clock.Add(int64(time.Second))
	s.release()
	granted("the first 64", a)
	s.release()
	granted("the second 64", b)
	if s.waiting.Len() != 0 {
		t.Fatalf("%d left waiting", s.waiting.Len())
	}
}
