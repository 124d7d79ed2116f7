package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
)

// Reporter aggregates what a service sees, per window, and sends it to the
// telemetry-mixer: its own serving side (requests by priority, queueing
// time, utilization) and its calls to each callee instance (requests,
// errors, timeouts, latency). Memory is bounded: at most MaxCallees callee
// instances a window, at most MaxPending windows waiting to be sent; beyond
// that it drops its own data, oldest first, never the service's requests.
type Reporter struct {
	o      ReporterOptions
	client *http.Client
	log    *slog.Logger

	mu  sync.Mutex
	cur *window

	pending chan *api.Report
	dropped atomic.Int64 // windows or callee entries dropped
	sent    atomic.Int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	lastCPU time.Duration
	lastAt  time.Time
}

// ReporterOptions configure a Reporter.
type ReporterOptions struct {
	Mixer string // telemetry-mixer: host:port, or a URL such as https://host:port
	// Token is the credential sent to the control plane (default:
	// $SEXTANT_TOKEN): the service's data-plane token.
	Token    string
	Service  string
	Instance string
	Zone     string
	Cluster  string
	// Window is the reporting window (default 1 s).
	Window time.Duration
	// MaxCallees bounds the callee instances tracked per window (default 1000).
	MaxCallees int
	// MaxPending bounds the windows waiting to be sent (default 10).
	MaxPending int
	// Utilization returns the share of capacity in use over the last window;
	// nil uses the gate's busy time over its concurrency when a Gate bounds
	// concurrency, else the process's CPU time over GOMAXPROCS.
	Utilization func(window time.Duration) float64
	Logger      *slog.Logger
	// Now is the reporter's clock (default time.Now); a simulation that
	// closes windows itself with Flush passes its own.
	Now func() time.Time
	// HTTPClient carries the TLS configuration (nil: the default client).
	HTTPClient *http.Client
}

type window struct {
	start     time.Time
	served    int64
	shed      int64
	byPrio    map[int32]int64
	byLevel   map[int32]int64
	timedOut  int64 // served after the caller's deadline
	queue     histogram
	queueSum  time.Duration
	busy      time.Duration
	inflight  int64
	capacity  int
	calls     map[calleeKey]*callStats
	denials   map[denialKey]int64
	overflown int64
}

type calleeKey struct{ service, instance string }
type denialKey struct{ caller, rule string }

type callStats struct {
	requests, errors, timeouts int64
	latencySum                 time.Duration
	latency                    histogram
}

// NewReporter makes a Reporter; Start sends.
func NewReporter(o ReporterOptions) *Reporter {
	if o.Window <= 0 {
		o.Window = time.Second
	}
	o.Token = tokenOf(o.Token)
	if o.MaxCallees <= 0 {
		o.MaxCallees = 1000
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Reporter{o: o, client: httpClient(o.HTTPClient, 5*time.Second), log: o.Logger,
		pending: make(chan *api.Report, o.MaxPending)}
	r.cur = r.newWindow(o.Now())
	return r
}

func (r *Reporter) newWindow(now time.Time) *window {
	return &window{start: now, byPrio: map[int32]int64{}, byLevel: map[int32]int64{}, calls: map[calleeKey]*callStats{}, denials: map[denialKey]int64{}}
}

// Start closes a window every Window and sends it in the background.
func (r *Reporter) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(2)
	go r.tick(ctx)
	go r.send(ctx)
}

// Close stops reporting (what is not sent yet is dropped).
func (r *Reporter) Close() {
	if r.cancel != nil {
		r.cancel()
		r.wg.Wait()
	}
}

// Dropped is how many windows and callee entries the reporter dropped.
func (r *Reporter) Dropped() int64 { return r.dropped.Load() }

// Sent is how many windows the mixer accepted.
func (r *Reporter) Sent() int64 { return r.sent.Load() }

// RecordCall records one call to an instance of a callee. A call that timed
// out counts as a timeout only; errors are the other failures, so that
// errors + timeouts is the number of failed calls.
func (r *Reporter) RecordCall(service, instance string, latency time.Duration, failed, timedOut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := calleeKey{service, instance}
	c := r.cur.calls[k]
	if c == nil {
		if len(r.cur.calls) >= r.o.MaxCallees {
			r.cur.overflown++
			return
		}
		c = &callStats{}
		r.cur.calls[k] = c
	}
	c.requests++
	switch {
	case timedOut:
		c.timeouts++
	case failed:
		c.errors++
	}
	c.latencySum += latency
	c.latency.add(latency)
}

// RecordServed records one request this service served, for servers that
// admit requests without a Gate: it arrived with priority p, waited queued
// before its handler ran and kept the handler busy for busy, with inflight
// requests in progress when it started.
func (r *Reporter) RecordServed(p Priority, queued, busy time.Duration, inflight int64) {
	r.arrived(p)
	r.started(queued, inflight)
	r.finished(busy)
}

func (r *Reporter) arrived(p Priority) {
	r.mu.Lock()
	r.cur.byPrio[p.Business]++
	r.cur.byLevel[p.Level()]++
	r.mu.Unlock()
}

func (r *Reporter) clientTimeout() {
	r.mu.Lock()
	r.cur.timedOut++
	r.mu.Unlock()
}

func (r *Reporter) shed() {
	r.mu.Lock()
	r.cur.shed++
	r.mu.Unlock()
}

func (r *Reporter) started(queued time.Duration, inflight int64) {
	r.mu.Lock()
	r.cur.served++
	r.cur.queue.add(queued)
	r.cur.queueSum += queued
	r.cur.inflight = max(r.cur.inflight, inflight)
	r.mu.Unlock()
}

func (r *Reporter) finished(busy time.Duration) {
	r.mu.Lock()
	r.cur.busy += busy
	r.mu.Unlock()
}

func (r *Reporter) dryRunDenial(caller, rule string) {
	r.mu.Lock()
	r.cur.denials[denialKey{caller, rule}]++
	r.mu.Unlock()
}

// setCapacity lets a Gate tell the reporter its concurrency bound.
func (r *Reporter) setCapacity(n int) {
	r.mu.Lock()
	r.cur.capacity = n
	r.mu.Unlock()
}

func (r *Reporter) tick(ctx context.Context) {
	defer r.wg.Done()
	t := time.NewTicker(r.o.Window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if rep := r.Flush(r.o.Now()); rep != nil {
				r.enqueue(rep)
			}
		}
	}
}

// Flush closes the current window at now and returns its report, nil when
// nothing happened in it. Start calls it every Window; a caller that sends
// reports its own way (or a simulation in its own time) calls it instead.
func (r *Reporter) Flush(now time.Time) *api.Report {
	r.mu.Lock()
	w := r.cur
	r.cur = r.newWindow(now)
	r.cur.capacity = w.capacity
	r.mu.Unlock()
	if w.served == 0 && w.shed == 0 && len(w.byPrio) == 0 && len(w.calls) == 0 && len(w.denials) == 0 {
		return nil
	}
	return r.build(w, now)
}

// enqueue keeps at most MaxPending windows, dropping the oldest.
func (r *Reporter) enqueue(rep *api.Report) {
	for {
		select {
		case r.pending <- rep:
			return
		default:
		}
		select {
		case <-r.pending:
			r.dropped.Add(1)
		default:
		}
	}
}

func (r *Reporter) send(ctx context.Context) {
	defer r.wg.Done()
	failures := 0
	for {
		var rep *api.Report
		select {
		case <-ctx.Done():
			return
		case rep = <-r.pending:
		}
		if err := r.post(ctx, rep); err != nil {
			failures++
			if failures == 1 || failures%60 == 0 {
				r.log.Warn("telemetry-mixer unreachable; dropping telemetry windows", "err", err, "failures", failures)
			}
			r.dropped.Add(1)
			continue
		}
		failures = 0
		r.sent.Add(1)
	}
}

func (r *Reporter) post(ctx context.Context, rep *api.Report) error {
	body, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL(r.o.Mixer)+"/v1/telemetry", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	authorize(req, r.o.Token)
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("mixer answered %d", resp.StatusCode)
	}
	return nil
}

// build turns a closed window into a report.
func (r *Reporter) build(w *window, now time.Time) *api.Report {
	span := now.Sub(w.start)
	rep := &api.Report{
		Reporter:    &api.Reporter{Service: r.o.Service, Instance: r.o.Instance, Zone: r.o.Zone, Cluster: r.o.Cluster},
		WindowMs:    max(span.Milliseconds(), 100),
		TimestampMs: now.UnixMilli(),
	}
	if w.served > 0 || w.shed > 0 || len(w.byPrio) > 0 {
		s := &api.ServerStats{Requests: w.served, Inflight: w.inflight, RequestsByPriority: w.byPrio, RequestsByLevel: w.byLevel, ClientTimeouts: w.timedOut,
			QueueTimeMsP99: w.queue.quantile(0.99)}
		if w.served > 0 {
			s.QueueTimeMsAvg = ms(w.queueSum) / float64(w.served)
		}
		s.CPUUtil = r.utilization(w, span, now)
		rep.Server = s
	}
	for k, c := range w.calls {
		rep.Calls = append(rep.Calls, api.Call{
			CalleeService: k.service, CalleeInstance: k.instance, Requests: c.requests, Errors: c.errors, Timeouts: c.timeouts,
			LatencyMsAvg: ms(c.latencySum) / float64(c.requests), LatencyMsP99: c.latency.quantile(0.99),
		})
	}
	for k, n := range w.denials {
		rep.DryRunDenials = append(rep.DryRunDenials, api.DryRunDenial{
			CalleeService: r.o.Service, CallerService: k.caller, Rule: k.rule, Count: n})
	}
	if w.overflown > 0 {
		r.dropped.Add(w.overflown)
	}
	return rep
}

func (r *Reporter) utilization(w *window, span time.Duration, now time.Time) float64 {
	var u float64
	switch {
	case r.o.Utilization != nil:
		u = r.o.Utilization(span)
	case w.capacity > 0:
		u = float64(w.busy) / (float64(span) * float64(w.capacity))
	default:
		cpu := processCPU()
		if !r.lastAt.IsZero() {
			u = float64(cpu-r.lastCPU) / (float64(now.Sub(r.lastAt)) * float64(runtime.GOMAXPROCS(0)))
		}
		r.lastCPU, r.lastAt = cpu, now
	}
	if math.IsNaN(u) || u < 0 {
		return 0
	}
	return math.Min(u, 1)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// histogram counts durations in log buckets (about 12 % wide) from 10 µs to
// about 100 s, for p99s in a fixed, small amount of memory.
type histogram struct {
	counts [128]uint32
	n      uint32
}

const histBase = 10 * time.Microsecond

func bucketOf(d time.Duration) int {
	if d <= histBase {
		return 0
	}
	b := int(math.Log(float64(d)/float64(histBase)) / math.Log(1.12))
	return min(b, 127)
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
}

// quantile returns the upper bound of the bucket holding quantile q, in ms.
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint32(math.Ceil(q * float64(h.n)))
	var seen uint32
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return ms(time.Duration(float64(histBase) * math.Pow(1.12, float64(b+1))))
		}
	}
	return 0
}
