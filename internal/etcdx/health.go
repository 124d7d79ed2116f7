package etcdx

import (
	"context"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Health probes etcd with a cheap read every interval. A watch does not tell
// when etcd is gone (the client reconnects underneath it), so a service that
// must say "stale" asks here.
type Health struct {
	cli      *clientv3.Client
	key      string
	interval time.Duration
	ok       atomic.Bool
	lastOK   atomic.Int64 // unix ms
}

// NewHealth probes by reading key (a count-only read of one key).
func NewHealth(cli *clientv3.Client, key string, interval time.Duration) *Health {
	return &Health{cli: cli, key: key, interval: interval}
}

// OK tells whether the last probe succeeded.
func (h *Health) OK() bool { return h.ok.Load() }

// LastOK is when a probe last succeeded (zero before any).
func (h *Health) LastOK() time.Time {
	if ms := h.lastOK.Load(); ms > 0 {
		return time.UnixMilli(ms)
	}
	return time.Time{}
}

// Run probes until ctx ends.
func (h *Health) Run(ctx context.Context) {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		h.probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *Health) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, max(h.interval, time.Second))
	defer cancel()
	if _, err := h.cli.Get(pctx, h.key, clientv3.WithCountOnly()); err != nil {
		h.ok.Store(false)
		return
	}
	h.ok.Store(true)
	h.lastOK.Store(time.Now().UnixMilli())
}
