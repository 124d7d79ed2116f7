// Package longpoll is the client side of the long-poll load tools
// (loadtest/discovery, loadtest/configwatch): many simulated data planes,
// each holding one long poll over one keep-alive HTTP/1.1 connection of its
// own, written so that the client costs far less CPU than the server it
// measures.
//
// On Linux the pollers are non-blocking sockets driven by a few epoll loops
// (Config.Loops, GOMAXPROCS by default), each a goroutine that owns its
// pollers: no goroutine, stack or netpoll wake-up per poller. An answer is
// timed by the kernel's receive time stamp of its last bytes (SO_TIMESTAMPNS),
// not when the loop came to read it, so that a burst of answers is timed as
// the server delivered it, not at the pace the client reads it; and a loop
// reads every socket an epoll_wait reported ready before it writes any next
// poll. Elsewhere each poller is a goroutine blocked in Read on a
// net.TCPConn (fanout_other.go), and an answer is timed when Read returns.
//
// Either way the request is built once (only the version at its end
// changes), a poller keeps a response buffer only while an answer comes
// in pieces (Linux) or one sized for its largest answer (elsewhere), and
// two small arrays of timestamps; nothing is allocated per answer, and
// nothing is decoded but the few integers the measurement needs (found by
// a byte scan).
package longpoll

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes the pollers of one run.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// Token is the pollers' credential (the Authorization field), if any.
	Token   string
	Pollers int
	// Changes is how many changes are measured, numbered 1..Changes; change
	// 0 is the state before them, which every poller holds before they start.
	Changes int
	// Target is poller i's request target up to its version: a path and
	// query ending in "version=" (e.g. /v1/discovery/s?wait=30s&version=).
	Target func(i int) string
	// Decode reads the body of a 200 answer to poller i.
	Decode func(i int, body []byte) (Answer, error)
	// Cumulative: holding change k means holding every change before it
	// (a discovery snapshot). Otherwise a poller holds only the changes it
	// read (a config watch, which only some changes concern).
	Cumulative bool
	// BufSize is each poller's initial response buffer; it grows to fit the
	// largest answer the poller gets.
	BufSize int
	// RampRate pollers per second start, RampStep at a time: 10,000 dials at
	// once would overflow the server's accept backlog (somaxconn), and a
	// lost SYN is retried only after a second.
	RampRate, RampStep int
	// Loops is how many epoll loops drive the pollers on Linux (0:
	// GOMAXPROCS); poller i belongs to loop i % Loops. Unused elsewhere.
	Loops int
}

// Answer is what Decode reads from a 200 answer.
type Answer struct {
	Version int64 // the answer's version, sent back in the next poll
	Change  int   // the measured change it holds: 0..Changes, or -1 for none of them
	Aux     int64 // a figure of the tool's kept with the time it was read (0: none)
}

// Counts are the fan-out's running totals.
type Counts struct {
	Answers     int64 // 200 answers read
	NoNews      int64 // 200 answers that gave their poller no change it did not hold
	NotModified int64 // 304 answers (a wait ran out)
	Errors      int64
}

// Fanout is the pollers of one run.
type Fanout struct {
	cfg     Config
	suffix  []byte
	held    []atomic.Int64 // held[k]: pollers holding change k
	pollers []poller
	wg      sync.WaitGroup
	stopped atomic.Bool
	driver  // how the pollers run: epoll loops (Linux), goroutines (elsewhere)

	answers, noNews, notModified, errCount atomic.Int64
	firstErr                               atomic.Value // string
}

// poller is one data plane. Only the goroutine that runs it (its epoll loop,
// or its own) writes it while it runs; the rest is read once the pollers
// have stopped.
type poller struct {
	conn    conn // its connection, as the driver keeps it
	version int64
	latest  int     // newest change held (cumulative mode); -1 before the first answer
	seen    []int64 // seen[k]: Unix ns when it first held change k; 0: never
	aux     []int64 // aux[k]: the Answer.Aux that brought change k
}

// New prepares the pollers; Start starts them.
func New(cfg Config) *Fanout {
	if cfg.BufSize <= 0 {
		cfg.BufSize = 4096
	}
	if cfg.RampRate <= 0 {
		cfg.RampRate = 2000
	}
	if cfg.RampStep <= 0 {
		cfg.RampStep = 100
	}
	head := " HTTP/1.1\r\nHost: " + cfg.Addr + "\r\n"
	if cfg.Token != "" {
		head += "Authorization: Bearer " + cfg.Token + "\r\n"
	}
	f := &Fanout{cfg: cfg, suffix: []byte(head + "\r\n"),
		held: make([]atomic.Int64, cfg.Changes+1), pollers: make([]poller, cfg.Pollers)}
	// Two arrays for all, sliced per poller: fewer objects for the collector.
	seen, aux := make([]int64, cfg.Pollers*(cfg.Changes+1)), make([]int64, cfg.Pollers*(cfg.Changes+1))
	for i := range f.pollers {
		lo, hi := i*(cfg.Changes+1), (i+1)*(cfg.Changes+1)
		f.pollers[i] = poller{latest: -1, seen: seen[lo:hi:hi], aux: aux[lo:hi:hi]}
	}
	return f
}

// Start ramps the pollers up and returns once every one holds change 0:
// how long the ramp took, and how long until then.
func (f *Fanout) Start(timeout time.Duration) (ramp, settled time.Duration, err error) {
	t0 := time.Now()
	if err := f.startDriver(); err != nil {
		return 0, 0, err
	}
	for i := range f.pollers {
		f.launch(i)
		if (i+1)%f.cfg.RampStep == 0 {
			time.Sleep(time.Duration(f.cfg.RampStep) * time.Second / time.Duration(f.cfg.RampRate))
		}
	}
	ramp = time.Since(t0)
	n := int64(len(f.pollers))
	if !WaitUntil(timeout, func() bool { return f.held[0].Load() == n }) {
		return ramp, 0, fmt.Errorf("%d of %d pollers got a first answer within %s; %s", f.held[0].Load(), n, timeout, f.Errors())
	}
	return ramp, time.Since(t0), nil
}

// Held is how many pollers hold change k.
func (f *Fanout) Held(k int) int64 { return f.held[k].Load() }

// Seen tells when poller i first held change k, and the Aux of that answer;
// ok is false if it never did. Call it after Stop.
func (f *Fanout) Seen(i, k int) (at time.Time, aux int64, ok bool) {
	p := &f.pollers[i]
	if p.seen[k] == 0 {
		return time.Time{}, 0, false
	}
	return time.Unix(0, p.seen[k]), p.aux[k], true
}

// Counts are the totals so far.
func (f *Fanout) Counts() Counts {
	return Counts{Answers: f.answers.Load(), NoNews: f.noNews.Load(), NotModified: f.notModified.Load(), Errors: f.errCount.Load()}
}

// Sub is c minus an earlier reading.
func (c Counts) Sub(before Counts) Counts {
	return Counts{c.Answers - before.Answers, c.NoNews - before.NoNews, c.NotModified - before.NotModified, c.Errors - before.Errors}
}

// Errors describes the poll errors so far; "" when none.
func (f *Fanout) Errors() string {
	if n := f.errCount.Load(); n > 0 {
		return fmt.Sprintf("%d poll errors, the first: %v", n, f.firstErr.Load())
	}
	return ""
}

func (f *Fanout) addError(err error) {
	if f.errCount.Add(1) == 1 {
		f.firstErr.Store(err.Error())
	}
}

// request is poller i's next poll: "GET <target>" as req holds it (the
// first plen bytes), then its version and the rest of the request.
func (f *Fanout) request(req []byte, plen int, version int64) []byte {
	return append(strconv.AppendInt(req[:plen], version, 10), f.suffix...)
}

var errClosed = errors.New("the server closed the connection (Connection: close)")

// answer handles a response poller i read at (Unix ns): the 200's change
// held, the 304 counted. An error (a status other than 200 and 304, an
// answer Decode refuses, an ETag and a body that disagree, a server that
// closes the connection after it) ends the connection.
func (f *Fanout) answer(i int, p *poller, resp Response, at int64) error {
	switch resp.Status {
	case 200:
		a, err := f.cfg.Decode(i, resp.Body)
		if err != nil {
			return err
		}
		if resp.HasVersion && resp.Version != a.Version {
			return fmt.Errorf("ETag says version %d, the body %d", resp.Version, a.Version)
		}
		p.version = a.Version
		f.hold(p, a, at)
	case 304:
		f.notModified.Add(1)
	default:
		return fmt.Errorf("HTTP %d: %.160s", resp.Status, resp.Body)
	}
	if resp.Close {
		return errClosed
	}
	return nil
}

// retryAfter is how long a poller waits after an error before it dials again.
const retryAfter = 100 * time.Millisecond

// hold records the change an answer brought.
func (f *Fanout) hold(p *poller, a Answer, at int64) {
	f.answers.Add(1)
	k, news := a.Change, false
	switch {
	case k < 0 || k >= len(p.seen):
	case f.cfg.Cumulative:
		for p.latest < k {
			p.latest++
			p.seen[p.latest], p.aux[p.latest] = at, a.Aux
			f.held[p.latest].Add(1)
			news = true
		}
	case p.seen[k] == 0:
		p.seen[k], p.aux[k] = at, a.Aux
		f.held[k].Add(1)
		news = true
	}
	if !news {
		f.noNews.Add(1)
	}
}

// WaitUntil polls cond every 5 ms; false if it did not hold within timeout.
func WaitUntil(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
