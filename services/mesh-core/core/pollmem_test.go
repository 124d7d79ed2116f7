//go:build linux

package core

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/internal/httpx"
)

// What a parked poll costs mesh-core, on the poll port and on the HTTP
// (Hertz) port measured the same way: N polls parked by a client in a
// child process (so that its memory is not counted), the heap and stacks
// of this process before and after (runtime.ReadMemStats after a GC), the
// goroutines; then one change, and how long until the client held every
// answer.
//
//	SEXTANT_POLL_MEASURE=10000 go test -run TestPollMemory -v ./services/mesh-core/core/
func TestPollMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SEXTANT_POLL_MEASURE"))
	if n <= 0 {
		t.Skip("set SEXTANT_POLL_MEASURE to the number of polls to measure")
	}
	if os.Getenv("SEXTANT_POLL_PROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	for _, port := range []string{"poll", "hertz"} {
		t.Run(port, func(t *testing.T) {
			c := newTestCache(100)
			setInstances(c, "svc", 20)
			addr, waiting, stop := startPort(t, port, c)
			defer stop()
			m := measurePark(t, addr, c, n, waiting)
			t.Logf("%s port, %d parked polls: %.0f B heap + %.0f B stacks = %.0f B per poll; goroutines %+d; "+
				"after a change, the server answered all in %s; the client held the first answer in %s, 50%% in %s, 99%% in %s, all in %s",
				port, n, m.heap/float64(n), m.stacks/float64(n), (m.heap+m.stacks)/float64(n), m.goroutines,
				m.drained, m.first, m.p50, m.p99, m.all)
		})
	}
}

// TestPollMemoryBound is the bounded form of TestPollMemory that every
// test run makes: 2,000 polls parked on the poll port and, side by side, on
// the Hertz port. A parked poll must stay under the 8 KB the design allows,
// hold no goroutine, and cost less than half of what the same poll costs
// on Hertz. Memory, not time, is asserted: a slow machine passes.
func TestPollMemoryBound(t *testing.T) {
	if !parksWithoutGoroutine {
		t.Skip("the portable loop reads each connection on a goroutine")
	}
	if testing.Short() {
		t.Skip("parks 4,000 polls")
	}
	const n = 2000
	cost := map[string]float64{}
	for _, port := range []string{"poll", "hertz"} {
		c := newTestCache(100)
		setInstances(c, "svc", 20)
		addr, waiting, stop := startPort(t, port, c)
		m := measurePark(t, addr, c, n, waiting)
		stop()
		cost[port] = (m.heap + m.stacks) / n
		t.Logf("%s port: %.0f B per parked poll, goroutines %+d for %d polls", port, cost[port], m.goroutines, n)
		if port == "poll" && m.goroutines > n/100 {
			t.Errorf("%d goroutines for %d parked polls on the poll port: a parked poll must hold none", m.goroutines, n)
		}
	}
	if cost["poll"] > 8<<10 {
		t.Errorf("a parked poll costs %.0f B, over the 8 KB bound", cost["poll"])
	}
	if cost["poll"] > cost["hertz"]/2 {
		t.Errorf("a parked poll costs %.0f B on the poll port against %.0f B on Hertz: no longer under half", cost["poll"], cost["hertz"])
	}
}

// startPort serves discovery over c on the poll port or on a Hertz port
// set up as mesh-core's HTTP port is.
func startPort(t *testing.T, port string, c *Cache) (addr string, waiting func() int, stop func()) {
	if port == "poll" {
		s, err := ListenPoll("127.0.0.1:0", c, PollOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		return s.Addr(), s.Waiting, func() { cancel(); <-done }
	}
	h, err := httpx.Listen("127.0.0.1:0", server.WithStreamBody(true), server.WithSenseClientDisconnection(true), server.WithExitWaitTime(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stopping := make(chan struct{})
	reg := prometheus.NewRegistry()
	d := &discovery{cache: c, stale: func() bool { return false }, maxWait: time.Minute, defaultWait: 30 * time.Second,
		stopping: stopping, metrics: newMetrics(reg)}
	h.GET("/v1/discovery/:service", d.one)
	h.GET("/v1/discovery", d.many)
	h.Start()
	waiting = func() int {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "sextant_meshcore_pollers_waiting" {
				return int(mf.GetMetric()[0].GetGauge().GetValue())
			}
		}
		return 0
	}
	return h.Addr(), waiting, func() {
		close(stopping)
		h.Stop(context.Background())
	}
}

type parkCost struct {
	heap, stacks         float64
	goroutines           int
	first, p50, p99, all time.Duration
	drained              time.Duration // until the server held no poll
}

func measurePark(t *testing.T, addr string, c *Cache, n int, waiting func() int) parkCost {
	settle := func() runtime.MemStats {
		var ms runtime.MemStats
		for range 3 {
			runtime.GC()
			time.Sleep(50 * time.Millisecond)
		}
		runtime.ReadMemStats(&ms)
		return ms
	}
	before, g0 := settle(), runtime.NumGoroutine()

	v := c.Get("svc").Version
	cmd := exec.Command(os.Args[0], "-test.run=^TestPollClientChild$", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("SEXTANT_POLL_CLIENT=%s,%d,/v1/discovery/svc?version=%d&wait=60s", addr, n, v))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(out)
	expect := func(prefix string) string {
		for lines.Scan() {
			if rest, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return rest
			}
		}
		t.Fatalf("the client ended before %q: %v", prefix, lines.Err())
		return ""
	}
	expect("sent ")
	deadline := time.Now().Add(60 * time.Second)
	for waiting() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d polls parked after 60s", waiting(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // netpoll's pool of OnRequest goroutines drains
	after, g1 := settle(), runtime.NumGoroutine()
	if f := os.Getenv("SEXTANT_POLL_PROFILE"); f != "" {
		w, err := os.Create(f)
		if err == nil {
			err = errors.Join(pprof.WriteHeapProfile(w), w.Close())
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	if f := os.Getenv("SEXTANT_POLL_CPUPROFILE"); f != "" {
		w, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if err := pprof.StartCPUProfile(w); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	changed := time.Now()
	setInstances(c, "svc", 21)
	for waiting() > 0 && time.Since(changed) < time.Minute {
		time.Sleep(time.Millisecond)
	}
	drained := time.Since(changed)
	var got parkCost
	got.heap = float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
	got.stacks = float64(int64(after.StackInuse) - int64(before.StackInuse))
	got.goroutines = g1 - g0
	fields := strings.Fields(expect("answered "))
	if len(fields) != 5 {
		t.Fatalf("client said %v", fields)
	}
	at := func(i int) time.Duration {
		ns, _ := strconv.ParseInt(fields[i], 10, 64)
		return time.Unix(0, ns).Sub(changed)
	}
	if ok, _ := strconv.Atoi(fields[0]); ok != n {
		t.Fatalf("%d of %d polls answered 200", ok, n)
	}
	got.first, got.p50, got.p99, got.all, got.drained = at(1), at(2), at(3), at(4), drained
	return got
}

// TestPollClientChild is the client of TestPollMemory, in a process of its
// own and cheap, so that the server is what is measured: raw sockets and
// one epoll loop. It parks n polls, says "sent", and reports when the
// answers came (unix ns: first, median, 99th percentile, last).
func TestPollClientChild(t *testing.T) {
	spec := os.Getenv("SEXTANT_POLL_CLIENT")
	if spec == "" {
		t.Skip("the client of TestPollMemory")
	}
	parts := strings.SplitN(spec, ",", 3)
	n, _ := strconv.Atoi(parts[1])
	ap, err := netip.ParseAddrPort(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	sa := &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	req := []byte("GET " + parts[2] + " HTTP/1.1\r\nHost: mesh-core\r\n\r\n")
	ep, err := syscall.EpollCreate1(0)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err == nil {
			err = syscall.Connect(fd, sa)
		}
		if err == nil {
			_, err = syscall.Write(fd, req)
		}
		if err == nil {
			err = syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("sent %d\n", n)
	times := make([]int64, 0, n)
	answered := 0
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(120 * time.Second)
	for len(times) < n && time.Now().Before(deadline) {
		k, err := syscall.EpollWait(ep, events, 1000)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			t.Fatal(err)
		}
		now := time.Now().UnixNano()
		for _, ev := range events[:max(k, 0)] {
			m, _ := syscall.Read(int(ev.Fd), buf)
			times = append(times, now)
			if m > 12 && string(buf[:12]) == "HTTP/1.1 200" {
				answered++
			}
			syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, int(ev.Fd), nil)
		}
	}
	if len(times) < n {
		t.Fatalf("%d of %d answers", len(times), n)
	}
	slices.Sort(times)
	fmt.Printf("answered %d %d %d %d %d\n", answered, times[0], times[n/2], times[n*99/100], times[n-1])
}
