package longpoll

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pollServer is a small long-poll server: each poll it reads goes to
// answer, with the number of polls so far (1 for the first) and the
// connection to write on; answer returns false to close the connection
// instead. It records each poll's version and Authorization header, and
// how many connections it accepted.
type pollServer struct {
	ln     net.Listener
	answer func(n int, version int64, c net.Conn) bool

	mu       sync.Mutex
	versions []int64
	auth     []string
	accepts  int
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startPollServer(t *testing.T, answer func(n int, version int64, c net.Conn) bool) *pollServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &pollServer{ln: ln, answer: answer}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.accepts++
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(s.close)
	return s
}

func (s *pollServer) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		v, _ := strconv.ParseInt(req.URL.Query().Get("version"), 10, 64)
		s.mu.Lock()
		s.versions = append(s.versions, v)
		s.auth = append(s.auth, req.Header.Get("Authorization"))
		n := len(s.versions)
		s.mu.Unlock()
		if !s.answer(n, v, c) {
			return
		}
	}
}

func (s *pollServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *pollServer) record() (versions []int64, auth []string, accepts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.versions...), append([]string(nil), s.auth...), s.accepts
}

// ok200 is a 200 answer holding version v (as mesh-core sends it: the
// version in the ETag and in the body).
func ok200(v int64) string {
	body := fmt.Sprintf(`{"service":"s","version":%d,"instances":[]}`, v)
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nEtag: \"%d\"\r\n\r\n%s", len(body), v, body)
}

const notModified = "HTTP/1.1 304 Not Modified\r\nX-Sextant-Version: 0\r\n\r\n"

// writeInPieces writes s cut at the given offsets, pausing between the
// pieces so that the client reads them apart.
func writeInPieces(c net.Conn, s string, cuts ...int) {
	prev := 0
	for _, at := range append(cuts, len(s)) {
		c.Write([]byte(s[prev:at]))
		prev = at
		time.Sleep(20 * time.Millisecond)
	}
}

// testConfig polls the server's /poll; an answer's version is the change
// it holds.
func testConfig(addr string, pollers, changes int) Config {
	return Config{
		Addr: addr, Token: "tok", Pollers: pollers, Changes: changes, Cumulative: true, BufSize: 16,
		Target: func(int) string { return "/poll?wait=30s&version=" },
		Decode: func(_ int, body []byte) (Answer, error) {
			v, ok := Int(body, []byte(`"version":`))
			if !ok {
				return Answer{}, fmt.Errorf("no version in %q", body)
			}
			return Answer{Version: v, Change: int(v)}, nil
		},
	}
}

// One poller through what a long-poll connection meets: answers cut
// across reads (in the head, in the body, a byte at a time), a 304 and the
// polls after it on the same connection, a connection the server closes
// (an error, then a new connection that goes on from the version held).
func TestFanoutOnePoller(t *testing.T) {
	park := make(chan struct{})
	defer close(park)
	s := startPollServer(t, func(n int, _ int64, c net.Conn) bool {
		switch n {
		case 1:
			a := ok200(0)
			writeInPieces(c, a, 10, len(a)-5) // in the status line, in the body
		case 2:
			c.Write([]byte(notModified))
		case 3:
			c.Write([]byte(ok200(1)))
		case 4:
			return false // closed while the poll waits: an error
		case 5:
			a := ok200(2)
			cuts := make([]int, 0, len(a))
			for i := 1; i < len(a); i++ {
				cuts = append(cuts, i)
			}
			for i, at := range append(cuts, len(a)) { // a byte at a time, quickly
				c.Write([]byte(a[at-1 : at]))
				if i%16 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		case 6:
			writeInPieces(c, ok200(3), len(ok200(3))-1)
		default:
			<-park
		}
		return true
	})
	f := New(testConfig(s.ln.Addr().String(), 1, 3))
	defer f.Stop()
	if _, _, err := f.Start(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !WaitUntil(5*time.Second, func() bool { return f.Held(3) == 1 }) {
		t.Fatalf("change 3 not held; %+v; %s", f.Counts(), f.Errors())
	}
	WaitUntil(time.Second, func() bool { v, _, _ := s.record(); return len(v) == 7 })
	f.Stop()
	versions, auth, accepts := s.record()
	if want := []int64{0, 0, 0, 1, 1, 2, 3}; fmt.Sprint(versions) != fmt.Sprint(want) {
		t.Errorf("polls sent versions %v, want %v", versions, want)
	}
	for _, a := range auth {
		if a != "Bearer tok" {
			t.Errorf("Authorization %q", a)
		}
	}
	if accepts != 2 {
		t.Errorf("%d connections, want 2 (one closed by the server)", accepts)
	}
	if got, want := f.Counts(), (Counts{Answers: 4, NotModified: 1, Errors: 1}); got != want {
		t.Errorf("counts %+v, want %+v; %s", got, want, f.Errors())
	}
	var prev time.Time
	for k := range 4 {
		at, _, ok := f.Seen(0, k)
		if !ok || at.Before(prev) {
			t.Errorf("change %d seen %v at %v (the one before at %v)", k, ok, at, prev)
		}
		prev = at
	}
}

// Many pollers over a few loops: every one gets its first answer, then a
// change the server sends with Connection: close, which costs each poller
// one error and one new connection, on which it polls from the change it
// holds.
func TestFanoutMany(t *testing.T) {
	const pollers = 200
	change, park := make(chan struct{}), make(chan struct{})
	defer close(park)
	s := startPollServer(t, func(_ int, v int64, c net.Conn) bool {
		switch v {
		case 0:
			c.Write([]byte(ok200(1)))
		case 1:
			<-change
			a := ok200(2)
			c.Write([]byte(strings.Replace(a, "\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)))
			return false
		default:
			<-park
		}
		return true
	})
	cfg := testConfig(s.ln.Addr().String(), pollers, 1)
	cfg.Loops, cfg.RampStep = 3, 50
	decode := cfg.Decode
	cfg.Decode = func(i int, body []byte) (Answer, error) { // version 1 is change 0
		a, err := decode(i, body)
		a.Change--
		return a, err
	}
	f := New(cfg)
	defer f.Stop()
	if _, _, err := f.Start(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	close(change)
	if !WaitUntil(5*time.Second, func() bool {
		v, _, _ := s.record()
		return len(v) == 3*pollers
	}) {
		t.Fatalf("%+v; %s", f.Counts(), f.Errors())
	}
	f.Stop()
	if c := f.Counts(); c != (Counts{Answers: 2 * pollers, Errors: pollers}) || f.Held(0) != pollers || f.Held(1) != pollers {
		t.Errorf("counts %+v, %d hold change 0, %d change 1; %s", c, f.Held(0), f.Held(1), f.Errors())
	}
	if _, _, accepts := s.record(); accepts != 2*pollers {
		t.Errorf("%d connections for %d pollers, want 2 each", accepts, pollers)
	}
}
