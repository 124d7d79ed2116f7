package core

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// The poll port over a cache fed by hand (no etcd): parking, fan-out,
// expiry, limits. poll_compare_test.go runs it beside the HTTP port.

func newTestCache(maxServices int) *Cache {
	c := NewCache(time.Minute, maxServices, slog.New(slog.DiscardHandler))
	c.SetCoalesce(0)
	return c
}

// setInstances gives service n instances, as etcd's registry would.
func setInstances(c *Cache, service string, n int) {
	var events []etcdx.Event
	for i := range c.Instances(service) {
		events = append(events, etcdx.Event{Key: service + "/" + i, Deleted: true})
	}
	for i := range n {
		id := fmt.Sprintf("10.0.%d.%d:80", i/250, i%250)
		b, _ := json.Marshal(api.Registration{Service: service, Instance: id, Addr: id, StaticWeight: 100})
		events = append(events, etcdx.Event{Key: service + "/" + id, Value: b})
	}
	registryMirror{c}.Apply(events, 1)
}

// startPoll runs a poll port over c until the test ends.
func startPoll(t testing.TB, c *Cache, o PollOptions) *PollServer {
	t.Helper()
	s, err := ListenPoll("127.0.0.1:0", c, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("poll port: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("the poll port did not stop")
		}
	})
	return s
}

// rawClient speaks HTTP/1.1 on one connection, as a load generator does.
type rawClient struct {
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{conn: conn, r: bufio.NewReaderSize(conn, 512)}
}

func (c *rawClient) get(t testing.TB, target string, headers ...string) {
	t.Helper()
	c.send(t, "GET "+target+" HTTP/1.1\r\nHost: mesh-core\r\n"+strings.Join(headers, "")+"\r\n")
}

func (c *rawClient) send(t testing.TB, raw string) {
	t.Helper()
	if _, err := io.WriteString(c.conn, raw); err != nil {
		t.Fatal(err)
	}
}

type rawAnswer struct {
	status int
	header http.Header
	close  bool // Connection: close
	body   []byte
}

func (c *rawClient) read(t testing.TB, within time.Duration) rawAnswer {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(within))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("no answer within %s: %v", within, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return rawAnswer{resp.StatusCode, resp.Header, resp.Close, body}
}

// closed tells whether the server closed the connection (after what it answered).
func (c *rawClient) closed(within time.Duration) bool {
	c.conn.SetReadDeadline(time.Now().Add(within))
	_, err := c.r.ReadByte()
	return err == io.EOF
}

func (a rawAnswer) version(t testing.TB) int64 {
	t.Helper()
	var d struct{ Version int64 }
	if err := json.Unmarshal(a.body, &d); err != nil || a.status != 200 {
		t.Fatalf("answer %d %s", a.status, a.body)
	}
	return d.Version
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not so after 20s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A thousand parked polls hold no goroutine: the count grows by a small
// constant, not by the polls. A change answers every one of them, on its
// connection, which then serves the next poll.
func TestParkedPollsHoldNoGoroutine(t *testing.T) {
	if !parksWithoutGoroutine {
		t.Skip("the portable loop reads each connection on a goroutine")
	}
	const polls = 1000
	c := newTestCache(100)
	setInstances(c, "svc", 2)
	s := startPoll(t, c, PollOptions{})
	v := c.Get("svc").Version

	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	clients := make([]*rawClient, polls)
	for i := range clients {
		clients[i] = dial(t, s.Addr())
		clients[i].get(t, fmt.Sprintf("/v1/discovery/svc?version=%d&wait=30s", v))
	}
	waitUntil(t, "every poll parked", func() bool { return s.Waiting() == polls })
	time.Sleep(100 * time.Millisecond) // netpoll's pool of OnRequest goroutines drains
	grown := runtime.NumGoroutine() - before
	t.Logf("%d polls parked; goroutines %d -> %d", polls, before, before+grown)
	if grown > 5 {
		t.Fatalf("goroutines grew by %d for %d parked polls", grown, polls)
	}

	setInstances(c, "svc", 3)
	next := c.Get("svc").Version
	for i, cl := range clients {
		a := cl.read(t, 10*time.Second)
		if got := a.version(t); got != next || a.header.Get("ETag") != strconv.Quote(fmt.Sprint(next)) {
			t.Fatalf("poll %d: version %d, ETag %q; want %d", i, got, a.header.Get("ETag"), next)
		}
	}
	if n := s.Waiting(); n != 0 {
		t.Fatalf("%d polls still parked", n)
	}
	// The connections serve the next poll.
	clients[0].get(t, fmt.Sprintf("/v1/discovery/svc?version=%d&wait=100ms", next))
	if a := clients[0].read(t, 5*time.Second); a.status != 304 {
		t.Fatalf("next poll: %d %s", a.status, a.body)
	}
}

// A change wakes only the polls it concerns: polls for several services are
// answered when one of theirs changes, polls for another service are not.
func TestChangesWakeOnlyTheirPolls(t *testing.T) {
	c := newTestCache(100)
	setInstances(c, "a", 1)
	setInstances(c, "b", 1)
	s := startPoll(t, c, PollOptions{})
	cl := dial(t, s.Addr())
	cl.get(t, "/v1/discovery?services=a,b")
	many := cl.read(t, 5*time.Second).version(t)

	var onA, onAB []*rawClient
	for range 20 {
		x := dial(t, s.Addr())
		x.get(t, fmt.Sprintf("/v1/discovery/a?version=%d", c.Get("a").Version))
		onA = append(onA, x)
		y := dial(t, s.Addr())
		y.get(t, fmt.Sprintf("/v1/discovery?services=a,b&version=%d", many))
		onAB = append(onAB, y)
	}
	waitUntil(t, "40 polls parked", func() bool { return s.Waiting() == 40 })
	setInstances(c, "b", 2)
	for _, y := range onAB {
		a := y.read(t, 5*time.Second)
		var batch api.DiscoveryBatch
		if err := json.Unmarshal(a.body, &batch); err != nil || batch.Version == many || len(batch.Services) != 2 || len(batch.Services[1].Instances) != 2 {
			t.Fatalf("poll for a,b: %d %s", a.status, a.body)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := s.Waiting(); n != 20 {
		t.Fatalf("%d polls parked after b changed, want the 20 on a", n)
	}
}

// Waits end with 304 on time (within the wheel's tick), carrying the
// version as X-Sextant-Version and ETag; wait=0 answers at once.
func TestWaitsExpireWith304(t *testing.T) {
	c := newTestCache(100)
	setInstances(c, "svc", 1)
	s := startPoll(t, c, PollOptions{})
	v := c.Get("svc").Version
	for _, wait := range []time.Duration{0, 150 * time.Millisecond, 400 * time.Millisecond, time.Second} {
		cl := dial(t, s.Addr())
		start := time.Now()
		cl.get(t, fmt.Sprintf("/v1/discovery/svc?version=%d&wait=%s", v, wait))
		a := cl.read(t, wait+5*time.Second)
		took := time.Since(start)
		if a.status != 304 || len(a.body) != 0 || a.header.Get("X-Sextant-Version") != fmt.Sprint(v) || a.header.Get("ETag") != strconv.Quote(fmt.Sprint(v)) {
			t.Fatalf("wait %s: %d %v %q", wait, a.status, a.header, a.body)
		}
		if took < wait || took > wait+pollTick+300*time.Millisecond {
			t.Fatalf("wait %s answered after %s", wait, took)
		}
	}
	// Many at once, each on its own deadline.
	var clients []*rawClient
	for i := range 200 {
		cl := dial(t, s.Addr())
		cl.get(t, fmt.Sprintf("/v1/discovery/svc?version=%d&wait=%dms", v, 100+i))
		clients = append(clients, cl)
	}
	for _, cl := range clients {
		if a := cl.read(t, 5*time.Second); a.status != 304 {
			t.Fatalf("%d %s", a.status, a.body)
		}
	}
	waitUntil(t, "no poll parked", func() bool { return s.Waiting() == 0 })
}

// A client that goes away takes its parked poll with it; the last one gives
// the cache's slot of a service nobody registered back.
func TestClosedConnectionsLeave(t *testing.T) {
	c := newTestCache(100)
	s := startPoll(t, c, PollOptions{})
	v := c.Get("ghost").Version
	var clients []*rawClient
	for range 50 {
		cl := dial(t, s.Addr())
		cl.get(t, fmt.Sprintf("/v1/discovery?services=ghost,ghost-2&version=%d", collectVersion(c, "ghost", "ghost-2")))
		clients = append(clients, cl)
		cl = dial(t, s.Addr())
		cl.get(t, fmt.Sprintf("/v1/discovery/ghost?version=%d", v))
		clients = append(clients, cl)
	}
	waitUntil(t, "100 polls parked", func() bool { return s.Waiting() == 100 })
	if n := c.Services(); n != 2 {
		t.Fatalf("%d services held, want ghost and ghost-2", n)
	}
	for _, cl := range clients {
		cl.conn.Close()
	}
	waitUntil(t, "no poll parked", func() bool { return s.Waiting() == 0 })
	waitUntil(t, "no service held", func() bool { return c.Services() == 0 })
}

func collectVersion(c *Cache, names ...string) int64 {
	_, v := collect(c, names)
	return v
}

// One connection, polls one after the other (keep-alive), and pipelined:
// requests sent behind a parked poll are answered after it, in order.
func TestKeepAliveAndPipelining(t *testing.T) {
	c := newTestCache(100)
	setInstances(c, "svc", 1)
	s := startPoll(t, c, PollOptions{})
	cl := dial(t, s.Addr())
	cl.get(t, "/v1/discovery/svc")
	v := cl.read(t, 5*time.Second).version(t)
	// A parked poll, then two more requests on its connection.
	cl.get(t, fmt.Sprintf("/v1/discovery/svc?version=%d&wait=30s", v))
	waitUntil(t, "the poll parked", func() bool { return s.Waiting() == 1 })
	cl.send(t, "GET /v1/discovery/other HTTP/1.1\r\n\r\nGET /v1/discovery/svc?version=1 HTTP/1.1\r\n")
	time.Sleep(100 * time.Millisecond) // the rest of the third head comes later
	cl.send(t, "Connection: close\r\n\r\n")
	setInstances(c, "svc", 2)
	next := c.Get("svc").Version
	if got := cl.read(t, 5*time.Second).version(t); got != next {
		t.Fatalf("parked poll answered with %d, want %d", got, next)
	}
	var other api.Discovery
	if a := cl.read(t, 5*time.Second); a.status != 200 || json.Unmarshal(a.body, &other) != nil || other.Service != "other" {
		t.Fatalf("second: %d %s", a.status, a.body)
	}
	a := cl.read(t, 5*time.Second)
	if a.version(t) != next || !a.close || !cl.closed(5*time.Second) {
		t.Fatalf("third: %d %v, then the connection stays", a.status, a.header)
	}
	// HTTP/1.0 closes after its answer.
	old := dial(t, s.Addr())
	old.send(t, "GET /v1/discovery/svc HTTP/1.0\r\n\r\n")
	if a := old.read(t, 5*time.Second); a.status != 200 || !old.closed(5*time.Second) {
		t.Fatalf("HTTP/1.0: %d, then the connection stays", a.status)
	}
}

// Bad requests get a 4xx with a JSON error that names the problem; those
// that leave the stream unreadable close the connection.
func TestBadRequests(t *testing.T) {
	c := newTestCache(100)
	s := startPoll(t, c, PollOptions{MaxWait: time.Minute})
	long := strings.Repeat("x", 254)
	many := strings.TrimSuffix(strings.Repeat("s,", 101), ",")
	for _, tc := range []struct {
		name, raw string
		status    int
		code      string
		field     string
		closes    bool
	}{
		{"garbage", "hello world\r\n\r\n", 400, "malformed_request", "", true},
		{"HTTP/2", "GET /v1/discovery/a HTTP/2.0\r\n\r\n", 400, "unsupported_version", "version", true},
		{"bare LF", "GET /v1/discovery/a HTTP/1.1\nHost: x\n\n", 400, "malformed_request", "", true},
		{"obs-fold", "GET /v1/discovery/a HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, "malformed_request", "", true},
		{"body", "GET /v1/discovery/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400, "body_not_allowed", "Content-Length", true},
		{"chunked", "GET /v1/discovery/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "body_not_allowed", "Transfer-Encoding", true},
		{"head too large", "GET /v1/discovery/a HTTP/1.1\r\nX: " + strings.Repeat("a", 9000) + "\r\n\r\n", 431, "header_too_large", "", true},
		{"absolute target", "GET http://x/v1/discovery/a HTTP/1.1\r\n\r\n", 400, "malformed_request", "target", true},
		{"bad escape in path", "GET /v1/discovery/a%zz HTTP/1.1\r\n\r\n", 400, "malformed_request", "target", true},
		{"POST", "POST /v1/discovery/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "method_not_allowed", "method", false},
		{"unknown path", "GET /v1/instances HTTP/1.1\r\n\r\n", 404, "not_found", "", false},
		{"nested path", "GET /v1/discovery/a/b HTTP/1.1\r\n\r\n", 404, "not_found", "", false},
		{"bad escape in query", "GET /v1/discovery/a?version=%zz HTTP/1.1\r\n\r\n", 400, "malformed_request", "version", false},
		{"no service", "GET /v1/discovery/ HTTP/1.1\r\n\r\n", 400, api.CodeMissingField, "service", false},
		{"long name", "GET /v1/discovery/" + long + " HTTP/1.1\r\n\r\n", 400, api.CodeOutOfRange, "service", false},
		{"name with a space", "GET /v1/discovery/a%20b HTTP/1.1\r\n\r\n", 400, api.CodeInvalidValue, "service", false},
		{"version not a number", "GET /v1/discovery/a?version=x HTTP/1.1\r\n\r\n", 400, api.CodeInvalidType, "version", false},
		{"wait not a duration", "GET /v1/discovery/a?version=1&wait=soon HTTP/1.1\r\n\r\n", 400, api.CodeInvalidType, "wait", false},
		{"wait too long", "GET /v1/discovery/a?version=1&wait=2m HTTP/1.1\r\n\r\n", 400, api.CodeOutOfRange, "wait", false},
		{"negative wait", "GET /v1/discovery/a?version=1&wait=-1s HTTP/1.1\r\n\r\n", 400, api.CodeOutOfRange, "wait", false},
		{"no services", "GET /v1/discovery HTTP/1.1\r\n\r\n", 400, api.CodeMissingField, "services", false},
		{"empty name in services", "GET /v1/discovery?services=a,,b HTTP/1.1\r\n\r\n", 400, api.CodeMissingField, "services[1]", false},
		{"too many services", "GET /v1/discovery?services=" + many + " HTTP/1.1\r\n\r\n", 400, api.CodeTooMany, "services", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, s.Addr())
			cl.send(t, tc.raw)
			a := cl.read(t, 5*time.Second)
			var e api.ErrorBody
			if err := json.Unmarshal(a.body, &e); err != nil || e.Error == nil {
				t.Fatalf("%d %q: not a JSON error", a.status, a.body)
			}
			if a.status != tc.status || e.Error.Code != tc.code || e.Error.Field != tc.field || e.Error.Message == "" {
				t.Fatalf("got %d %+v, want %d %s on %q", a.status, e.Error, tc.status, tc.code, tc.field)
			}
			if a.header.Get("Content-Type") != "application/json; charset=utf-8" {
				t.Fatalf("Content-Type %q", a.header.Get("Content-Type"))
			}
			if tc.closes {
				if !a.close || !cl.closed(5*time.Second) {
					t.Fatal("the connection stays open")
				}
				return
			}
			cl.get(t, "/v1/discovery/next") // the connection serves on
			if a := cl.read(t, 5*time.Second); a.close || a.status != 200 {
				t.Fatalf("next request: %d %s", a.status, a.body)
			}
		})
	}
}

// Limits: requests per second per connection, idle connections, heads that
// never end.
func TestConnectionLimits(t *testing.T) {
	c := newTestCache(100)
	setInstances(c, "svc", 1)
	s := startPoll(t, c, PollOptions{MaxRequestsPerSecond: 5, IdleTimeout: 300 * time.Millisecond})

	cl := dial(t, s.Addr())
	cl.send(t, strings.Repeat("GET /v1/discovery/svc HTTP/1.1\r\n\r\n", 10)) // in one write: within one second

	var got []int
	for {
		a := cl.read(t, 5*time.Second)
		got = append(got, a.status)
		if a.status != 200 {
			var e api.ErrorBody
			_ = json.Unmarshal(a.body, &e)
			if a.status != 429 || e.Error.Code != "rate_limited" || a.header.Get("Retry-After") == "" {
				t.Fatalf("after %v: %d %s", got, a.status, a.body)
			}
			break
		}
	}
	if len(got) != 6 || !cl.closed(time.Second) {
		t.Fatalf("answers %v, then the connection stays open", got)
	}

	// Idle: nothing sent, or a head begun and never ended.
	for _, sent := range []string{"", "GET /v1/discovery/svc HTTP/1.1\r\nHost:"} {
		cl := dial(t, s.Addr())
		cl.send(t, sent)
		start := time.Now()
		if !cl.closed(5 * time.Second) {
			t.Fatalf("idle connection (sent %q) still open", sent)
		}
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Fatalf("idle connection closed after %s", took)
		}
	}
	// A parked poll is not idle.
	p := dial(t, s.Addr())
	p.get(t, fmt.Sprintf("/v1/discovery/svc?version=%d&wait=1s", c.Get("svc").Version))
	if a := p.read(t, 5*time.Second); a.status != 304 {
		t.Fatalf("poll parked longer than the idle timeout: %d", a.status)
	}
}

// When the port stops, parked polls are answered 304 and their connections closed.
func TestStopAnswersParkedPolls(t *testing.T) {
	c := newTestCache(100)
	setInstances(c, "svc", 1)
	s, err := ListenPoll("127.0.0.1:0", c, PollOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var clients []*rawClient
	for range 20 {
		cl := dial(t, s.Addr())
		cl.get(t, fmt.Sprintf("/v1/discovery/svc?version=%d&wait=30s", c.Get("svc").Version))
		clients = append(clients, cl)
	}
	waitUntil(t, "20 polls parked", func() bool { return s.Waiting() == 20 })
	cancel()
	for _, cl := range clients {
		if a := cl.read(t, 5*time.Second); a.status != 304 || !cl.closed(5*time.Second) {
			t.Fatalf("stopping: %d, or the connection stays", a.status)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Fatal("the port still accepts")
	}
}

// 429 when the cache has no slot for a service a poll would wait on.
func TestHoldRefused(t *testing.T) {
	c := newTestCache(1)
	setInstances(c, "real", 1)
	s := startPoll(t, c, PollOptions{})
	cl := dial(t, s.Addr())
	cl.get(t, fmt.Sprintf("/v1/discovery/ghost?version=%d&wait=1s", c.Get("ghost").Version))
	a := cl.read(t, 5*time.Second)
	var e api.ErrorBody
	if err := json.Unmarshal(a.body, &e); err != nil || a.status != 429 || e.Error.Code != "too_many_services" {
		t.Fatalf("%d %s", a.status, a.body)
	}
	// An answer at once needs no slot; a wait on the real service neither.
	cl.get(t, "/v1/discovery/ghost")
	if a := cl.read(t, 5*time.Second); a.status != 200 {
		t.Fatalf("%d %s", a.status, a.body)
	}
	cl.get(t, fmt.Sprintf("/v1/discovery?services=real,ghost&version=%d&wait=1s", collectVersion(c, "real", "ghost")))
	if a := cl.read(t, 5*time.Second); a.status != 429 {
		t.Fatalf("several: %d %s", a.status, a.body)
	}
	if n := c.Services(); n != 1 {
		t.Fatalf("%d services held after refused polls", n)
	}
}

// Whatever a client sends, the port answers with a status it documents (a
// 4xx with a JSON error when the request is bad), or waits for the rest of
// a head, or parks; it never fails.
func FuzzPollPort(f *testing.F) {
	c := newTestCache(3)
	setInstances(c, "svc", 2)
	s := startPoll(f, c, PollOptions{MaxRequestsPerSecond: 1 << 20})
	for _, seed := range []string{
		"GET /v1/discovery/svc HTTP/1.1\r\n\r\n",
		"GET /v1/discovery/svc?version=1&wait=0s HTTP/1.1\r\nIf-None-Match: W/\"1\"\r\n\r\n",
		"GET /v1/discovery?services=svc,a%2Cb,c+d&version=x HTTP/1.1\r\nConnection: close\r\n\r\n",
		"GET /v1/discovery?services=" + strings.Repeat("x,", 120) + " HTTP/1.1\r\n\r\n",
		"PUT /v1/discovery/svc HTTP/1.0\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"GET /v1/discovery/%00 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cl := dial(t, s.Addr())
		defer cl.conn.Close()
		cl.send(t, string(b))
		for {
			cl.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			resp, err := http.ReadResponse(cl.r, nil)
			if err != nil {
				return // no answer yet: a head not complete, or a parked poll; or the connection closed
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case 200, 304:
			case 400, 404, 405, 429, 431:
				var e api.ErrorBody
				if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" {
					t.Fatalf("%d with %q", resp.StatusCode, body)
				}
			default:
				t.Fatalf("status %d %q", resp.StatusCode, body)
			}
		}
	})
}

// dialSmall connects with a small receive buffer, so that a large answer
// does not fit the socket at once.
func dialSmall(t *testing.T, addr string) *rawClient {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{conn: conn, r: bufio.NewReaderSize(conn, 512)}
}

// An answer larger than what the socket takes is finished as the client
// reads, and the connection then serves the next poll; a client that stops
// reading has its connection closed after WriteTimeout, the answer cut.
func TestAnswerLargerThanTheSocket(t *testing.T) {
	c := newTestCache(100)
	setInstances(c, "big", 60000)
	s := startPoll(t, c, PollOptions{WriteTimeout: 500 * time.Millisecond})
	v := c.Get("big").Version

	slow := dialSmall(t, s.Addr())
	stuck := dialSmall(t, s.Addr())
	slow.get(t, "/v1/discovery/big")
	stuck.get(t, "/v1/discovery/big")

	a := slow.read(t, 10*time.Second)
	if got := a.version(t); got != v {
		t.Fatalf("version %d, want %d", got, v)
	}
	t.Logf("answer of %d bytes", len(a.body))
	slow.get(t, fmt.Sprintf("/v1/discovery/big?version=%d&wait=30s", v))
	waitUntil(t, "the slow client's next poll parked", func() bool { return s.Waiting() == 1 })

	// The stuck client reads only now, past WriteTimeout: what the server
	// had written, then the end of the connection.
	time.Sleep(time.Second)
	stuck.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(stuck.r, nil)
	if err != nil {
		t.Fatalf("no head: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) >= len(a.body) {
		t.Fatalf("the stuck client read %d of %d bytes, then %v; want the answer cut and the connection closed", len(body), len(a.body), err)
	}
	if s.Waiting() != 1 {
		t.Fatalf("%d polls parked, want the slow client's", s.Waiting())
	}
}
