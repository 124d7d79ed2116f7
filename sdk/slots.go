package sdk

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"
)

// slots bounds concurrency; its waiters queue in a SlotQueue (the highest
// level first, a standing queue trimmed from its low end): under overload
// the important requests go first and the unimportant ones wait, and are
// shed once the queue stands. Priorities here are admission levels.
type slots struct {
	mu      sync.Mutex
	free    int
	size    int
	waiting SlotQueue[*waiter]
	now     func() time.Time
	// standing returns how long a waiter below the highest level waiting
	// may wait (nil or <= 0: no bound).
	standing func() time.Duration
}

type waiter struct {
	queued  *Waiting[*waiter]
	granted chan struct{}
	trimmed bool // shed from the low end (granted is closed too)
}

// errTrimmed: the waiter was shed from the low end of a standing queue.
var errTrimmed = errors.New("the lowest level waiting in a standing queue")

func newSlots(n int) *slots { return &slots{free: n, size: n, now: time.Now} }

// acquire waits for a slot up to maxWait; false when it got none, with
// errTrimmed when it was shed from the low end of a standing queue.
func (s *slots) acquire(ctx context.Context, priority int32, maxWait time.Duration) (bool, error) {
	s.mu.Lock()
	if s.free > 0 && s.waiting.Len() == 0 {
		s.free--
		s.mu.Unlock()
		return true, nil
	}
	w := &waiter{granted: make(chan struct{})}
	w.queued = s.waiting.Push(w, priority, s.now())
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
	if !s.waiting.Remove(w.queued) { // granted or trimmed while giving up
		if w.trimmed {
			return false, errTrimmed
		}
		return true, nil
	}
	return false, err
}

// release frees a slot, to the best waiter if any, after trimming the low
// end of a standing queue.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trim()
	if w := s.waiting.Pop(); w != nil {
		close(w.Value.granted)
		return
	}
	s.free++
}

// trim sheds the waiter the queue's low end gives up, if any; s.mu held.
func (s *slots) trim() {
	if s.standing == nil {
		return
	}
	if w := s.waiting.Trim(s.now(), s.standing()); w != nil {
		w.Value.trimmed = true
		close(w.Value.granted)
	}
}

// SlotQueue orders the requests waiting for a concurrency slot as a Gate
// with a concurrency bound does: a freed slot goes to the highest
// admission level waiting, the earliest among equals; and a queue that
// stands is trimmed from its low end (Trim). It is not safe for concurrent
// use: the Gate holds its own under a lock, and a simulation drives one
// with its own clock.
type SlotQueue[T any] struct {
	h   waitHeap[T]
	seq uint64
}

// Waiting is a request in a SlotQueue.
type Waiting[T any] struct {
	Value T
	level int32
	seq   uint64
	since time.Time
	index int // in the heap; -1 once out of the queue
}

// Len is the number of requests waiting.
func (q *SlotQueue[T]) Len() int { return len(q.h) }

// Push queues v at admission level level, waiting since since.
func (q *SlotQueue[T]) Push(v T, level int32, since time.Time) *Waiting[T] {
	q.seq++
	w := &Waiting[T]{Value: v, level: level, seq: q.seq, since: since}
	heap.Push(&q.h, w)
	return w
}

// Pop takes the request a freed slot goes to (nil when none waits).
func (q *SlotQueue[T]) Pop() *Waiting[T] {
	if len(q.h) == 0 {
		return nil
	}
	return heap.Pop(&q.h).(*Waiting[T])
}

// Remove takes w out of the queue (a request that gave up waiting); false
// when it was no longer there.
func (q *SlotQueue[T]) Remove(w *Waiting[T]) bool {
	if w.index < 0 {
		return false
	}
	heap.Remove(&q.h, w.index)
	return true
}

// Trim takes out and returns the request to shed from the low end of a
// standing queue, if any: the lowest waiter (the earliest among equals) of
// the lowest business priority waiting that has waited longer than bound
// at now, unless it is of the highest level waiting (a higher business
// priority, and that level, are never shed this way). A Gate trims
// whenever a request joins the queue or a slot is freed; bound <= 0 trims
// nothing.
func (q *SlotQueue[T]) Trim(now time.Time, bound time.Duration) *Waiting[T] {
	if bound <= 0 || len(q.h) < 2 {
		return nil
	}
	top, bottom := q.h[0].level, q.h[0].level // the heap's root is the highest
	for _, w := range q.h[1:] {
		bottom = min(bottom, w.level)
	}
	business := bottom / UserPriorities
	var low *Waiting[T]
	for _, w := range q.h[1:] {
		if w.level == top || w.level/UserPriorities != business || now.Sub(w.since) <= bound {
			continue
		}
		if low == nil || w.level < low.level || w.level == low.level && w.seq < low.seq {
			low = w
		}
	}
	if low != nil {
		heap.Remove(&q.h, low.index)
	}
	return low
}

// waitHeap orders waiters by level, highest first, then by arrival.
type waitHeap[T any] []*Waiting[T]

func (h waitHeap[T]) Len() int { return len(h) }
func (h waitHeap[T]) Less(i, j int) bool {
	if h[i].level != h[j].level {
		return h[i].level > h[j].level
	}
	return h[i].seq < h[j].seq
}
func (h waitHeap[T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waitHeap[T]) Push(x any) {
	w := x.(*Waiting[T])
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap[T]) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	w.index = -1
	*h = old[:len(old)-1]
	return w
}
