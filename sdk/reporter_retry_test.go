package sdk

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// fakeMixer answers each POST /v1/telemetry with the next status of its
// script (then with its default), and keeps the reports it accepted.
type fakeMixer struct {
	mu       sync.Mutex
	script   []int
	status   int // once the script is done
	accepted []api.Report
	answers  int
}

func (m *fakeMixer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.answers++
	status := m.status
	if len(m.script) > 0 {
		status, m.script = m.script[0], m.script[1:]
	}
	switch status {
	case 0: // no answer: the connection is dropped
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
		return
	case http.StatusAccepted:
		var rep api.Report
		if err := json.Unmarshal(body, &rep); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		m.accepted = append(m.accepted, rep)
		w.WriteHeader(status)
		fmt.Fprint(w, `{"accepted":1}`)
	case http.StatusBadRequest:
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":{"code":"missing_field","message":"x","field":"dry_run_denials[0].caller_service"}}`)
	default:
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":{"code":"x","message":"x"}}`)
	}
}

func (m *fakeMixer) set(status int, script ...int) {
	m.mu.Lock()
	m.status, m.script = status, script
	m.mu.Unlock()
}

func (m *fakeMixer) got() []api.Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]api.Report{}, m.accepted...)
}

func startFake(t *testing.T, status int, script ...int) (*fakeMixer, string) {
	m := &fakeMixer{status: status, script: script}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv.URL
}

// testReporter sends only what the test enqueues (its window never closes).
func testReporter(t *testing.T, mixer string, maxPending int) *Reporter {
	r := NewReporter(ReporterOptions{Mixer: mixer, Service: "front", Instance: "front-1", Window: time.Hour,
		MaxPending: maxPending, Retry: backoff.Policy{Base: time.Millisecond, Max: 5 * time.Millisecond}})
	r.Start()
	t.Cleanup(r.Close)
	return r
}

func testWindow(i int) *api.Report {
	return &api.Report{Reporter: &api.Reporter{Service: "front", Instance: "front-1"}, WindowMs: 1000,
		TimestampMs: int64(1_000_000 + i), Server: &api.ServerStats{Requests: int64(i)}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// balanced checks that every window is sent, pending or counted.
func balanced(t *testing.T, st ReporterStats) {
	t.Helper()
	n := st.Sent + int64(st.Pending)
	for _, c := range st.DroppedWindows {
		n += c
	}
	if st.Windows+st.Splits != n {
		t.Fatalf("windows %d + splits %d != sent %d + pending %d + dropped %v", st.Windows, st.Splits, st.Sent, st.Pending, st.DroppedWindows)
	}
}

// A window refused for now (429, 503, no answer) is sent again, in order,
// until the mixer takes it: nothing is lost.
func TestReporterRetriesRefusedWindows(t *testing.T) {
	m, url := startFake(t, http.StatusAccepted, http.StatusTooManyRequests, http.StatusServiceUnavailable, 0, http.StatusBadGateway, 0, http.StatusTooManyRequests)
	r := testReporter(t, url, 10)
	for i := 0; i < 5; i++ {
		r.enqueue(testWindow(i))
	}
	waitFor(t, "5 windows accepted", func() bool { return len(m.got()) == 5 && r.Stats().Pending == 0 })
	for i, rep := range m.got() {
		if rep.TimestampMs != int64(1_000_000+i) {
			t.Fatalf("window %d arrived as %d: out of order", i, rep.TimestampMs-1_000_000)
		}
	}
	st := r.Stats()
	if st.Sent != 5 || st.Retries != 6 || len(st.DroppedWindows) != 0 {
		t.Fatalf("stats %+v: want 5 sent, 6 retries, nothing dropped", st)
	}
	balanced(t, st)
}

// While the mixer is away the reporter keeps MaxPending windows, dropping
// the oldest, each counted; when it is back the newest arrive.
func TestReporterBufferKeepsTheNewest(t *testing.T) {
	m, url := startFake(t, http.StatusServiceUnavailable)
	r := testReporter(t, url, 3)
	for i := 0; i < 10; i++ {
		r.enqueue(testWindow(i))
	}
	waitFor(t, "retries", func() bool { return r.Stats().Retries > 3 })
	m.set(http.StatusAccepted)
	waitFor(t, "the buffer sent", func() bool { return r.Stats().Pending == 0 })
	st := r.Stats()
	balanced(t, st)
	if st.DroppedWindows[DropBufferFull] != 7 || st.Sent != 3 {
		t.Fatalf("stats %+v: want 7 dropped (buffer_full), 3 sent", st)
	}
	for i, rep := range m.got() {
		if rep.TimestampMs != int64(1_000_007+i) {
			t.Fatalf("sent window %d, want the newest three (7, 8, 9)", rep.TimestampMs-1_000_000)
		}
	}
}

// A 4xx that will never pass is not retried: a report refused for its
// denials goes again without them, one too large is split, others are
// dropped and counted by reason.
func TestReporterRefusedForGood(t *testing.T) {
	m, url := startFake(t, http.StatusAccepted, http.StatusBadRequest, http.StatusAccepted,
		http.StatusRequestEntityTooLarge, http.StatusAccepted, http.StatusAccepted, http.StatusUnauthorized, http.StatusBadRequest)
	r := testReporter(t, url, 10)

	denied := testWindow(0)
	denied.DryRunDenials = []api.DryRunDenial{{CalleeService: "front", CallerService: "x", Rule: "r", Count: 1}}
	r.enqueue(denied) // 400 about its denials: sent again without them
	waitFor(t, "the report without denials", func() bool { return len(m.got()) == 1 })
	if got := m.got()[0]; len(got.DryRunDenials) != 0 || got.Server == nil {
		t.Fatalf("resent %+v, want the server data without denials", got)
	}

	big := testWindow(1)
	for i := 0; i < 5; i++ {
		big.Calls = append(big.Calls, api.Call{CalleeService: "b", CalleeInstance: fmt.Sprint(i), Requests: 1})
	}
	r.enqueue(big) // 413: split
	waitFor(t, "both halves", func() bool { return len(m.got()) == 3 })
	halves := m.got()[1:]
	if len(halves[0].Calls)+len(halves[1].Calls) != 5 || halves[0].Server == nil || halves[1].Server != nil {
		t.Fatalf("halves %+v", halves)
	}

	r.enqueue(testWindow(2)) // 401
	r.enqueue(testWindow(3)) // 400 about a field other than the denials (it has none)
	r.enqueue(testWindow(4)) // accepted
	waitFor(t, "the last window", func() bool { return len(m.got()) == 4 && r.Stats().Pending == 0 })
	st := r.Stats()
	balanced(t, st)
	if st.Retries != 0 || st.Splits != 1 || st.DroppedWindows[DropUnauthorized] != 1 || st.DroppedWindows[DropRejected] != 1 ||
		st.DroppedDenials[DenialRefusedByMixer] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Close sends what is pending once more, and counts what it cannot send.
func TestReporterCloseCountsWhatIsLeft(t *testing.T) {
	m, url := startFake(t, http.StatusServiceUnavailable)
	r := NewReporter(ReporterOptions{Mixer: url, Service: "front", Instance: "front-1", Window: time.Hour,
		Retry: backoff.Policy{Base: time.Hour, Max: time.Hour}})
	r.Start()
	r.enqueue(testWindow(0))
	r.enqueue(testWindow(1))
	waitFor(t, "a first refusal", func() bool { return r.Stats().Retries == 1 })
	m.set(http.StatusAccepted, http.StatusServiceUnavailable)
	r.RecordCall("b", "b-1", time.Millisecond, false, false) // the open window
	r.Close()
	st := r.Stats()
	balanced(t, st)
	if st.Windows != 3 || st.Sent != 2 || st.DroppedWindows[DropClosed] != 1 || st.Pending != 0 {
		t.Fatalf("stats %+v: want 3 windows, 2 sent, 1 dropped at close", st)
	}
}

// Dry-run denials stay within what the mixer takes: no unnamed or invalid
// caller, at most MaxDenials entries (the largest counts), the rest counted.
func TestReporterKeepsDenialsWithinTheMixersLimits(t *testing.T) {
	r := NewReporter(ReporterOptions{Service: "pay", Instance: "pay-1", MaxDenials: 3})
	r.dryRunDenial("", "allow-list")
	r.dryRunDenial("bad name", "allow-list")
	for i := 0; i < 5; i++ {
		for j := 0; j <= i; j++ {
			r.dryRunDenial(fmt.Sprintf("caller-%d", i), "allow-list")
		}
	}
	rep := r.Flush(time.Now())
	if len(rep.DryRunDenials) != 3 {
		t.Fatalf("%d denials, want 3", len(rep.DryRunDenials))
	}
	for _, d := range rep.DryRunDenials {
		if d.Count < 3 {
			t.Errorf("kept %+v, want the three largest counts", d)
		}
	}
	st := r.Stats()
	if st.DroppedDenials[DenialUnnamedCaller] != 1 || st.DroppedDenials[DenialInvalidName] != 1 || st.DroppedDenials[DenialOverLimit] != 3 {
		t.Fatalf("dropped denials %v: want 1 unnamed, 1 invalid, 3 requests over the limit", st.DroppedDenials)
	}
	// A window whose only denials were left out has nothing to send.
	r.dryRunDenial("", "allow-list")
	if rep := r.Flush(time.Now()); rep != nil {
		t.Fatalf("a window of an unnamed caller's denial: %+v", rep)
	}
	// Memory stays bounded whatever callers claim to be.
	for i := 0; i < 100; i++ {
		r.dryRunDenial(fmt.Sprintf("c-%d", i), "allow-list")
	}
	r.mu.Lock()
	n := len(r.cur.denials)
	r.mu.Unlock()
	if n != 30 {
		t.Fatalf("%d denial keys held, want 10 x MaxDenials", n)
	}
}

// The default retry backoff stops at a quarter of what the buffer holds
// (MaxPending windows), at most 10 s: a mixer back after an outage gets the
// buffered windows before the buffer fills.
func TestDefaultRetryFitsTheBuffer(t *testing.T) {
	for _, tc := range []struct {
		maxPending int
		window     time.Duration
		want       time.Duration
	}{
		{0, 0, 2500 * time.Millisecond}, // the defaults: 10 windows of 1 s
		{100, time.Second, 10 * time.Second},
		{4, 100 * time.Millisecond, 100 * time.Millisecond},
	} {
		r := NewReporter(ReporterOptions{Mixer: "127.0.0.1:1", Service: "s", Instance: "i", MaxPending: tc.maxPending, Window: tc.window})
		if r.retry.Max != tc.want || r.retry.Base > r.retry.Max {
			t.Errorf("MaxPending %d, Window %s: retry %+v, want at most %s", tc.maxPending, tc.window, r.retry, tc.want)
		}
	}
}
