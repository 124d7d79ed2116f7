package mixer

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/client/callopt"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// Sink takes accepted reports. Offer takes all of them or none, and keeps
// nothing of them once it returns: their strings may point into a request
// buffer that is reused.
type Sink interface {
	Offer(reports []api.Report) error
}

var (
	// ErrQueueFull: the reports do not fit the queue now; the client should retry later.
	ErrQueueFull = errors.New("forwarding queue is full")
	// ErrTooManyRecords: the reports would not fit even an empty queue.
	ErrTooManyRecords = errors.New("request holds more records than the forwarding queue")
)

// Router tells which calculator shard owns a service.
type Router interface {
	View() *shard.View
}

// Forwarder routes each accepted report once, when it is offered, into the
// batch being filled for each shard that owns some of its records, already
// encoded (reportbatch.AppendPart); a flush sends the batches that are full
// or due, without looking at their records again.
//
// Retries are done here rather than with Kitex's retry policy because the
// owner of a record may change between attempts (a shard left): a batch that
// failed is routed again, record by record, when it is retried.
type Forwarder struct {
	cfg     ForwardConfig
	mixerID string
	router  Router
	client  aggregatorsvc.Client
	retry   backoff.Policy
	metrics *metrics
	log     *slog.Logger

	used    atomic.Int64 // records queued, in flight, or waiting to retry
	batchID atomic.Int64
	kick    chan struct{}
	sends   sync.WaitGroup

	mu       sync.Mutex
	view     *shard.View       // the view owners was filled from
	owners   map[string]int32  // service -> index in view.Shards, of this view
	queues   map[string]*queue // by shard address
	retries  []*batch          // failed, waiting for notBefore
	route    reportbatch.Owners
	seen     []int32
	rerouted map[int32]*batch // by shard index, while a batch is routed again
	free     []*batch         // sent batches, their buffers kept for reuse
}

var _ Sink = (*Forwarder)(nil)

// queue is what is held for one shard.
type queue struct {
	shard    shard.Shard
	open     *batch   // being filled
	ready    []*batch // full, or retries routed here: sent first
	inflight int
}

// batch is what one Ingest call carries: encoded parts and their accounting.
type batch struct {
	parts     []byte
	count     int32
	records   reportbatch.Counts
	firstTry  time.Time
	notBefore time.Time
	attempts  int
}

// NewForwarder sends through client to the shards router names.
func NewForwarder(cfg ForwardConfig, mixerID string, router Router, client aggregatorsvc.Client, m *metrics, log *slog.Logger) *Forwarder {
	return &Forwarder{
		cfg: cfg, mixerID: mixerID, router: router, client: client, metrics: m, log: log,
		retry:  backoff.Policy{Base: cfg.RetryBase, Max: cfg.RetryMax},
		kick:   make(chan struct{}, 1),
		queues: map[string]*queue{},
	}
}

// Queued is how many records are held: queued, in flight, or waiting to retry.
func (f *Forwarder) Queued() int64 { return f.used.Load() }

// Offer implements Sink.
func (f *Forwarder) Offer(reports []api.Report) error {
	n := 0
	for i := range reports {
		n += reports[i].Records()
	}
	if n > f.cfg.QueueRecords {
		return ErrTooManyRecords
	}
	for {
		used := f.used.Load()
		if used+int64(n) > int64(f.cfg.QueueRecords) {
			return ErrQueueFull
		}
		if f.used.CompareAndSwap(used, used+int64(n)) {
			break
		}
	}
	now := time.Now()
	view := f.router.View()
	f.mu.Lock()
	full := false
	for i := range reports {
		full = f.place(&reports[i], view, now, nil) || full
	}
	f.mu.Unlock()
	if full {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// noOwner marks a record no shard owns (no shard registered).
const noOwner = -1

// place routes r into the open batch of each shard that owns some of its
// records; from, when set, is the batch r is retried from: its records go
// into batches of their own, ready to send, that keep its retry state. It
// tells whether a batch filled up. Records no shard owns are scheduled for
// retry, or dropped once retried for long enough. f.mu is held.
func (f *Forwarder) place(r *api.Report, view *shard.View, now time.Time, from *batch) bool {
	f.route = f.route.Route(r, func(service string) int32 { return f.owner(view, service) })
	full := false
	f.seen = f.seen[:0]
	for _, o := range f.route {
		if o == noOwner || slices.Contains(f.seen, o) {
			continue
		}
		f.seen = append(f.seen, o)
		sh := view.Shards[o]
		q := f.queues[sh.Addr]
		if q == nil {
			q = &queue{shard: sh}
			f.queues[sh.Addr] = q
		}
		b := q.open
		if from != nil {
			// A batch routed again makes one batch per shard, not one per report.
			if b = f.rerouted[o]; b == nil {
				b = f.newBatch(from)
				f.rerouted[o] = b
				q.ready = append(q.ready, b)
			}
		} else if b == nil {
			b = f.newBatch(&batch{firstTry: now})
			q.open = b
		}
		f.appendPart(b, r, o)
		if from == nil && b.records.Records() >= f.cfg.MaxBatchRecords {
			q.ready = append(q.ready, b)
			q.open = nil
			full = true
		}
	}
	if slices.Contains(f.route, noOwner) {
		if from == nil {
			from = &batch{firstTry: now}
		}
		b := f.newBatch(from)
		f.appendPart(b, r, noOwner)
		if f.scheduleRetry(b, now, "no_shard") {
			f.retries = append(f.retries, b)
		}
	}
	return full
}

func (f *Forwarder) appendPart(b *batch, r *api.Report, owner int32) {
	var c reportbatch.Counts
	if b.parts, c = reportbatch.AppendPart(b.parts, r, f.route, owner); c.Records() > 0 {
		b.count++
		b.records = b.records.Add(c)
	}
}

// owner is the index in view.Shards of the shard that owns service, or
// noOwner. Owners are remembered per view: a service's owner is computed
// once per view change.
func (f *Forwarder) owner(view *shard.View, service string) int32 {
	if f.view != view {
		f.view, f.owners = view, make(map[string]int32, len(f.owners))
	}
	if o, ok := f.owners[service]; ok {
		return o
	}
	o := int32(noOwner)
	if sh, ok := view.Owner(service); ok {
		for i := range view.Shards {
			if view.Shards[i].ID == sh.ID {
				o = int32(i)
			}
		}
	}
	if len(f.owners) >= maxOwnersKept {
		clear(f.owners)
	}
	f.owners[string([]byte(service))] = o // the name may point into a request buffer
	return o
}

// maxOwnersKept bounds the owners remembered between view changes.
const maxOwnersKept = 100_000

// newBatch is an empty batch with the retry state of like.
func (f *Forwarder) newBatch(like *batch) *batch {
	b := &batch{}
	if n := len(f.free); n > 0 {
		b, f.free = f.free[n-1], f.free[:n-1]
	}
	*b = batch{parts: b.parts[:0], firstTry: like.firstTry, attempts: like.attempts}
	return b
}

// release keeps a sent batch's buffer for another, unless it is outsized.
func (f *Forwarder) release(b *batch) {
	if cap(b.parts) <= maxKeptBatchBytes && len(f.free) < maxFreeBatches {
		f.free = append(f.free, b)
	}
}

const (
	maxKeptBatchBytes = 4 << 20
	maxFreeBatches    = 16
)

// Run flushes until ctx ends.
func (f *Forwarder) Run(ctx context.Context) {
	t := time.NewTicker(f.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.kick:
		}
		f.flush(time.Now())
	}
}

type send struct {
	shard shard.Shard
	b     *batch
}

// flush routes the retries that are due again, and sends what is held for
// every shard that has a call slot free: the full batches first, then the
// one being filled. The rest waits for the next flush.
func (f *Forwarder) flush(now time.Time) {
	view := f.router.View()
	var sends []send
	f.mu.Lock()
	// Batches held for a shard that left are routed again, as retries are.
	for addr, q := range f.queues {
		if _, ok := view.ShardAt(addr); ok {
			continue
		}
		if q.open != nil {
			q.ready = append(q.ready, q.open)
			q.open = nil
		}
		for _, b := range q.ready {
			f.reroute(b, view, now)
		}
		q.ready = nil
		if q.inflight == 0 {
			delete(f.queues, addr)
		}
	}
	due := f.retries[:0]
	var later []*batch
	for _, b := range f.retries {
		if b.notBefore.After(now) {
			later = append(later, b)
			continue
		}
		due = append(due, b)
	}
	f.retries = later
	for _, b := range due {
		f.reroute(b, view, now)
	}
	for _, q := range f.queues {
		if _, ok := view.ShardAt(q.shard.Addr); !ok {
			continue
		}
		for q.inflight < f.cfg.MaxInflightPerShard {
			var b *batch
			switch {
			case len(q.ready) > 0:
				b, q.ready = q.ready[0], q.ready[1:]
			case q.open != nil && q.open.count > 0:
				b, q.open = q.open, nil
			}
			if b == nil {
				break
			}
			q.inflight++
			sends = append(sends, send{shard: q.shard, b: b})
		}
	}
	f.mu.Unlock()
	for _, s := range sends {
		f.sends.Add(1)
		go f.send(s.shard, s.b)
	}
}

// reroute routes a batch's records again, to the shards that own them now,
// keeping its retry state. f.mu is held.
func (f *Forwarder) reroute(b *batch, view *shard.View, now time.Time) {
	var rd reportbatch.Reader
	rd.Reset(b.parts, int(b.count))
	if f.rerouted == nil {
		f.rerouted = map[int32]*batch{}
	}
	clear(f.rerouted)
	for {
		r, err := rd.Next()
		if err != nil {
			// Our own encoding: cannot happen; counted rather than lost silently.
			f.log.Error("re-reading a held batch failed", "err", err)
			f.drop(b.records.Records(), "unreadable")
			return
		}
		if r == nil {
			break
		}
		f.place(r, view, now, b)
	}
	f.release(b)
}

func (f *Forwarder) send(sh shard.Shard, b *batch) {
	defer f.sends.Done()
	req := &aggregator.ReportBatch{MixerId: f.mixerID, BatchId: f.batchID.Add(1), Parts: b.parts, PartCount: b.count}
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.RPCTimeout)
	start := time.Now()
	resp, err := f.client.Ingest(ctx, req, callopt.WithHostPort(sh.Addr))
	cancel()
	f.metrics.forwardSeconds.Observe(time.Since(start).Seconds())

	n := b.records
	var rejected *aggregator.IngestError
	retry := false
	switch {
	case err == nil:
		f.metrics.forwardedServer.Add(float64(n.Servers))
		f.metrics.forwardedEdge.Add(float64(n.Edges))
		f.metrics.forwardedDenial.Add(float64(n.Denials))
		f.metrics.forwardedUnit.Add(float64(n.Units))
		if resp.RecordsRefused > 0 {
			f.metrics.dropped.WithLabelValues("refused_by_calculator").Add(float64(resp.RecordsRefused))
		}
		f.used.Add(-int64(n.Records()))
	case errors.As(err, &rejected):
		f.log.Warn("calculator rejected a batch", "shard", sh.ID, "code", rejected.Code, "message", rejected.Message)
		f.drop(n.Records(), "rejected_by_calculator")
	default:
		f.log.Warn("forwarding to shard failed; will retry", "shard", sh.ID, "addr", sh.Addr,
			"records", n.Records(), "err", err)
		retry = true
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if q := f.queues[sh.Addr]; q != nil {
		q.inflight--
	}
	if retry && f.scheduleRetry(b, time.Now(), "retries_exhausted") {
		f.retries = append(f.retries, b)
		return
	}
	f.release(b)
}

// scheduleRetry sets when b is tried again, or drops it when it has been
// retried for RetryFor already; it reports whether b is to be retried.
func (f *Forwarder) scheduleRetry(b *batch, now time.Time, dropReason string) bool {
	n := b.records.Records()
	if now.Sub(b.firstTry) >= f.cfg.RetryFor {
		f.drop(n, dropReason)
		return false
	}
	b.attempts++
	b.notBefore = now.Add(f.retry.Delay(b.attempts))
	f.metrics.retried.Add(float64(n))
	return true
}

func (f *Forwarder) drop(n int, reason string) {
	f.used.Add(-int64(n))
	f.metrics.dropped.WithLabelValues(reason).Add(float64(n))
}

// Drain keeps flushing until nothing is held or ctx ends, then drops and
// counts what is left.
func (f *Forwarder) Drain(ctx context.Context) {
	t := time.NewTicker(f.cfg.FlushInterval / 2)
	defer t.Stop()
	for f.used.Load() > 0 {
		select {
		case <-ctx.Done():
			f.sends.Wait()
			left := int(f.used.Load())
			f.mu.Lock()
			f.queues, f.retries = map[string]*queue{}, nil
			f.mu.Unlock()
			if left > 0 {
				f.log.Warn("mixer stopped with records undelivered", "records", left)
				f.drop(left, "shutdown")
			}
			return
		case now := <-t.C:
			f.flush(now)
		}
	}
	f.sends.Wait()
}
