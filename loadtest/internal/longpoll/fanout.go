// Package longpoll is the client side of the long-poll load tools
// (loadtest/discovery, loadtest/configwatch): many simulated data planes,
// each holding one long poll over one keep-alive HTTP/1.1 connection of its
// own, written so that the client costs far less CPU than the server it
// measures.
//
// Each poller is one goroutine that writes a request built once (only the
// version at its end changes), then blocks in Read on its connection. The
// runtime's netpoller is already the "few threads on epoll" design: a
// parked goroutine costs its stack (a few KiB) and no CPU, and an answer
// costs one read, one write and one wake-up. An epoll loop of our own
// would save the wake-up but not the system calls, which dominate. Per
// poller the client keeps the connection, a response buffer sized for one
// answer and reused, and two small arrays of timestamps; nothing is
// allocated per answer, and nothing is decoded but the few integers the
// measurement needs (found by a byte scan).
package longpoll

import (
	"errors"
	"fmt"
	"net"
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

	answers, noNews, notModified, errCount atomic.Int64
	firstErr                               atomic.Value // string
}

// poller is one data plane. Only its goroutine writes it while it runs;
// the rest is read once the pollers have stopped.
type poller struct {
	conn    atomic.Pointer[net.TCPConn]
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
	for i := range f.pollers {
		f.wg.Go(func() { f.run(i) })
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

// Stop ends every poll and waits for the pollers. Safe to call twice.
func (f *Fanout) Stop() {
	f.stopped.Store(true)
	for i := range f.pollers {
		if c := f.pollers[i].conn.Load(); c != nil {
			c.Close()
		}
	}
	f.wg.Wait()
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

var dialer = net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1} // no TCP keep-alive probes: the polls themselves are

// run is poller i: connect, poll until an error, again until stopped.
func (f *Fanout) run(i int) {
	p := &f.pollers[i]
	rd := NewReader(f.cfg.BufSize, DefaultMaxResponse)
	target := f.cfg.Target(i)
	req := make([]byte, 0, len("GET ")+len(target)+20+len(f.suffix))
	req = append(append(req, "GET "...), target...)
	for !f.stopped.Load() {
		c, err := dialer.Dial("tcp", f.cfg.Addr)
		if err == nil {
			tc := c.(*net.TCPConn)
			p.conn.Store(tc)
			if f.stopped.Load() { // Stop may have looked before the Store
				tc.Close()
				return
			}
			err = f.poll(i, p, tc, rd, req)
			tc.Close()
		}
		if f.stopped.Load() {
			return
		}
		f.addError(err)
		time.Sleep(100 * time.Millisecond)
		*rd = *NewReader(f.cfg.BufSize, DefaultMaxResponse) // drop what a broken answer left
	}
}

var errClosed = errors.New("the server closed the connection (Connection: close)")

// poll runs poller i's long polls on c until one fails; req holds "GET
// <target>", to which each poll appends its version and the rest.
func (f *Fanout) poll(i int, p *poller, c *net.TCPConn, rd *Reader, req []byte) error {
	plen := len(req)
	for {
		req = append(strconv.AppendInt(req[:plen], p.version, 10), f.suffix...)
		if _, err := c.Write(req); err != nil {
			return err
		}
		resp, err := rd.Read(c)
		if err != nil {
			return err
		}
		at := time.Now().UnixNano()
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
	}
}

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
