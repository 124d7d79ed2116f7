package core

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httphead"
)

// PollServer is the poll port: GET /v1/discovery/{service} and GET
// /v1/discovery?services=a,b,c as the HTTP port answers them
// (docs/discovery.md), on a small HTTP/1.1 server of its own, with an
// event loop of its own (pollsock_linux.go).
//
// A poll that has to wait is parked: its connection is registered on the
// services it waits on and on a timing wheel, and no goroutine, timer or
// channel is kept for it. When a service gets a new version, one writer
// encodes the answer once for every poll of the same services and writes it
// to each of them; one sweeper answers the waits that end (304) and closes
// idle connections. A parked poll costs its socket and a small record;
// Hertz keeps a goroutine, buffers and a request context for it.
type PollServer struct {
	ln    net.Listener
	socks *sockets
	cache *Cache
	d     *discovery // the arguments and answers of both ports
	o     PollOptions

	mu     sync.Mutex
	topics map[string]*topic    // services parked polls wait on
	lists  map[string]*pollList // parked polls, by the services they wait on
	parked int

	// parks counts the polls parked, to tell whether an answer encoded
	// for a list of services is as new as what a poll saw when it parked.
	parks atomic.Uint64

	changeMu sync.Mutex
	changed  map[string]bool // services with a new version, not yet fanned out
	wake     chan struct{}

	// readGate is held by each fan-out: the event loop reads no request
	// while a change's answers are being written.
	readGate sync.RWMutex

	metrics  *pollMetrics // nil without mesh-core's
	wheel    wheel
	date     atomic.Pointer[string] // the Date field of answers, remade every second
	stopping atomic.Bool
	flushes  sync.WaitGroup // writes that found a full socket, not finished yet
}

// PollOptions configure a PollServer; zero values take the defaults.
type PollOptions struct {
	// Longest and default wait, as on the HTTP port.
	MaxWait, DefaultWait time.Duration
	// IdleTimeout closes a connection without a poll in hand for this long
	// (default 1m); a request head must arrive whole within it.
	IdleTimeout time.Duration
	// MaxRequestsPerSecond bounds the requests of one connection within a
	// second (default 20): beyond, 429 and the connection is closed.
	MaxRequestsPerSecond int
	// MaxHeadBytes bounds a request head (default 8 KiB): 431 beyond, and
	// the connection is closed.
	MaxHeadBytes int
	// WriteTimeout bounds the write of an answer to a client that does not
	// read it (default 10s, to the sweeper's tick); the connection is
	// closed then.
	WriteTimeout time.Duration
	// Stale tells whether answers are stale (mesh-core out of touch with etcd).
	Stale func() bool
	// Authenticate checks a request's Authorization field; a poll it refuses
	// is answered 401. Nil lets every poll through (tests of the port alone).
	Authenticate func(authorization string) *api.FieldError

	metrics *metrics // mesh-core's, shared with the HTTP port; nil in tests
	// pollers records which data plane holds which version (shared with
	// the HTTP port; nil: not recorded).
	pollers *pollerBook
}

// pollMetrics are mesh-core's metrics of discovery, shared with the HTTP port.
type pollMetrics struct {
	changed, notModified prometheus.Counter
	waiting              prometheus.Gauge
	push                 prometheus.Histogram
}

const (
	pollTick      = 100 * time.Millisecond // granularity of the timing wheel
	pollChunk     = 1024                   // polls one writer answers before another joins
	discoveryPath = "/v1/discovery"
	// netpoll's first input buffer of a connection (8 KiB by default):
	// enough for a poll's request, and it grows when one needs more.
	pollBufferSize = 1 << 10
)

var errWouldBlock = errors.New("the socket's send buffer is full")

// netpoll allocates an input buffer for every connection when it opens
// (Config.BufferSize, 8 KiB, and never less than LinkBufferCap, 4 KiB), and
// keeps it while the connection lives. A long poll on the HTTP port (Hertz,
// on netpoll) mostly waits, so that buffer was the largest part of its
// memory. netpoll reads both as connections open and buffers grow, so they
// must be set before any does: in init, as netpoll's documentation asks.
// They apply to every netpoll connection of the process (Hertz's and
// Kitex's), whose buffers still grow as their reads and writes need.
func init() {
	netpoll.LinkBufferCap = pollBufferSize
	if err := netpoll.Configure(netpoll.Config{BufferSize: pollBufferSize, LoadBalance: netpoll.RoundRobin}); err != nil {
		panic(fmt.Sprintf("netpoll.Configure: %v", err))
	}
}

var errStopping = errors.New("the poll port is stopping")

// topic is a service parked polls wait on: held in the cache and followed
// (OnChange) while any does.
type topic struct {
	release, cancel func()
	lists           map[*pollList]bool
}

// pollList is the polls parked on the same services: one answer is encoded
// for all of them at each change.
type pollList struct {
	key   string // "/name" for GET /v1/discovery/name, "a,b,c" for ?services=a,b,c
	names []string
	many  bool
	polls map[*pconn]bool
}

// ListenPoll binds addr and prepares the poll port over cache; Run serves.
func ListenPoll(addr string, cache *Cache, o PollOptions) (*PollServer, error) {
	def := DefaultConfig()
	o.MaxWait = orDefault(o.MaxWait, def.MaxWait)
	o.DefaultWait = orDefault(o.DefaultWait, def.DefaultWait)
	o.IdleTimeout = orDefault(o.IdleTimeout, def.PollIdleTimeout)
	o.MaxRequestsPerSecond = orDefault(o.MaxRequestsPerSecond, def.PollRateLimit)
	o.MaxHeadBytes = orDefault(o.MaxHeadBytes, 8<<10)
	o.WriteTimeout = orDefault(o.WriteTimeout, 10*time.Second)
	if o.Stale == nil {
		o.Stale = func() bool { return false }
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	s := &PollServer{
		ln: ln, cache: cache, o: o,
		d:      &discovery{cache: cache, stale: o.Stale, maxWait: o.MaxWait, defaultWait: o.DefaultWait, pollers: o.pollers},
		topics: map[string]*topic{}, lists: map[string]*pollList{},
		changed: map[string]bool{}, wake: make(chan struct{}, 1),
		wheel: newWheel(pollTick, 1024, time.Now()),
	}
	if m := o.metrics; m != nil {
		s.metrics = &pollMetrics{changed: m.polls.WithLabelValues("changed"), notModified: m.polls.WithLabelValues("not_modified"),
			waiting: m.waiting, push: m.push}
	}
	s.setDate(time.Now())
	if s.socks, err = newSockets(s); err != nil {
		ln.Close()
		return nil, err
	}
	return s, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Addr is the address the poll port listens on.
func (s *PollServer) Addr() string { return s.ln.Addr().String() }

// Waiting is how many polls are parked.
func (s *PollServer) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parked
}

// Run serves until ctx ends; then it answers every parked poll (304, and
// the connection closes), stops accepting and closes the connections.
func (s *PollServer) Run(ctx context.Context) (err error) {
	served := make(chan error, 1)
	go func() { served <- s.accept() }()
	var wg, reading sync.WaitGroup
	reading.Go(s.socks.run)
	loops, stop := context.WithCancel(ctx)
	wg.Go(func() { s.dispatch(loops) })
	wg.Go(func() { s.sweep(loops) })

	select {
	case <-ctx.Done():
		s.ln.Close()
		if serr := <-served; serr != nil && !errors.Is(serr, net.ErrClosed) {
			err = serr
		}
	case err = <-served: // the listener failed
	}
	stop()
	wg.Wait()
	s.releaseAll()
	// The answers of releaseAll that did not fit their sockets are
	// finished by the loop, for WriteTimeout at most.
	flushed := make(chan struct{})
	go func() { s.flushes.Wait(); close(flushed) }()
	select {
	case <-flushed:
	case <-time.After(s.o.WriteTimeout):
	}
	s.socks.stop()
	reading.Wait()
	s.socks.closeAll()
	return err
}

// accept hands each new connection to the event loop until the listener
// closes. A passing failure (out of file descriptors, a connection reset
// before it was taken) is waited out, as net/http does, not fatal.
func (s *PollServer) accept() error {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		_ = s.socks.add(c)
	}
}

// releaseAll answers every parked poll 304 and closes its connection; no
// poll parks afterwards.
func (s *PollServer) releaseAll() {
	s.mu.Lock()
	s.stopping.Store(true)
	var pcs []*pconn
	for _, l := range s.lists {
		for pc := range l.polls {
			pcs = append(pcs, pc)
		}
	}
	s.mu.Unlock()
	for _, pc := range pcs {
		pc.mu.Lock()
		if pc.list != nil {
			pc.keepAlive = false
			pc.unpark()
			pc.notModified(pc.version)
		}
		pc.unlock()
	}
}

// open sets up a new connection on its socket, idle until its first request.
func (s *PollServer) open(k sock) *pconn {
	pc := &pconn{s: s, sock: k, wslot: -1}
	pc.mu.Lock()
	pc.armIdle(time.Now())
	pc.mu.Unlock()
	return pc
}

// closeEach closes the connections the event loop still holds when it ends.
func closeEach(pcs []*pconn) {
	for _, pc := range pcs {
		pc.mu.Lock()
		pc.closing = true
		pc.unlock()
	}
}

// sock is a connection's socket as the event loop keeps it. The loop hands
// what a client sends to pconn.received, every byte: the start of a head
// is kept until the rest comes, and a poll that waits is parked, not held.
type sock interface {
	// write writes what the socket takes now, without waiting
	// (errWouldBlock when it is full); mu is held.
	write(b []byte) (int, error)
	// flush writes b when the socket has room, then calls pc.flushed;
	// mu is held.
	flush(pc *pconn, b []byte)
	// close takes the socket off the loop and closes it; mu is held.
	close()
}

// onChange is the cache's word that service has a new version: it is
// fanned out by dispatch, not here (the cache is locked).
func (s *PollServer) onChange(service string) {
	s.changeMu.Lock()
	s.changed[service] = true
	s.changeMu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dispatch fans out each change to the polls parked on its service.
func (s *PollServer) dispatch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.changeMu.Lock()
		changed := s.changed
		s.changed = map[string]bool{}
		s.changeMu.Unlock()
		for service := range changed {
			s.fanOut(service)
		}
	}
}

// fanOut answers the polls parked on service whose version changed: one
// writer, joined by others (up to GOMAXPROCS) when the polls are many. No
// request is read meanwhile (readGate): the polls these answers cause wait
// in their sockets until every answer is written.
func (s *PollServer) fanOut(service string) {
	s.readGate.Lock()
	defer s.readGate.Unlock()
	s.mu.Lock()
	var pcs []*pconn
	if t := s.topics[service]; t != nil {
		for l := range t.lists {
			for pc := range l.polls {
				pcs = append(pcs, pc)
			}
		}
	}
	s.mu.Unlock()
	parts := min(runtime.GOMAXPROCS(0), (len(pcs)+pollChunk-1)/pollChunk)
	if parts <= 1 {
		s.answerChanged(pcs)
		return
	}
	size := (len(pcs) + parts - 1) / parts
	var wg sync.WaitGroup
	for i := 1; i < parts; i++ {
		part := pcs[i*size : min(len(pcs), (i+1)*size)]
		wg.Go(func() { s.answerChanged(part) })
	}
	s.answerChanged(pcs[:size])
	wg.Wait()
}

// encoded is the answer of a list of services at one version, for every
// poll parked on it that does not hold that version.
type encoded struct {
	version int64
	parks   uint64    // s.parks before it was made: it is as new as what polls parked before saw
	built   time.Time // of the snapshot, for one service
	body    []byte
	keep    []byte // the HTTP answer, the connection kept
	closing []byte // and closed, made when needed
}

func (s *PollServer) encode(l *pollList, now time.Time, stale bool) *encoded {
	e := &encoded{parks: s.parks.Load()}
	if l.many {
		var snaps []*Snapshot
		snaps, e.version = collect(s.cache, l.names)
		e.body = appendBatch(nil, snaps, e.version, now, stale)
	} else {
		snap := s.cache.Get(l.names[0])
		e.version, e.built = snap.Version, snap.built
		e.body = snap.AppendJSON(nil, now, stale)
	}
	e.keep = s.appendOK(nil, e.version, e.body, true)
	return e
}

func (e *encoded) answer(s *PollServer, keepAlive bool) []byte {
	if keepAlive {
		return e.keep
	}
	if e.closing == nil {
		e.closing = s.appendOK(nil, e.version, e.body, false)
	}
	return e.closing
}

// yieldEvery is how many answers a writer makes before it yields.
const yieldEvery = 128

// answerChanged answers those of pcs that are parked on a version other
// than their services' now, encoding each list's answer once.
func (s *PollServer) answerChanged(pcs []*pconn) {
	now, stale := time.Now(), s.o.Stale()
	answers := map[*pollList]*encoded{}
	for i, pc := range pcs {
		if i%yieldEvery == yieldEvery-1 {
			// A fan-out is CPU-bound for tens of ms: let the goroutines of
			// PublishPolicy, etcd and the registry run between its chunks.
			runtime.Gosched()
		}
		pc.mu.Lock()
		l := pc.list
		if l == nil {
			pc.unlock()
			continue
		}
		e := answers[l]
		if e == nil || pc.parkNo > e.parks {
			e = s.encode(l, now, stale)
			answers[l] = e
		}
		if e.version != pc.version {
			pc.unpark()
			if m := s.metrics; m != nil {
				m.changed.Inc()
				if !l.many {
					m.push.Observe(now.Sub(e.built).Seconds())
				}
			}
			pc.reply(e.answer(s, pc.keepAlive))
			pc.next()
		}
		pc.unlock()
	}
}

// sweep ends the waits and idle connections whose time is up, each tick.
func (s *PollServer) sweep(ctx context.Context) {
	t := time.NewTicker(pollTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.setDate(now)
			for _, pc := range s.wheel.expire(now) {
				pc.expire(now)
			}
		}
	}
}

// join registers pc on the list of polls parked on names, made (and its
// services held in the cache) when none is parked on them yet. It fails
// when the cache has no slot for a service (ErrTooManyServices) or the
// port stops.
func (s *PollServer) join(pc *pconn, key string, names []string, many bool) (*pollList, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping.Load() {
		return nil, errStopping
	}
	l := s.lists[key]
	if l == nil {
		l = &pollList{key: key, names: names, many: many, polls: map[*pconn]bool{}}
		for i, n := range names {
			t := s.topics[n]
			if t == nil {
				_, release, err := s.cache.Hold(n)
				if err != nil {
					for _, held := range names[:i] {
						s.unlist(l, held)
					}
					return nil, err
				}
				t = &topic{release: release, lists: map[*pollList]bool{}}
				t.cancel = s.cache.OnChange([]string{n}, s.onChange)
				s.topics[n] = t
			}
			t.lists[l] = true
		}
		s.lists[key] = l
	}
	l.polls[pc] = true
	s.parked++
	return l, nil
}

// leave takes pc off l; the last poll of a list takes the list off its
// services, and the last list of a service gives its hold back.
func (s *PollServer) leave(pc *pconn, l *pollList) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !l.polls[pc] {
		return
	}
	delete(l.polls, pc)
	s.parked--
	if len(l.polls) > 0 {
		return
	}
	delete(s.lists, l.key)
	for _, n := range l.names {
		s.unlist(l, n)
	}
}

// unlist takes l off service n; mu is held.
func (s *PollServer) unlist(l *pollList, n string) {
	t := s.topics[n]
	if t == nil || !t.lists[l] {
		return
	}
	delete(t.lists, l)
	if len(t.lists) == 0 {
		delete(s.topics, n)
		t.cancel()
		t.release()
	}
}

// pconn is one connection of the poll port.
type pconn struct {
	s    *PollServer
	sock sock

	mu        sync.Mutex
	closing   bool   // closed or to be closed: nothing more is written
	shut      bool   // the socket is closed
	writing   bool   // an answer is being written as the socket takes it (it was full)
	keepAlive bool   // of the request in hand
	client    string // the data plane's name on the request in hand ("" when not given)
	pending   []byte // the start of a head, or requests sent behind a parked poll
	second    int64  // the second requests are counted in
	requests  int

	list     *pollList // what a parked poll waits on; nil when none is parked
	version  int64     // the version the parked poll holds
	parkNo   uint64    // s.parks when it parked
	deadline int64     // unix ns: end of the wait when parked, else of idleness

	// The timing wheel's, under wheel.mu.
	wnext, wprev *pconn
	wslot        int
	wdue         int64
}

// unlock releases mu, and closes the connection first when what was done
// under it decided so: the socket closes under mu, so that nobody writes to
// its descriptor once it may be another connection's.
func (pc *pconn) unlock() {
	if pc.closing && !pc.shut {
		pc.shut = true
		if pc.list != nil {
			pc.unpark()
		}
		pc.pending = nil
		pc.s.wheel.remove(pc)
		if pc.writing {
			pc.writing = false
			pc.s.flushes.Done()
		}
		pc.sock.close()
	}
	pc.mu.Unlock()
}

// received takes bytes from the client; mu is held.
func (pc *pconn) received(b []byte) {
	if pc.closing {
		return
	}
	if pc.list != nil || pc.writing || len(pc.pending) > 0 {
		pc.pending = append(pc.pending, b...)
		if pc.list == nil && !pc.writing {
			b, pc.pending = pc.pending, nil
			pc.serve(b)
		} else if len(pc.pending) > pc.s.o.MaxHeadBytes {
			// Requests sent behind a poll in hand are read after it; not that many.
			if pc.list != nil {
				pc.unpark()
			}
			pc.closing = true
		}
		return
	}
	pc.serve(b)
}

// serve handles the requests in b, in order, until one parks or the
// connection closes; what is left (the start of a head, or requests behind
// a parked poll) is kept. mu is held.
func (pc *pconn) serve(b []byte) {
	for len(b) > 0 && !pc.closing && pc.list == nil && !pc.writing {
		h, n, err := httphead.Parse(b, pc.s.o.MaxHeadBytes)
		if err != nil {
			pc.keepAlive = false
			pc.fail(err.Status, err.Err, "")
			return
		}
		if n == 0 {
			break
		}
		b = b[n:]
		pc.handle(&h)
	}
	if len(b) > 0 && !pc.closing {
		pc.pending = append([]byte(nil), b...)
	}
}

// handle answers one request, or parks it; mu is held.
func (pc *pconn) handle(h *httphead.Head) {
	s := pc.s
	now := time.Now()
	// HTTP/1.0 gets one answer per connection.
	pc.keepAlive = h.KeepAlive && h.Minor == 1 && !s.stopping.Load()
	if sec := now.Unix(); sec != pc.second {
		pc.second, pc.requests = sec, 0
	}
	if pc.requests++; pc.requests > s.o.MaxRequestsPerSecond {
		pc.keepAlive = false
		pc.fail(429, api.Errorf("", "rate_limited", "more than %d requests in a second on one connection", s.o.MaxRequestsPerSecond), "Retry-After: 1\r\n")
		return
	}
	if s.o.Authenticate != nil {
		if fe := s.o.Authenticate(h.Authorization); fe != nil {
			pc.fail(401, fe, "WWW-Authenticate: Bearer realm=\"sextant\"\r\n")
			return
		}
	}
	one := false
	switch {
	case h.Path == discoveryPath:
	case strings.HasPrefix(h.Path, discoveryPath+"/") && !strings.Contains(h.Path[len(discoveryPath)+1:], "/"):
		one = true
	default:
		pc.fail(404, api.Errorf("", "not_found", "no %s here: this port serves GET %s/{service} and GET %s?services=a,b,c", clip(h.Path), discoveryPath, discoveryPath), "")
		return
	}
	if h.Method != "GET" {
		pc.fail(405, api.Errorf("method", "method_not_allowed", "%s: this port serves GET only", clip(h.Method)), "Allow: GET\r\n")
		return
	}
	var query [4]string // services, version, wait, client
	for i, key := range [...]string{"services", "version", "wait", "client"} {
		v, _, err := httphead.Query(h.RawQuery, key)
		if err != nil {
			pc.fail(400, api.Errorf(key, httphead.CodeMalformedRequest, "query: %v", err), "")
			return
		}
		query[i] = v
	}
	var names []string
	if one {
		service := h.Path[len(discoveryPath)+1:]
		if fe := api.KeyName("service", service); fe != nil {
			pc.fail(400, fe, "")
			return
		}
		names = []string{service}
	} else {
		var fe *api.FieldError
		if names, fe = pollNames(query[0]); fe != nil {
			pc.fail(400, fe, "")
			return
		}
	}
	a, fe := s.d.parseArgs(query[1], query[2], h.IfNoneMatch)
	if fe == nil {
		a.client, fe = clientArg(query[3])
	}
	if fe != nil {
		pc.fail(400, fe, "")
		return
	}
	pc.client = a.client
	s.d.pollers.saw(a.client, names, !one, a.version, now)
	key := "/" + names[0]
	if !one {
		key = strings.Join(names, ",")
	}
	pc.poll(key, names, !one, a, now)
}

// poll answers at once when the version differs from the one held, else
// parks; mu is held.
func (pc *pconn) poll(key string, names []string, many bool, a pollArgs, now time.Time) {
	s := pc.s
	if pc.current(names, many) != a.version {
		pc.changed(names, many, now)
		return
	}
	l, err := s.join(pc, key, names, many)
	switch {
	case errors.Is(err, errStopping):
		pc.keepAlive = false
		pc.notModified(a.version)
		return
	case err != nil:
		status, fe := holdError(err)
		pc.fail(status, fe, "")
		return
	}
	// Looked at again once joined: a change made since the first look is
	// answered here, one made from now on is fanned out to this poll.
	if pc.current(names, many) != a.version {
		s.leave(pc, l)
		pc.changed(names, many, now)
		return
	}
	if a.wait <= 0 {
		s.leave(pc, l)
		pc.notModified(a.version)
		return
	}
	pc.list, pc.version, pc.parkNo = l, a.version, s.parks.Add(1)
	pc.arm(now.Add(a.wait))
	if m := s.metrics; m != nil {
		m.waiting.Inc()
	}
}

func (pc *pconn) current(names []string, many bool) int64 {
	if many {
		_, v := collect(pc.s.cache, names)
		return v
	}
	return pc.s.cache.Get(names[0]).Version
}

// changed answers 200 with the current answer; mu is held.
func (pc *pconn) changed(names []string, many bool, now time.Time) {
	s := pc.s
	stale := s.o.Stale()
	var version int64
	var body []byte
	if many {
		var snaps []*Snapshot
		snaps, version = collect(s.cache, names)
		body = appendBatch(nil, snaps, version, now, stale)
	} else {
		snap := s.cache.Get(names[0])
		version, body = snap.Version, snap.AppendJSON(nil, now, stale)
	}
	if m := s.metrics; m != nil {
		m.changed.Inc()
	}
	s.d.pollers.saw(pc.client, names, many, version, now)
	pc.reply(s.appendOK(make([]byte, 0, len(body)+256), version, body, pc.keepAlive))
}

// notModified answers 304 for version; mu is held.
func (pc *pconn) notModified(version int64) {
	if m := pc.s.metrics; m != nil {
		m.notModified.Inc()
	}
	pc.reply(pc.s.appendNotModified(make([]byte, 0, 192), version, pc.keepAlive))
}

// fail answers a 4xx or 5xx with a JSON error; mu is held.
func (pc *pconn) fail(status int, fe *api.FieldError, extra string) {
	pc.reply(pc.s.appendError(nil, status, fe, pc.keepAlive, extra))
}

// unpark takes a parked poll off its list and the wheel; mu is held.
func (pc *pconn) unpark() {
	pc.s.leave(pc, pc.list)
	pc.list = nil
	pc.s.wheel.remove(pc)
	if m := pc.s.metrics; m != nil {
		m.waiting.Dec()
	}
}

// expire ends a wait (304) or an idle connection whose time is up; mu is not held.
func (pc *pconn) expire(now time.Time) {
	pc.mu.Lock()
	defer pc.unlock()
	if pc.closing || pc.deadline > now.UnixNano() {
		return
	}
	if pc.list == nil {
		pc.closing = true // idle, a head that never ended, or an answer not read
		return
	}
	v := pc.version
	pc.unpark()
	pc.notModified(v)
	pc.next()
}

// reply writes an answer, then the connection waits for the next request,
// or closes when the client asked; mu is held.
func (pc *pconn) reply(b []byte) {
	pc.write(b)
	pc.answered()
}

func (pc *pconn) answered() {
	switch {
	case pc.closing || pc.writing: // closed, or answered when the write ends
	case !pc.keepAlive:
		pc.closing = true
	default:
		pc.armIdle(time.Now())
	}
}

// next serves the requests that came behind an answered poll; mu is held.
func (pc *pconn) next() {
	if len(pc.pending) > 0 && !pc.closing && !pc.writing && pc.list == nil {
		b := pc.pending
		pc.pending = nil
		pc.serve(b)
	}
}

// write sends b, at once when the socket takes it (nearly always); else
// the rest goes when the client reads, within WriteTimeout or the
// connection closes. mu is held.
func (pc *pconn) write(b []byte) {
	if pc.closing || len(b) == 0 {
		return
	}
	n, err := pc.sock.write(b)
	switch {
	case n == len(b):
		return
	case !errors.Is(err, errWouldBlock):
		pc.closing = true
		return
	}
	pc.writing = true
	pc.s.flushes.Add(1)
	pc.arm(time.Now().Add(pc.s.o.WriteTimeout))
	pc.sock.flush(pc, append([]byte(nil), b[n:]...))
}

// flushed ends a write the socket did not take at once; mu is held.
func (pc *pconn) flushed(err error) {
	if !pc.writing {
		return // closed meanwhile
	}
	pc.writing = false
	pc.s.flushes.Done()
	if err != nil {
		pc.closing = true
		return
	}
	pc.answered()
	pc.next()
}

func (pc *pconn) armIdle(now time.Time) { pc.arm(now.Add(pc.s.o.IdleTimeout)) }

func (pc *pconn) arm(deadline time.Time) {
	pc.deadline = deadline.UnixNano()
	pc.s.wheel.add(pc, pc.deadline)
}

// clip keeps what the client sent short in error messages.
func clip(p string) string {
	if len(p) > 64 {
		return fmt.Sprintf("%q...", p[:64])
	}
	return fmt.Sprintf("%q", p)
}

// PollAddr is the poll port's address ("" when it is off).
func (mc *MeshCore) PollAddr() string {
	if mc.poll == nil {
		return ""
	}
	return mc.poll.Addr()
}
