package center

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// Ref names one config: its kind and scope ("server" or "client/server").
type Ref struct {
	Kind   string
	Server string
	Client string // empty for server-scoped kinds
}

// Scope is the ref's scope as the API spells it.
func (r Ref) Scope() string {
	if r.Client == "" {
		return r.Server
	}
	return r.Client + "/" + r.Server
}

func (r Ref) String() string { return r.Kind + "/" + r.Scope() }

// Errors of the store, mapped to HTTP statuses by the API.
var (
	ErrNotFound         = errors.New("not found")
	ErrRevisionMismatch = errors.New("revision mismatch") // 412
	ErrRevisionRequired = errors.New("If-Match required") // 428
)

// store reads and writes configs in etcd. Every write is one transaction:
// it compares the revision the writer saw, writes the new entry, keeps the
// previous one in history, appends the audit record, and writes the copy the
// kitex-contrib/config-etcd suite reads.
type store struct {
	etcd        *clientv3.Client
	keys        api.Keys
	kitexPrefix string
	timeout     time.Duration
	pinsOf      func(service string) []api.Pin
	series      *tsdb.Writer
	retention   Retention
}

// Retention bounds what the config-center keeps in etcd besides the configs
// in force: past versions per config, and audit records by count and age.
type Retention struct {
	HistoryKeep int           // past versions kept per config
	AuditKeep   int           // audit records kept, newest first
	AuditMaxAge time.Duration // audit records older than this go
}

// prune drops what Retention no longer keeps after a write: r's oldest past
// versions (r nil: none) and the oldest audit records. It runs after the
// write's transaction, not in it, so a failure leaves more kept than asked
// and the next write prunes again.
func (s *store) prune(ctx context.Context, r *Ref) {
	if r != nil && s.retention.HistoryKeep > 0 {
		s.dropOldest(ctx, s.historyPrefix(*r), s.retention.HistoryKeep)
	}
	audit := s.keys.Audit()
	if s.retention.AuditMaxAge > 0 {
		// Audit keys sort by time: everything below the cutoff's key is older.
		cutoff := s.keys.AuditRecord(time.Now().Add(-s.retention.AuditMaxAge), 0)
		_, _ = s.etcd.Delete(ctx, audit, clientv3.WithRange(cutoff))
	}
	if s.retention.AuditKeep > 0 {
		s.dropOldest(ctx, audit, s.retention.AuditKeep)
	}
}

// dropOldest deletes the first keys under prefix (in key order, which is
// age order for history and audit) so that at most keep remain.
func (s *store) dropOldest(ctx context.Context, prefix string, keep int) {
	n, err := s.etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || n.Count <= int64(keep) {
		return
	}
	extra := n.Count - int64(keep)
	last, err := s.etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(extra))
	if err != nil || len(last.Kvs) == 0 {
		return
	}
	end := string(last.Kvs[len(last.Kvs)-1].Key) + "\x00"
	_, _ = s.etcd.Delete(ctx, prefix, clientv3.WithRange(end))
}

// annotate writes a config change to the time series as an annotation
// (measurement `config_change`, docs/timeseries.md).
func (s *store) annotate(a api.AuditEntry, newRevision int64) {
	if s.series == nil || !s.series.Enabled() {
		return
	}
	text := fmt.Sprintf("%s %s %s by %s", a.Action, a.Kind, a.Scope, a.Who)
	if a.Service != "" {
		text += " for " + a.Service
	}
	s.series.Write("config_change", map[string]string{"kind": a.Kind, "action": a.Action},
		map[string]any{"scope": a.Scope, "service": a.Service, "who": a.Who, "old_revision": a.OldRevision,
			"new_revision": newRevision, "text": text}, time.UnixMilli(a.AtMs))
}

func (s *store) key(r Ref) string           { return s.keys.Config(r.Server, r.Kind, r.Client) }
func (s *store) historyPrefix(r Ref) string { return s.keys.ConfigHistory(r.Server, r.Kind, r.Client) }

// kitexKey is where the config-etcd suite reads r, or "" when it does not.
func (s *store) kitexKey(r Ref) string {
	k := Kinds[r.Kind]
	switch {
	case k.KitexCategory == "":
		return ""
	default:
		return api.KitexConfigKey(s.kitexPrefix, r.Server, r.Client, k.KitexCategory)
	}
}

// Get reads the entry of r.
func (s *store) Get(ctx context.Context, r Ref) (*api.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.etcd.Get(ctx, s.key(r))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNotFound
	}
	var e api.Entry
	if err := json.Unmarshal(resp.Kvs[0].Value, &e); err != nil {
		return nil, fmt.Errorf("stored %s: %w", r, err)
	}
	e.Revision = resp.Kvs[0].ModRevision
	return &e, nil
}

// Write replaces r's entry with next (nil deletes it) if the stored one is at
// revision ifMatch (0: the config must not exist; -1: no If-Match given).
// It returns the new revision.
func (s *store) Write(ctx context.Context, r Ref, ifMatch int64, next *api.Entry, audit api.AuditEntry) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := s.key(r)
	cur, err := s.etcd.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	var prev *api.Entry
	if len(cur.Kvs) > 0 {
		prev = &api.Entry{}
		if err := json.Unmarshal(cur.Kvs[0].Value, prev); err != nil {
			return 0, fmt.Errorf("stored %s: %w", r, err)
		}
		prev.Revision = cur.Kvs[0].ModRevision
	}
	switch {
	case prev == nil && next == nil:
		return 0, ErrNotFound
	case prev != nil && ifMatch == -1:
		return 0, ErrRevisionRequired
	case prev == nil && ifMatch > 0, prev != nil && ifMatch != prev.Revision:
		return 0, ErrRevisionMismatch
	}

	cond := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	var ops []clientv3.Op
	if prev != nil {
		cond = clientv3.Compare(clientv3.ModRevision(key), "=", prev.Revision)
		kept := *prev
		kept.Deleted = next == nil
		b, _ := json.Marshal(kept)
		ops = append(ops, clientv3.OpPut(s.keys.ConfigVersion(r.Server, r.Kind, r.Client, prev.Revision), string(b)))
		audit.OldRevision = prev.Revision
	}
	kitexKey := s.kitexKey(r)
	if next == nil {
		ops = append(ops, clientv3.OpDelete(key))
		if kitexKey != "" {
			ops = append(ops, clientv3.OpDelete(kitexKey))
		}
	} else {
		next.Kind, next.Scope, next.Revision = r.Kind, r.Scope(), 0
		b, _ := json.Marshal(next)
		ops = append(ops, clientv3.OpPut(key, string(b)))
		if kitexKey != "" {
			ops = append(ops, clientv3.OpPut(kitexKey, string(kitexDocument(r, next, s.pinsOf(r.appliedBy())))))
		}
	}
	audit.AtMs = time.Now().UnixMilli()
	ops = append(ops, s.auditOp(audit))
	resp, err := s.etcd.Txn(ctx).If(cond).Then(ops...).Commit()
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		return 0, ErrRevisionMismatch
	}
	s.annotate(audit, resp.Header.Revision)
	s.prune(ctx, &r)
	return resp.Header.Revision, nil
}

// auditOp appends an audit record; the revision it creates is the write's own.
func (s *store) auditOp(a api.AuditEntry) clientv3.Op {
	b, _ := json.Marshal(a)
	return clientv3.OpPut(s.keys.AuditRecord(time.Now(), uint16(rand.UintN(1<<16))), string(b))
}

// kitexDocument is what a stock Kitex client gets: it knows no canary, so
// during a rollout it keeps the previous document until the rollout is
// promoted to 100 %; a pin of the service that applies r wins.
func kitexDocument(r Ref, e *api.Entry, pins []api.Pin) json.RawMessage {
	return api.StockDocument(r.Kind, r.Scope(), e, pins)
}

// appliedBy is the service whose instances apply r: the caller for
// client-scoped kinds, the server for the others.
func (r Ref) appliedBy() string {
	if r.Client != "" {
		return r.Client
	}
	return r.Server
}

// History lists r's versions, newest first: the current one, then those it replaced.
func (s *store) History(ctx context.Context, r Ref) ([]api.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.etcd.Get(ctx, s.historyPrefix(r), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []api.Entry
	if cur, err := s.Get(ctx, r); err == nil {
		out = append(out, *cur)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	for _, kv := range resp.Kvs {
		var e api.Entry
		if json.Unmarshal(kv.Value, &e) == nil {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b api.Entry) int { return int(b.Revision - a.Revision) })
	return out, nil
}

// Version finds r's version at revision rev (current or in history).
func (s *store) Version(ctx context.Context, r Ref, rev int64) (*api.Entry, error) {
	hist, err := s.History(ctx, r)
	if err != nil {
		return nil, err
	}
	for _, e := range hist {
		if e.Revision == rev {
			return &e, nil
		}
	}
	return nil, ErrNotFound
}

// Audit lists the newest audit records, newest first.
func (s *store) Audit(ctx context.Context, limit int64) ([]api.AuditEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.etcd.Get(ctx, s.keys.Audit(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(limit))
	if err != nil {
		return nil, err
	}
	out := make([]api.AuditEntry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var a api.AuditEntry
		if json.Unmarshal(kv.Value, &a) == nil {
			if a.NewRevision == 0 {
				// Written in the write's own transaction (auditOp), the
				// record was created at the revision the write made.
				a.NewRevision = kv.CreateRevision
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// parseRef reads kind and scope from the API path: {kind}/{server} or {kind}/{client}/{server}.
func parseRef(kind string, scope []string) (Ref, error) {
	k, ok := Kinds[kind]
	if !ok {
		return Ref{}, fmt.Errorf("unknown kind %q", kind)
	}
	switch {
	case k.Scope == ServerScope && len(scope) == 1:
		return Ref{Kind: kind, Server: scope[0]}, nil
	case k.Scope == ClientScope && len(scope) == 2:
		return Ref{Kind: kind, Client: scope[0], Server: scope[1]}, nil
	case k.Scope == ClientScope:
		return Ref{}, fmt.Errorf("%s is set per caller and callee: /v1/configs/%s/{client}/{server}", kind, kind)
	default:
		return Ref{}, fmt.Errorf("%s is set per server: /v1/configs/%s/{server}", kind, kind)
	}
}

// splitScope splits "a/b" into its names.
func splitScope(s string) []string { return strings.Split(strings.Trim(s, "/"), "/") }
