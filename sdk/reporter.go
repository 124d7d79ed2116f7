package sdk

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// Reporter aggregates what a service sees, per window, and sends it to the
// telemetry-mixer: its own serving side (requests by priority, queueing
// time, utilization) and its calls to each callee instance (requests,
// errors, timeouts, latency). Memory is bounded: at most MaxCallees callee
// instances a window, at most MaxPending windows waiting to be sent; beyond
// that it drops its own data, oldest first, never the service's requests.
//
// A window the mixer refuses for now (429, 503 and other 5xx, no answer)
// is kept and sent again, oldest first, with backoff; one it refuses for
// good (another 4xx) is dropped, except that a report too large for the
// mixer is split and one refused for its dry-run denials is sent without
// them. Every window dropped is counted by reason (Stats).
type Reporter struct {
	o      ReporterOptions
	client *http.Client
	log    *slog.Logger
	retry  backoff.Policy

	mu        sync.Mutex
	cur       *window
	listeners map[*TLSListener]ConnStats // counted (CountConnections), with their counts at the last window

	qmu      sync.Mutex
	queue    []*pendingReport // oldest first, at most MaxPending
	stats    ReporterStats    // under qmu; Pending is len(queue)
	wake     chan struct{}
	failures int // sends failed in a row; used by the sender only

	sent    atomic.Int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	lastCPU time.Duration
	lastAt  time.Time
}

// pendingReport is a report waiting to be sent; under Reporter.qmu.
type pendingReport struct {
	rep      *api.Report
	inFlight bool // the sender is posting it
	evicted  bool // dropped from the queue while in flight: counted when its send ends
}

// ReporterStats say what became of the reporter's windows. Every window
// closed with data (Windows) is sent, pending or dropped:
// Windows + Splits = Sent + Pending + the sum of DroppedWindows.
type ReporterStats struct {
	// Windows is how many windows were closed with data to send.
	Windows int64
	// Sent is how many reports the mixer accepted.
	Sent int64
	// Pending is how many reports wait to be sent, the one in flight included.
	Pending int
	// Retries is how many sends were tried again after the mixer refused
	// for now (429, 5xx) or did not answer.
	Retries int64
	// Splits is how many reports too large for the mixer (413) were sent as
	// two, each with half the calls.
	Splits int64
	// DroppedWindows counts the reports dropped, by reason: DropBufferFull,
	// DropRejected, DropUnauthorized, DropClosed.
	DroppedWindows map[string]int64
	// DroppedCallees counts calls not reported because their window already
	// had MaxCallees callee instances (the window itself is kept).
	DroppedCallees int64
	// DroppedDenials counts dry-run denied requests left out of the
	// reports, by reason: DenialUnnamedCaller, DenialInvalidName,
	// DenialOverLimit; and DenialRefusedByMixer, the entries the mixer
	// left out or refused (a mixer with a lower limit, or older).
	DroppedDenials map[string]int64
}

// Why the reporter drops a window (ReporterStats.DroppedWindows).
const (
	DropBufferFull   = "buffer_full"  // MaxPending windows were waiting: the oldest went
	DropRejected     = "rejected"     // the mixer refused it for good (400, 413 that cannot be split, other 4xx)
	DropUnauthorized = "unauthorized" // the mixer refused the credential (401, 403)
	DropClosed       = "closed"       // still waiting when Close gave up
)

// Why the reporter leaves dry-run denials out (ReporterStats.DroppedDenials).
const (
	DenialUnnamedCaller  = "unnamed_caller"   // the request's caller is unknown
	DenialInvalidName    = "invalid_name"     // a caller or rule name the mixer would refuse
	DenialOverLimit      = "over_limit"       // past MaxDenials in a window: the smallest counts go
	DenialRefusedByMixer = "refused_by_mixer" // entries the mixer left out, or a report it refused for them
)

// ReporterOptions configure a Reporter.
type ReporterOptions struct {
	Mixer string // telemetry-mixer: host:port, or a URL such as https://host:port
	// Token is the credential sent to the control plane (default:
	// $SEXTANT_TOKEN): the service's data-plane token.
	Token    string
	Service  string
	Instance string
	// Zone is the process's zone (default: $SEXTANT_ZONE), by which the
	// calculator counts demand for zone-aware routing.
	Zone    string
	Cluster string
	// Window is the reporting window (default 1 s).
	Window time.Duration
	// MaxCallees bounds the callee instances tracked per window (default 1000).
	MaxCallees int
	// MaxPending bounds the windows waiting to be sent, or to be sent
	// again while the mixer refuses them or is away (default 10).
	MaxPending int
	// MaxDenials bounds the dry-run denial entries (caller, rule) of one
	// report; keep it at most the mixer's --max-denials-per-report
	// (default 100, the mixer's default).
	MaxDenials int
	// Retry paces the sends again of a refused window (default: from
	// 200 ms, doubling, up to a quarter of what the buffer holds,
	// MaxPending x Window / 4, at most 10 s: 2.5 s with the defaults, so
	// that once the mixer is back the buffer is sent before it fills; a
	// 429's Retry-After is waited at least).
	Retry backoff.Policy
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
	units     map[UnitCount]int64
	overflown int64
	// identities and conns are the security part (api.SecurityStats):
	// requests by caller identity, connections by how they came.
	identities map[string]int64
	conns      map[string]int64
}

type calleeKey struct{ service, instance string }
type denialKey struct{ caller, rule string }

type callStats struct {
	requests, errors, timeouts int64
	plaintext                  int64
	latencySum                 time.Duration
	latency                    histogram
}

// NewReporter makes a Reporter; Start sends.
func NewReporter(o ReporterOptions) *Reporter {
	if o.Window <= 0 {
		o.Window = time.Second
	}
	o.Token = tokenOf(o.Token)
	o.Zone = zoneOf(o.Zone) // the calculator counts demand by the callers' zone
	if o.MaxCallees <= 0 {
		o.MaxCallees = 1000
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 10
	}
	if o.MaxDenials <= 0 {
		o.MaxDenials = 100
	}
	if o.Retry.Base <= 0 {
		// With 10 s at most, a mixer away 5 s made the reporters wait up
		// to 10 s more before they tried again, and their 10 windows'
		// buffer overflowed meanwhile.
		most := min(10*time.Second, time.Duration(o.MaxPending)*o.Window/4)
		o.Retry = backoff.Policy{Base: min(200*time.Millisecond, most), Max: most}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Reporter{o: o, client: httpClient(o.HTTPClient, 5*time.Second), log: o.Logger, retry: o.Retry,
		wake:  make(chan struct{}, 1),
		stats: ReporterStats{DroppedWindows: map[string]int64{}, DroppedDenials: map[string]int64{}}}
	r.cur = r.newWindow(o.Now())
	return r
}

func (r *Reporter) newWindow(now time.Time) *window {
	return &window{start: now, byPrio: map[int32]int64{}, byLevel: map[int32]int64{}, calls: map[calleeKey]*callStats{}, denials: map[denialKey]int64{}, units: map[UnitCount]int64{}}
}

// Start closes a window every Window and sends it in the background.
func (r *Reporter) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(2)
	go r.tick(ctx)
	go r.send(ctx)
}

// closeWait bounds how long Close tries to send what is pending.
const closeWait = 2 * time.Second

// Close stops reporting: it closes the current window and tries once more,
// for up to 2 s, to send what is pending; what is left is dropped and
// counted (DropClosed).
func (r *Reporter) Close() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
	if rep := r.Flush(r.o.Now()); rep != nil {
		r.enqueue(rep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	for {
		p := r.next()
		if p == nil {
			return
		}
		if ctx.Err() != nil {
			r.settle(p, answer{err: ctx.Err()}, true)
			continue
		}
		r.settle(p, r.post(ctx, p.rep), true)
	}
}

// Dropped is how many windows and callee entries the reporter dropped.
func (r *Reporter) Dropped() int64 {
	st := r.Stats()
	n := st.DroppedCallees
	for _, c := range st.DroppedWindows {
		n += c
	}
	return n
}

// Stats says what became of the reporter's windows so far.
func (r *Reporter) Stats() ReporterStats {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	st := r.stats
	st.Sent = r.sent.Load()
	st.Pending = len(r.queue)
	st.DroppedWindows = maps.Clone(r.stats.DroppedWindows)
	st.DroppedDenials = maps.Clone(r.stats.DroppedDenials)
	return st
}

// Sent is how many windows the mixer accepted.
func (r *Reporter) Sent() int64 { return r.sent.Load() }

// RecordCall records one call to an instance of a callee. A call that timed
// out counts as a timeout only; errors are the other failures, so that
// errors + timeouts is the number of failed calls.
func (r *Reporter) RecordCall(service, instance string, latency time.Duration, failed, timedOut bool) {
	r.RecordCallOver(service, instance, latency, failed, timedOut, false)
}

// RecordCallOver is RecordCall for a client with data-plane encryption:
// plaintext tells that the call went in plaintext to an instance that does
// not advertise mTLS, reported as the call's plaintext count, so that
// operators see who is still plaintext.
func (r *Reporter) RecordCallOver(service, instance string, latency time.Duration, failed, timedOut, plaintext bool) {
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
	if plaintext {
		c.plaintext++
	}
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

// dryRunDenial counts one request a dry-run rule would have denied. A
// caller the mixer would refuse is left out (counted), and so is any new
// (caller, rule) past 10 x MaxDenials in a window: memory stays bounded
// whatever callers claim to be.
func (r *Reporter) dryRunDenial(caller, rule string) {
	reason := ""
	switch {
	case caller == "":
		reason = DenialUnnamedCaller
	case api.Name("caller_service", caller, true) != nil || api.Name("rule", rule, true) != nil:
		reason = DenialInvalidName
	}
	r.mu.Lock()
	k := denialKey{caller, rule}
	if _, ok := r.cur.denials[k]; reason == "" && !ok && len(r.cur.denials) >= 10*r.o.MaxDenials {
		reason = DenialOverLimit
	}
	if reason == "" {
		r.cur.denials[k]++
	}
	r.mu.Unlock()
	if reason != "" {
		r.countDenials(reason, 1)
	}
}

// unitRoute counts one request a unit rule decided; past 10 x MaxDenials
// counters in a window new ones are left out (counted as denials over the
// limit). A nil Reporter counts nothing.
func (r *Reporter) unitRoute(k UnitCount) {
	if r == nil {
		return
	}
	r.mu.Lock()
	_, ok := r.cur.units[k]
	if ok || len(r.cur.units) < 10*r.o.MaxDenials {
		r.cur.units[k]++
		ok = true
	}
	r.mu.Unlock()
	if !ok {
		r.countDenials(DenialOverLimit, 1)
	}
}

func (r *Reporter) countDenials(reason string, n int64) {
	r.qmu.Lock()
	r.stats.DroppedDenials[reason] += n
	r.qmu.Unlock()
}

// identity counts one request of the window by its caller's identity
// (a key of api.IdentityStatKeys).
func (r *Reporter) identity(key string) {
	r.mu.Lock()
	if r.cur.identities == nil {
		r.cur.identities = map[string]int64{}
	}
	r.cur.identities[key]++
	r.mu.Unlock()
}

// CountConnections reports the connections l takes from now on, in each
// window's security part (api.SecurityStats.Connections), so that they
// reach the time series (measurement connections). The adapters do it for
// the listeners they serve on with a Gate that has this Reporter.
func (r *Reporter) CountConnections(l *TLSListener) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.listeners == nil {
		r.listeners = map[*TLSListener]ConnStats{}
	}
	if _, ok := r.listeners[l]; !ok {
		r.listeners[l] = l.Connections()
	}
}

// connections adds what the counted listeners took since the last window
// to w; under r.mu.
func (r *Reporter) connections(w *window) {
	for l, last := range r.listeners {
		now := l.Connections()
		r.listeners[l] = now
		for k, n := range map[string]int64{"tls": now.TLS - last.TLS, "plaintext": now.Plaintext - last.Plaintext,
			"plaintext_refused": now.PlaintextRefused - last.PlaintextRefused, "handshake_failed": now.HandshakeFailed - last.HandshakeFailed} {
			if n > 0 {
				if w.conns == nil {
					w.conns = map[string]int64{}
				}
				w.conns[k] += n
			}
		}
	}
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
	r.connections(w)
	r.mu.Unlock()
	if w.served == 0 && w.shed == 0 && len(w.byPrio) == 0 && len(w.calls) == 0 && len(w.denials) == 0 &&
		len(w.identities) == 0 && len(w.conns) == 0 && len(w.units) == 0 {
		return nil
	}
	return r.build(w, now)
}

// enqueue keeps at most MaxPending windows, dropping the oldest.
func (r *Reporter) enqueue(rep *api.Report) {
	r.qmu.Lock()
	r.stats.Windows++
	if len(r.queue) >= r.o.MaxPending {
		oldest := r.queue[0]
		if oldest.inFlight {
			oldest.evicted = true // counted by the sender: it may yet be accepted
		} else {
			r.stats.DroppedWindows[DropBufferFull]++
		}
		r.queue[0] = nil
		r.queue = r.queue[1:]
	}
	r.queue = append(r.queue, &pendingReport{rep: rep})
	r.qmu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// next is the oldest pending report, marked in flight; nil when none.
func (r *Reporter) next() *pendingReport {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	if len(r.queue) == 0 {
		return nil
	}
	p := r.queue[0]
	p.inFlight = true
	return p
}

func (r *Reporter) send(ctx context.Context) {
	defer r.wg.Done()
	for ctx.Err() == nil {
		p := r.next()
		if p == nil {
			select {
			case <-ctx.Done():
			case <-r.wake:
			}
			continue
		}
		a := r.post(ctx, p.rep)
		if ctx.Err() != nil && a.err != nil {
			r.qmu.Lock()
			p.inFlight = false // Close sends it, or counts it
			if p.evicted {
				r.stats.DroppedWindows[DropBufferFull]++
			}
			r.qmu.Unlock()
			return
		}
		if wait := r.settle(p, a, false); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// answer is what one send of a report came to.
type answer struct {
	status     int // 0: no answer (err)
	err        error
	retryAfter time.Duration
	field      string // the bad field a 400 names
	dropped    int64  // denials the mixer left out of an accepted report
}

// retryable: the mixer may take it later.
func (a answer) retryable() bool {
	return a.status == 0 || a.status == http.StatusTooManyRequests || a.status == http.StatusRequestTimeout || a.status >= 500
}

// settle records what became of p's send and says how long to wait before
// the next one (retrying p). final (Close) retries nothing.
func (r *Reporter) settle(p *pendingReport, a answer, final bool) time.Duration {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	p.inFlight = false
	if a.dropped > 0 {
		r.stats.DroppedDenials[DenialRefusedByMixer] += a.dropped
	}
	if p.evicted { // no longer queued
		if a.status == http.StatusAccepted {
			r.sent.Add(1)
		} else {
			r.stats.DroppedWindows[DropBufferFull]++
		}
		return 0
	}
	// p is queue[0]: only the sender takes the head, and eviction marks it.
	done := func(reason string) {
		r.queue[0] = nil
		r.queue = r.queue[1:]
		if reason != "" {
			r.stats.DroppedWindows[reason]++
		}
	}
	switch {
	case a.status == http.StatusAccepted:
		done("")
		r.sent.Add(1)
		r.failures = 0
		return 0
	case a.retryable() && final:
		done(DropClosed)
		return 0
	case a.retryable():
		r.failures++
		r.stats.Retries++
		if r.failures == 1 || r.failures%60 == 0 {
			r.log.Warn("telemetry-mixer refused or unreachable; keeping the telemetry windows to send again",
				"err", a.error(), "failures", r.failures, "pending", len(r.queue))
		}
		return max(r.retry.Delay(r.failures), min(a.retryAfter, r.retry.Max))
	}
	r.failures = 0
	switch {
	case a.status == http.StatusBadRequest && len(p.rep.DryRunDenials) > 0 && strings.Contains(a.field, "dry_run_denials"):
		// A mixer that refuses a whole report for its denials: the rest
		// goes without them.
		r.stats.DroppedDenials[DenialRefusedByMixer] += int64(len(p.rep.DryRunDenials))
		stripped := *p.rep
		stripped.DryRunDenials = nil
		p.rep = &stripped
		r.log.Warn("telemetry-mixer refused a report's dry-run denials; sending it without them", "field", a.field)
		return 0
	case a.status == http.StatusBadRequest && p.rep.Security != nil && strings.HasPrefix(a.field, "security"):
		// A mixer older than the security part: the rest goes without it.
		stripped := *p.rep
		stripped.Security = nil
		p.rep = &stripped
		r.log.Warn("telemetry-mixer refused a report's security part; sending it without it", "field", a.field)
		return 0
	case a.status == http.StatusRequestEntityTooLarge && len(p.rep.Calls) > 1:
		first, second := *p.rep, *p.rep
		half := len(p.rep.Calls) / 2
		first.Calls, second.Calls = p.rep.Calls[:half:half], p.rep.Calls[half:]
		second.Server, second.DryRunDenials, second.Security = nil, nil, nil
		r.queue[0] = &pendingReport{rep: &first}
		r.queue = slices.Insert(r.queue, 1, &pendingReport{rep: &second})
		r.stats.Splits++
		return 0
	case a.status == http.StatusUnauthorized || a.status == http.StatusForbidden:
		r.log.Warn("telemetry-mixer refused the credential; dropping a telemetry window", "err", a.error())
		done(DropUnauthorized)
	default:
		r.log.Warn("telemetry-mixer refused a telemetry window; dropping it", "err", a.error())
		done(DropRejected)
	}
	return 0
}

func (a answer) error() error {
	if a.err != nil {
		return a.err
	}
	if a.field != "" {
		return fmt.Errorf("mixer answered %d about %s", a.status, a.field)
	}
	return fmt.Errorf("mixer answered %d", a.status)
}

func (r *Reporter) post(ctx context.Context, rep *api.Report) answer {
	body, err := json.Marshal(rep)
	if err != nil {
		return answer{status: http.StatusBadRequest, err: err} // never passes
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL(r.o.Mixer)+"/v1/telemetry", bytes.NewReader(body))
	if err != nil {
		return answer{status: http.StatusBadRequest, err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	// The mixer corrects the timestamps of a data plane whose clock is off.
	req.Header.Set(api.HeaderSentAt, strconv.FormatInt(r.o.Now().UnixMilli(), 10))
	authorize(req, r.o.Token)
	resp, err := r.client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode}
	var out struct {
		DenialsDropped int64 `json:"denials_dropped"`
		Error          struct {
			Field string `json:"field"`
		} `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out)
	a.dropped, a.field = out.DenialsDropped, out.Error.Field
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		a.retryAfter = time.Duration(secs) * time.Second
	}
	return a
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
	if len(w.identities) > 0 || len(w.conns) > 0 {
		rep.Security = &api.SecurityStats{Identities: w.identities, Connections: w.conns}
	}
	for k, c := range w.calls {
		rep.Calls = append(rep.Calls, api.Call{
			CalleeService: k.service, CalleeInstance: k.instance, Requests: c.requests, Errors: c.errors, Timeouts: c.timeouts,
			LatencyMsAvg: ms(c.latencySum) / float64(c.requests), LatencyMsP99: c.latency.quantile(0.99), Plaintext: c.plaintext,
		})
	}
	for k, n := range w.denials {
		rep.DryRunDenials = append(rep.DryRunDenials, api.DryRunDenial{
			CalleeService: r.o.Service, CallerService: k.caller, Rule: k.rule, Count: n})
	}
	if extra := len(rep.DryRunDenials) - r.o.MaxDenials; extra > 0 {
		// The mixer takes MaxDenials: the largest counts go, the rest is counted.
		slices.SortFunc(rep.DryRunDenials, func(a, b api.DryRunDenial) int { return cmp.Compare(b.Count, a.Count) })
		var lost int64
		for _, d := range rep.DryRunDenials[r.o.MaxDenials:] {
			lost += d.Count
		}
		rep.DryRunDenials = rep.DryRunDenials[:r.o.MaxDenials]
		r.countDenials(DenialOverLimit, lost)
	}
	for k, n := range w.units {
		rep.UnitRoutes = append(rep.UnitRoutes, api.UnitRoute{CalleeService: k.Callee, Rule: k.Rule, Unit: k.Unit, Outcome: k.Outcome, Count: n})
	}
	if extra := len(rep.UnitRoutes) - r.o.MaxDenials; extra > 0 {
		// The mixer takes MaxDenials of them too.
		slices.SortFunc(rep.UnitRoutes, func(a, b api.UnitRoute) int { return cmp.Compare(b.Count, a.Count) })
		var lost int64
		for _, d := range rep.UnitRoutes[r.o.MaxDenials:] {
			lost += d.Count
		}
		rep.UnitRoutes = rep.UnitRoutes[:r.o.MaxDenials]
		r.countDenials(DenialOverLimit, lost)
	}
	if w.overflown > 0 {
		r.qmu.Lock()
		r.stats.DroppedCallees += w.overflown
		r.qmu.Unlock()
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
