package mixer

import (
	"context"
	"errors"
	"log/slog"
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

// Sink takes accepted reports. Offer takes all of them or none.
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

// Forwarder queues records, bounded, and sends them in one batch per shard
// per flush to the shard that owns each record's service.
//
// Retries are done here rather than with Kitex's retry policy because the
// owner of a record may change between attempts (a shard left): every retry
// routes again.
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
	mu      sync.Mutex
	pending []record
	busy    map[string]int // shard address -> calls in flight
	sends   sync.WaitGroup
}

var _ Sink = (*Forwarder)(nil)

type record struct {
	key       string // the service whose owner receives the record
	server    *aggregator.ServerRecord
	edge      *aggregator.CallEdge
	denial    *aggregator.DryRunDenial
	firstTry  time.Time
	notBefore time.Time
	attempts  int
}

// NewForwarder sends through client to the shards router names.
func NewForwarder(cfg ForwardConfig, mixerID string, router Router, client aggregatorsvc.Client, m *metrics, log *slog.Logger) *Forwarder {
	return &Forwarder{
		cfg: cfg, mixerID: mixerID, router: router, client: client, metrics: m, log: log,
		retry: backoff.Policy{Base: cfg.RetryBase, Max: cfg.RetryMax},
		kick:  make(chan struct{}, 1),
		busy:  map[string]int{},
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
	recs := make([]record, 0, n)
	for i := range reports {
		recs = appendRecords(recs, &reports[i], now)
	}
	f.mu.Lock()
	f.pending = append(f.pending, recs...)
	full := len(f.pending) >= f.cfg.MaxBatchRecords
	f.mu.Unlock()
	if full {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// appendRecords splits a report into what each calculator shard receives.
func appendRecords(recs []record, r *api.Report, now time.Time) []record {
	reportbatch.Split(r, func(rec reportbatch.Record) {
		recs = append(recs, record{key: rec.Key, firstTry: now, server: rec.Server, edge: rec.Edge, denial: rec.Denial})
	})
	return recs
}

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

type batch struct {
	shard   shard.Shard
	records []record
}

// flush sends what is due to every shard that has a call slot free; the rest
// waits for the next flush.
func (f *Forwarder) flush(now time.Time) {
	f.mu.Lock()
	items := f.pending
	f.pending = nil
	inflight := make(map[string]int, len(f.busy))
	for addr, n := range f.busy {
		inflight[addr] = n
	}
	f.mu.Unlock()
	if len(items) == 0 {
		return
	}

	view := f.router.View()
	owners := map[string]shard.Shard{}
	batches := map[string][]*batch{}
	keep := items[:0] // reuses items: keep never gets ahead of the loop
	for _, r := range items {
		if r.notBefore.After(now) {
			keep = append(keep, r)
			continue
		}
		owner, ok := owners[r.key]
		if !ok {
			if owner, ok = view.Owner(r.key); !ok {
				if f.scheduleRetry(&r, now, "no_shard") {
					keep = append(keep, r)
				}
				continue
			}
			owners[r.key] = owner
		}
		bs := batches[owner.Addr]
		if len(bs) == 0 || len(bs[len(bs)-1].records) >= f.cfg.MaxBatchRecords {
			if inflight[owner.Addr] >= f.cfg.MaxInflightPerShard {
				keep = append(keep, r)
				continue
			}
			inflight[owner.Addr]++
			bs = append(bs, &batch{shard: owner})
			batches[owner.Addr] = bs
		}
		b := bs[len(bs)-1]
		b.records = append(b.records, r)
	}

	f.mu.Lock()
	f.pending = append(keep, f.pending...)
	for addr, bs := range batches {
		f.busy[addr] += len(bs)
	}
	f.mu.Unlock()
	for _, bs := range batches {
		for _, b := range bs {
			f.sends.Add(1)
			go f.send(b)
		}
	}
}

func (f *Forwarder) send(b *batch) {
	defer f.sends.Done()
	req := &aggregator.ReportBatch{MixerId: f.mixerID, BatchId: f.batchID.Add(1)}
	for i := range b.records {
		r := &b.records[i]
		switch {
		case r.server != nil:
			req.Servers = append(req.Servers, r.server)
		case r.edge != nil:
			req.Edges = append(req.Edges, r.edge)
		default:
			req.Denials = append(req.Denials, r.denial)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.RPCTimeout)
	start := time.Now()
	resp, err := f.client.Ingest(ctx, req, callopt.WithHostPort(b.shard.Addr))
	cancel()
	f.metrics.forwardSeconds.Observe(time.Since(start).Seconds())

	var retry []record
	var rejected *aggregator.IngestError
	switch {
	case err == nil:
		f.metrics.forwarded.WithLabelValues("server").Add(float64(len(req.Servers)))
		f.metrics.forwarded.WithLabelValues("edge").Add(float64(len(req.Edges)))
		f.metrics.forwarded.WithLabelValues("denial").Add(float64(len(req.Denials)))
		if resp.RecordsRefused > 0 {
			f.metrics.dropped.WithLabelValues("refused_by_calculator").Add(float64(resp.RecordsRefused))
		}
		f.used.Add(-int64(len(b.records)))
	case errors.As(err, &rejected):
		f.log.Warn("calculator rejected a batch", "shard", b.shard.ID, "code", rejected.Code, "message", rejected.Message)
		f.drop(len(b.records), "rejected_by_calculator")
	default:
		f.log.Warn("forwarding to shard failed; will retry", "shard", b.shard.ID, "addr", b.shard.Addr,
			"records", len(b.records), "err", err)
		now := time.Now()
		for i := range b.records {
			if f.scheduleRetry(&b.records[i], now, "retries_exhausted") {
				retry = append(retry, b.records[i])
			}
		}
	}

	f.mu.Lock()
	if f.busy[b.shard.Addr]--; f.busy[b.shard.Addr] <= 0 {
		delete(f.busy, b.shard.Addr)
	}
	f.pending = append(f.pending, retry...)
	f.mu.Unlock()
}

// scheduleRetry sets when r is tried again, or drops it when it has been
// retried for RetryFor already; it reports whether r is to be retried.
func (f *Forwarder) scheduleRetry(r *record, now time.Time, dropReason string) bool {
	if now.Sub(r.firstTry) >= f.cfg.RetryFor {
		f.drop(1, dropReason)
		return false
	}
	r.attempts++
	r.notBefore = now.Add(f.retry.Delay(r.attempts))
	f.metrics.retried.Inc()
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
			f.mu.Lock()
			left := len(f.pending)
			f.pending = nil
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
