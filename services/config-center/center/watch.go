package center

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
)

// WatchAnswer is what an SDK instance applies: every config that applies
// to its service as this instance sees it (rollout and pins applied), and the
// dynamic policies of the services it calls.
type WatchAnswer struct {
	Service  string                     `json:"service"`
	Instance string                     `json:"instance"`
	Version  int64                      `json:"version"`
	Configs  []Effective                `json:"configs"`
	Policies map[string]json.RawMessage `json:"policies"`
}

// watcher serves GET /v1/watch.
type watcher struct {
	view        *view
	status      *statusBook
	maxWait     time.Duration
	defaultWait time.Duration
	stopping    <-chan struct{}
}

// answer computes what instance of service applies now.
func (w *watcher) answer(service, instance string, calls []string) WatchAnswer {
	a := WatchAnswer{Service: service, Instance: instance, Configs: []Effective{}, Policies: map[string]json.RawMessage{}}
	pins := w.view.PinsOf(service)
	callees := map[string]bool{}
	for _, c := range calls {
		callees[c] = true
	}
	for _, e := range w.view.Applying(service) {
		a.Configs = append(a.Configs, effective(e, service, instance, pins))
		if r, ok := parseScopeOf(e); ok && r.Client == service {
			callees[r.Server] = true
		}
	}
	names := make([]string, 0, len(callees))
	for c := range callees {
		names = append(names, c)
	}
	slices.Sort(names)
	for _, c := range names {
		if p := w.view.Policy(c); p != nil {
			a.Policies[c] = p
		}
	}
	h := fnv.New64a()
	b, _ := json.Marshal(struct {
		C []Effective
		P map[string]json.RawMessage
	}{a.Configs, a.Policies})
	h.Write(b)
	a.Version = max(1, int64(h.Sum64()&(1<<53-1)))
	return a
}

func parseScopeOf(e Entry) (Ref, bool) {
	r, err := parseRef(e.Kind, splitScope(e.Scope))
	return r, err == nil
}

func (w *watcher) watch(ctx context.Context, c *app.RequestContext) {
	service, instance := string(c.Query("service")), string(c.Query("instance"))
	if fe := jsonx.Name("service", service, true); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	if fe := jsonx.Name("instance", instance, true); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	var calls []string
	if cs := string(c.Query("calls")); cs != "" {
		calls = strings.Split(cs, ",")
		for i, name := range calls {
			if fe := jsonx.Name(jsonx.Index("calls", i), name, true); fe != nil {
				httpx.WriteError(c, consts.StatusBadRequest, fe)
				return
			}
		}
	}
	version, fe := int64Query(c, "version")
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	if len(c.Query("version")) == 0 {
		// The ETag of the answer held, as a standard conditional request sends it.
		version, _ = httpx.IfNoneMatch(string(c.GetHeader("If-None-Match")))
	}
	applied, fe := int64Query(c, "applied")
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	wait := w.defaultWait
	if s := string(c.Query("wait")); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > w.maxWait {
			httpx.WriteError(c, consts.StatusBadRequest, jsonx.Errorf("wait", jsonx.CodeOutOfRange, "want a duration in [0, %s], got %q", w.maxWait, s))
			return
		}
		wait = d
	}
	if applied > 0 {
		w.status.reportApplied(service, instance, applied)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		changed := w.view.Changed()
		a := w.answer(service, instance, calls)
		if a.Version != version {
			w.status.sent(service, instance, a)
			c.Response.Header.Set("ETag", httpx.ETag(a.Version))
			c.JSON(consts.StatusOK, a)
			return
		}
		w.status.seen(service, instance)
		select {
		case <-changed: // something changed: does it change this answer?
		case <-timer.C:
			c.Response.Header.Set("X-Sextant-Version", strconv.FormatInt(version, 10))
			c.Response.Header.Set("ETag", httpx.ETag(version))
			c.Status(consts.StatusNotModified)
			return
		case <-ctx.Done():
			return
		case <-w.stopping:
			c.Response.Header.Set("ETag", httpx.ETag(version))
			c.Status(consts.StatusNotModified)
			return
		}
	}
}

func int64Query(c *app.RequestContext, name string) (int64, *jsonx.FieldError) {
	s := string(c.Query(name))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, jsonx.Errorf(name, jsonx.CodeInvalidType, "want an integer, got %q", s)
	}
	return n, nil
}

// statusBook remembers, per instance, the answer it was last sent and the
// one it reported applying, so that /status can tell how many instances run
// which revision of a config. It is per config-center replica: behind a
// load balancer, ask each, or pin SDKs to one.
type statusBook struct {
	ttl     time.Duration
	mu      sync.Mutex
	sentTo  map[instanceKey]sentAnswer
	applied map[instanceKey]appliedState
}

type instanceKey struct{ service, instance string }

type sentAnswer struct {
	version int64
	revs    map[string]int64 // "kind/scope" -> revision
}

type appliedState struct {
	revs map[string]int64
	at   time.Time
}

func newStatusBook(ttl time.Duration) *statusBook {
	return &statusBook{ttl: ttl, sentTo: map[instanceKey]sentAnswer{}, applied: map[instanceKey]appliedState{}}
}

func (b *statusBook) sent(service, instance string, a WatchAnswer) {
	revs := make(map[string]int64, len(a.Configs))
	for _, e := range a.Configs {
		revs[e.Kind+"/"+e.Scope] = e.Revision
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sentTo[instanceKey{service, instance}] = sentAnswer{version: a.Version, revs: revs}
}

// reportApplied records that an instance applied the answer with version.
func (b *statusBook) reportApplied(service, instance string, version int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := instanceKey{service, instance}
	if s, ok := b.sentTo[k]; ok && s.version == version {
		b.applied[k] = appliedState{revs: s.revs, at: time.Now()}
	}
}

// seen keeps an instance that polls without news in the count.
func (b *statusBook) seen(service, instance string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := instanceKey{service, instance}
	if st, ok := b.applied[k]; ok {
		st.at = time.Now()
		b.applied[k] = st
	}
}

// ConfigStatus tells how many instances run which revision of a config.
type ConfigStatus struct {
	Kind       string         `json:"kind"`
	Scope      string         `json:"scope"`
	Instances  int            `json:"instances"`
	ByRevision map[string]int `json:"by_revision"`
}

func (b *statusBook) of(r Ref) ConfigStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := ConfigStatus{Kind: r.Kind, Scope: r.Scope(), ByRevision: map[string]int{}}
	cutoff := time.Now().Add(-b.ttl)
	for k, a := range b.applied {
		if a.at.Before(cutoff) {
			delete(b.applied, k)
			delete(b.sentTo, k)
			continue
		}
		if rev, ok := a.revs[r.String()]; ok {
			st.Instances++
			st.ByRevision[strconv.FormatInt(rev, 10)]++
		}
	}
	return st
}
