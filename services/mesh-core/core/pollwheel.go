package core

import (
	"sync"
	"time"
)

// wheel is a coarse timing wheel of connection deadlines: one slot per
// tick, a connection in the slot of its deadline's tick (rounded up), and
// one sweeper expiring the slots whose tick has come. Adding, moving and
// removing a deadline are O(1); no timer is kept per connection. A
// deadline further than the wheel's turn waits in its slot for its turn.
type wheel struct {
	mu    sync.Mutex
	tick  int64 // ns
	slots []*pconn
	last  int64 // the last tick expired
}

func newWheel(tick time.Duration, slots int, now time.Time) wheel {
	return wheel{tick: int64(tick), slots: make([]*pconn, slots), last: now.UnixNano() / int64(tick)}
}

// add puts pc at deadline (unix ns), or moves it there.
func (w *wheel) add(pc *pconn, deadline int64) {
	due := (deadline + w.tick - 1) / w.tick
	w.mu.Lock()
	defer w.mu.Unlock()
	w.unlink(pc)
	due = max(due, w.last+1)
	i := int(due % int64(len(w.slots)))
	pc.wdue, pc.wslot = due, i
	pc.wprev, pc.wnext = nil, w.slots[i]
	if pc.wnext != nil {
		pc.wnext.wprev = pc
	}
	w.slots[i] = pc
}

func (w *wheel) remove(pc *pconn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.unlink(pc)
}

func (w *wheel) unlink(pc *pconn) {
	if pc.wslot < 0 {
		return
	}
	if pc.wprev != nil {
		pc.wprev.wnext = pc.wnext
	} else {
		w.slots[pc.wslot] = pc.wnext
	}
	if pc.wnext != nil {
		pc.wnext.wprev = pc.wprev
	}
	pc.wprev, pc.wnext, pc.wslot = nil, nil, -1
}

// expire takes out and returns the connections whose deadline has come.
func (w *wheel) expire(now time.Time) []*pconn {
	tick := now.UnixNano() / w.tick
	w.mu.Lock()
	defer w.mu.Unlock()
	var due []*pconn
	for t := w.last + 1; t <= tick && t <= w.last+int64(len(w.slots)); t++ {
		for pc := w.slots[t%int64(len(w.slots))]; pc != nil; {
			next := pc.wnext
			if pc.wdue <= tick {
				w.unlink(pc)
				due = append(due, pc)
			}
			pc = next
		}
	}
	w.last = max(w.last, tick)
	return due
}
