package sdk

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// slots bounds concurrency, and hands a freed slot to the waiting request
// of the highest priority (the earliest among equals): under overload the
// important requests go first and the unimportant ones wait, and are shed
// when they have waited too long.
type slots struct {
	mu      sync.Mutex
	free    int
	size    int
	waiting waitHeap
	seq     uint64
}

type waiter struct {
	priority int32
	seq      uint64
	index    int
	granted  chan struct{}
}

func newSlots(n int) *slots { return &slots{free: n, size: n} }

// acquire waits for a slot up to maxWait; false when it got none.
func (s *slots) acquire(ctx context.Context, priority int32, maxWait time.Duration) (bool, error) {
	s.mu.Lock()
	if s.free > 0 && len(s.waiting) == 0 {
		s.free--
		s.mu.Unlock()
		return true, nil
	}
	s.seq++
	w := &waiter{priority: priority, seq: s.seq, granted: make(chan struct{})}
	heap.Push(&s.waiting, w)
	s.mu.Unlock()

	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	var err error
	select {
	case <-w.granted:
		return true, nil
	case <-timer.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.index < 0 { // granted while giving up: keep it
		return true, nil
	}
	heap.Remove(&s.waiting, w.index)
	return false, err
}

// release frees a slot, to the best waiter if any.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiting) > 0 {
		w := heap.Pop(&s.waiting).(*waiter)
		close(w.granted)
		return
	}
	s.free++
}

// waitHeap orders waiters by priority, highest first, then by arrival.
type waitHeap []*waiter

func (h waitHeap) Len() int { return len(h) }
func (h waitHeap) Less(i, j int) bool {
	if h[i].priority != h[j].priority {
		return h[i].priority > h[j].priority
	}
	return h[i].seq < h[j].seq
}
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waitHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	w.index = -1
	*h = old[:len(old)-1]
	return w
}
