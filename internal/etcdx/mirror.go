package etcdx

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// Event is one change under a mirrored prefix. Key is relative to the prefix.
type Event struct {
	Key     string
	Value   []byte
	Deleted bool
	// ModRevision is the revision of the key's last change (the event's own).
	ModRevision int64
}

// MirrorHandler receives what a Mirror sees. Calls are serialized.
type MirrorHandler interface {
	// Reset replaces everything known with a full listing at revision rev.
	Reset(kvs []Event, rev int64)
	// Apply applies the changes of one watch response.
	Apply(events []Event, rev int64)
}

// Mirror follows one key prefix: a full listing, then one watch resumed from
// the last revision seen after every disconnect, and a fresh listing when that
// revision has been compacted away. While etcd is away the handler keeps what
// it was last given; that is the last good state the services serve from.
type Mirror struct {
	cli     *clientv3.Client
	prefix  string
	handler MirrorHandler
	log     *slog.Logger
	// watching: etcd answered the creation of the watch that follows a
	// listing, and the watch has not failed since.
	watching atomic.Bool
	rev      atomic.Int64
}

var retryPolicy = backoff.Policy{Base: 200 * time.Millisecond, Max: 5 * time.Second}

// NewMirror makes a Mirror of prefix. Start it with Run.
func NewMirror(cli *clientv3.Client, prefix string, h MirrorHandler, log *slog.Logger) *Mirror {
	return &Mirror{cli: cli, prefix: prefix, handler: h, log: log.With("prefix", prefix)}
}

// Synced tells whether the mirror follows etcd now: its listing succeeded,
// etcd answered the creation of the watch that follows it, and the client
// is connected to etcd. The client resumes a broken watch underneath
// without a word, so while etcd is unreachable the watch is still open but
// the connection is not; a member that loses its leader fails the watch
// (it requires one).
func (m *Mirror) Synced() bool {
	return m.watching.Load() && m.cli.ActiveConnection().GetState() == connectivity.Ready
}

// Revision is the last etcd revision the handler was given.
func (m *Mirror) Revision() int64 { return m.rev.Load() }

// Run mirrors until ctx ends.
func (m *Mirror) Run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		if err := m.list(ctx); err != nil {
			failures++
			m.log.Warn("etcd listing failed; keeping the last state", "err", err, "failures", failures)
			retryPolicy.Sleep(ctx, failures)
			continue
		}
		failures = 0
		m.watch(ctx)
	}
}

func (m *Mirror) list(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := m.cli.Get(lctx, m.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	kvs := make([]Event, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		kvs[i] = Event{Key: strings.TrimPrefix(string(kv.Key), m.prefix), Value: kv.Value, ModRevision: kv.ModRevision}
	}
	m.handler.Reset(kvs, resp.Header.Revision)
	m.rev.Store(resp.Header.Revision)
	return nil
}

// watch follows changes until the watch breaks. It resumes from the last
// revision by itself and returns only when a fresh listing is needed or ctx ends.
func (m *Mirror) watch(ctx context.Context) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		ch := m.cli.Watch(wctx, m.prefix, clientv3.WithPrefix(), clientv3.WithRev(m.rev.Load()+1), clientv3.WithCreatedNotify())
		relist := m.consume(ch)
		m.watching.Store(false)
		cancel()
		if relist {
			return
		}
		retryPolicy.Sleep(ctx, 1)
	}
}

// consume applies watch responses until the channel closes or fails; it
// reports whether the revision it resumes from is gone (compacted).
func (m *Mirror) consume(ch clientv3.WatchChan) (relist bool) {
	for resp := range ch {
		if resp.Created && resp.Err() == nil {
			m.watching.Store(true) // etcd answered
		}
		if resp.CompactRevision != 0 {
			m.log.Info("watch revision compacted; listing again", "compact_revision", resp.CompactRevision)
			return true
		}
		if err := resp.Err(); err != nil {
			m.log.Warn("watch failed; resuming", "err", err, "revision", m.rev.Load())
			return false
		}
		if len(resp.Events) == 0 {
			continue
		}
		events := make([]Event, len(resp.Events))
		for i, ev := range resp.Events {
			events[i] = Event{
				Key:         strings.TrimPrefix(string(ev.Kv.Key), m.prefix),
				Value:       ev.Kv.Value,
				Deleted:     ev.Type == clientv3.EventTypeDelete,
				ModRevision: ev.Kv.ModRevision,
			}
		}
		m.handler.Apply(events, resp.Header.Revision)
		m.rev.Store(resp.Header.Revision)
	}
	return false
}
