package sdk

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"
)

// slots bounds concurrency, and hands a freed slot to the waiting request
// of the highest priority (the earliest among equals): under overload the
// important requests go first and the unimportant ones wait. A queue that
// stands is trimmed from its low end: whenever a request joins the queue
// or a slot is freed, the lowest waiter of the lowest business priority
// waiting that has waited longer than the standing bound is shed, unless
// it is of the highest level waiting (a higher business priority, and that
// level, are never shed this way); any waiter is shed when it has waited
// its own maximum. Priorities here are admission levels.
type slots struct {
	mu      sync.Mutex
	free    int
	size    int
	waiting waitHeap
	seq     uint64
	now     func() time.Time
	// standing returns how long a waiter below the highest level waiting
	// may wait (nil or <= 0: no bound).
	standing func() time.Duration
}

type waiter struct {
	priority int32
	seq      uint64
	since    time.Time
	index    int
	granted  chan struct{}
	trimmed  bool // shed from the low end (granted is closed too)
}

// errTrimmed: the waiter was shed from the low end of a standing queue.
var errTrimmed = errors.New("the lowest level waiting in a standing queue")

func newSlots(n int) *slots { return &slots{free: n, size: n, now: time.Now} }

// acquire waits for a slot up to maxWait; false when it got none, with
// errTrimmed when it was shed from the low end of a standing queue.
func (s *slots) acquire(ctx context.Context, priority int32, maxWait time.Duration) (bool, error) {
	s.mu.Lock()
	if s.free > 0 && len(s.waiting) == 0 {
		s.free--
		s.mu.Unlock()
		return true, nil
	}
	s.seq++
	w := &waiter{priority: priority, seq: s.seq, since: s.now(), granted: make(chan struct{})}
	heap.Push(&s.waiting, w)
	s.trim()
	s.mu.Unlock()

	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	var err error
	select {
	case <-w.granted:
		if w.trimmed {
			return false, errTrimmed
		}
		return true, nil
	case <-timer.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.index < 0 { // granted or trimmed while giving up
		if w.trimmed {
			return false, errTrimmed
		}
		return true, nil
	}
	heap.Remove(&s.waiting, w.index)
	return false, err
}

// release frees a slot, to the best waiter if any, after trimming the low
// end of a standing queue.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trim()
	if len(s.waiting) > 0 {
		w := heap.Pop(&s.waiting).(*waiter)
		close(w.granted)
		return
	}
	s.free++
}

// trim sheds the lowest waiter (the earliest among equals) of those of the
// lowest business priority waiting that have waited longer than the
// standing bound, unless it is of the highest level waiting; s.mu held.
func (s *slots) trim() {
	if s.standing == nil || len(s.waiting) < 2 {
		return
	}
	bound := s.standing()
	if bound <= 0 {
		return
	}
	now := s.now()
	top, bottom := s.waiting[0].priority, s.waiting[0].priority // the heap's root is the highest
	for _, w := range s.waiting[1:] {
		bottom = min(bottom, w.priority)
	}
	business := bottom / UserPriorities
	var low *waiter
	for _, w := range s.waiting[1:] {
		if w.priority == top || w.priority/UserPriorities != business || now.Sub(w.since) <= bound {
			continue
		}
		if low == nil || w.priority < low.priority || w.priority == low.priority && w.seq < low.seq {
			low = w
		}
	}
	if low == nil {
		return
	}
	heap.Remove(&s.waiting, low.index)
	low.trimmed = true
	close(low.granted)
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
