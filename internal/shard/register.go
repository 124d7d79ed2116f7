package shard

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// Registration keeps one shard registered in etcd under a lease, and
// registers it again when the lease is lost (etcd away longer than the TTL).
type Registration struct {
	cli        *clientv3.Client
	key        string
	value      string
	ttl        int
	log        *slog.Logger
	registered atomic.Bool

	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	sess   *concurrency.Session
}

// Register starts keeping s registered under prefix with a lease of ttl.
// It returns at once; Registered tells when the key is in etcd.
func Register(cli *clientv3.Client, prefix string, s Shard, ttl time.Duration, log *slog.Logger) (*Registration, error) {
	if err := resolveAddr(s.Addr); err != nil {
		return nil, fmt.Errorf("shard address %q: %w", s.Addr, err)
	}
	value, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registration{
		cli: cli, key: api.Keys{Prefix: prefix}.Shard(s.ID), value: string(value),
		ttl: max(1, int(ttl.Seconds())), log: log.With("shard", s.ID),
		cancel: cancel, done: make(chan struct{}),
	}
	go r.run(ctx)
	return r, nil
}

// Registered tells whether the shard's key is in etcd under a live lease.
func (r *Registration) Registered() bool { return r.registered.Load() }

func (r *Registration) run(ctx context.Context) {
	defer close(r.done)
	policy := backoff.Policy{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ctx.Err() == nil; {
		sess, err := r.register(ctx)
		if err != nil {
			r.log.Warn("shard registration failed; retrying", "err", err, "attempt", attempt)
			policy.Sleep(ctx, attempt)
			attempt++
			continue
		}
		attempt = 1
		r.registered.Store(true)
		r.log.Info("shard registered", "key", r.key, "lease", sess.Lease())
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			r.registered.Store(false)
			r.log.Warn("shard lease lost; registering again")
		}
	}
}

func (r *Registration) register(ctx context.Context) (*concurrency.Session, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The lease is granted here, under a timeout, and handed to the session:
	// the session's own context must outlive Close, which revokes with it.
	lease, err := r.cli.Grant(rctx, int64(r.ttl))
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(r.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(r.ttl))
	if err != nil {
		return nil, err
	}
	if _, err := r.cli.Put(rctx, r.key, r.value, clientv3.WithLease(lease.ID)); err != nil {
		_ = sess.Close()
		return nil, err
	}
	r.mu.Lock()
	r.sess = sess
	r.mu.Unlock()
	return sess, nil
}

// Close deregisters the shard: its lease is revoked, so its services move to
// the other shards at once rather than after the TTL.
func (r *Registration) Close() {
	r.cancel()
	<-r.done
	r.registered.Store(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sess != nil {
		// Session.Close revokes the lease with a timeout of the TTL.
		_ = r.sess.Close()
	}
}
