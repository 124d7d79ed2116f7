package core

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// liveness keeps the instances this replica registered alive in memory, as
// Polaris's health checks do: a heartbeat moves a deadline and writes
// nothing to etcd. etcd is written when an instance registers, deregisters
// or misses its deadline (then this replica deletes its key), so its write
// load does not grow with the heartbeat rate.
//
// Every key this replica writes is under one lease, its etcd session's, kept
// alive by one stream whatever the number of instances. When the replica
// dies, its session lease expires and its instances go with it, unless they
// heartbeat another replica first, which adopts them (writes their key again
// under its own lease). When the session is lost (etcd away longer than its
// TTL, so etcd dropped the keys), a new one is made and every instance still
// alive is written again.
type liveness struct {
	etcd       *clientv3.Client
	sessionTTL time.Duration
	log        *slog.Logger
	now        func() time.Time

	making  sync.Mutex // held while a session is made
	mu      sync.Mutex
	session *concurrency.Session
	alive   map[string]*liveInstance // by etcd key
	// renewing: the session was lost and not every instance is written
	// again under the new one yet.
	renewing bool
}

type liveInstance struct {
	value    string // the stored registration
	ttl      time.Duration
	deadline time.Time
}

// errNotAlive: the instance is not kept alive by this replica.
var errNotAlive = errors.New("not kept alive here")

func newLiveness(cli *clientv3.Client, sessionTTL time.Duration, log *slog.Logger) *liveness {
	return &liveness{etcd: cli, sessionTTL: sessionTTL, log: log, now: time.Now, alive: map[string]*liveInstance{}}
}

// lease is the current session's lease, making a session when there is
// none or the last one ended. No lock is held across etcd calls: while etcd
// is away, heartbeats are answered from memory and do not wait on it.
func (l *liveness) lease(ctx context.Context) (clientv3.LeaseID, error) {
	if s := l.current(); s != nil {
		return s.Lease(), nil
	}
	l.making.Lock() // one session made at a time
	defer l.making.Unlock()
	if s := l.current(); s != nil {
		return s.Lease(), nil
	}
	ttl := max(1, int(l.sessionTTL.Seconds()))
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	g, err := l.etcd.Grant(gctx, int64(ttl))
	if err != nil {
		return 0, err
	}
	// The session's keep-alive lives until Run orphans it, not as long as
	// the request that happened to make it.
	s, err := concurrency.NewSession(l.etcd, concurrency.WithLease(g.ID), concurrency.WithTTL(ttl),
		concurrency.WithContext(context.Background()))
	if err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.session = s
	l.mu.Unlock()
	return s.Lease(), nil
}

// current is the session while it lasts, else nil.
func (l *liveness) current() *concurrency.Session {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.session == nil {
		return nil
	}
	select {
	case <-l.session.Done():
		return nil
	default:
		return l.session
	}
}

// put writes key under the session's lease and keeps it alive for ttl from
// now; the lease is returned.
func (l *liveness) put(ctx context.Context, key, value string, ttl time.Duration) (clientv3.LeaseID, error) {
	lease, err := l.lease(ctx)
	if err != nil {
		return 0, err
	}
	if _, err := l.etcd.Put(ctx, key, value, clientv3.WithLease(lease)); err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.alive[key] = &liveInstance{value: value, ttl: ttl, deadline: l.now().Add(ttl)}
	l.mu.Unlock()
	return lease, nil
}

// heartbeat moves key's deadline ttl ahead; errNotAlive when this replica
// does not keep it (the caller may adopt it).
func (l *liveness) heartbeat(key string) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := l.alive[key]
	if in == nil {
		return 0, errNotAlive
	}
	in.deadline = l.now().Add(in.ttl)
	return in.ttl, nil
}

// forget stops keeping key alive (it is being deregistered) and returns
// what it kept, for keep if the deregistration fails.
func (l *liveness) forget(key string) *liveInstance {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := l.alive[key]
	delete(l.alive, key)
	return in
}

// keep keeps key alive again as it was (a deregistration that failed).
func (l *liveness) keep(key string, in *liveInstance) {
	if in == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.alive[key] == nil {
		l.alive[key] = in
	}
}

// keeps tells whether this replica keeps key alive: it heartbeats here and
// its deadline has not passed.
func (l *liveness) keeps(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := l.alive[key]
	return in != nil && l.now().Before(in.deadline)
}

// Run reaps the instances past their deadline every tick and writes the
// alive ones again when the session was lost, until ctx ends. It leaves the
// session's lease to expire by itself when it stops: a replica that
// restarts within the lease's TTL adopts its instances as they heartbeat.
func (l *liveness) Run(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.mu.Lock()
			if l.session != nil {
				l.session.Orphan()
			}
			l.mu.Unlock()
			return
		case <-t.C:
		}
		l.reap(ctx)
		l.renew(ctx)
	}
}

// reap deletes the keys of the instances past their deadline, if they are
// still under this replica's lease (another replica may have adopted one).
func (l *liveness) reap(ctx context.Context) {
	now := l.now()
	l.mu.Lock()
	var lease clientv3.LeaseID
	if l.session != nil {
		lease = l.session.Lease()
	}
	var dead []string
	for key, in := range l.alive {
		if now.After(in.deadline) {
			dead = append(dead, key)
		}
	}
	l.mu.Unlock()
	for _, key := range dead {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := l.etcd.Txn(cctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).
			Then(clientv3.OpDelete(key)).Commit()
		cancel()
		if err != nil {
			return // etcd away: try again at the next tick
		}
		l.mu.Lock()
		if in := l.alive[key]; in != nil && now.After(in.deadline) {
			delete(l.alive, key)
		}
		l.mu.Unlock()
	}
}

// renew makes a new session after the last one ended and writes every
// instance still alive under its lease.
func (l *liveness) renew(ctx context.Context) {
	l.mu.Lock()
	lost := l.session != nil && l.renewing
	if s := l.session; s != nil {
		select {
		case <-s.Done():
			lost = true
		default:
		}
	}
	l.mu.Unlock()
	if !lost {
		return
	}
	l.mu.Lock()
	l.renewing = true // until every instance is written again
	l.mu.Unlock()
	lease, err := l.lease(ctx)
	if err != nil {
		return // etcd away: try again at the next tick
	}
	l.mu.Lock()
	alive := make(map[string]string, len(l.alive))
	for key, in := range l.alive {
		alive[key] = in.value
	}
	l.mu.Unlock()
	for key, value := range alive {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := l.etcd.Put(cctx, key, value, clientv3.WithLease(lease))
		cancel()
		if err != nil {
			return // write them all again at the next tick
		}
	}
	l.mu.Lock()
	l.renewing = false
	l.mu.Unlock()
	l.log.Info("etcd session renewed; instances written again", "instances", len(alive))
}
