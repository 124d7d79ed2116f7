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
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
)

// watcher serves GET /v1/watch.
type watcher struct {
	view        *view
	status      *statusBook
	maxWait     time.Duration
	defaultWait time.Duration
	stopping    <-chan struct{}
	answers     prometheus.Counter
}

// answer computes what instance of service applies now, and the services
// whose policies it carries or would carry (the callees).
func (w *watcher) answer(service, instance string, calls []string) (api.WatchAnswer, []string) {
	a := api.WatchAnswer{Service: service, Instance: instance, Configs: []api.Effective{}, Policies: map[string]json.RawMessage{}}
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
		C []api.Effective
		P map[string]json.RawMessage
	}{a.Configs, a.Policies})
	h.Write(b)
	a.Version = max(1, int64(h.Sum64()&(1<<53-1)))
	return a, names
}

// topicsOf are the changes an answer for service with callees depends on.
func topicsOf(service string, callees []string) []string {
	out := []string{appliesTopic(service)}
	for _, c := range callees {
		out = append(out, policyTopic(c))
	}
	return out
}

func parseScopeOf(e api.Entry) (Ref, bool) {
	r, err := parseRef(e.Kind, splitScope(e.Scope))
	return r, err == nil
}

func (w *watcher) watch(ctx context.Context, c *app.RequestContext) {
	service, instance := string(c.Query("service")), string(c.Query("instance"))
	if fe := api.Name("service", service, true); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	if fe := api.Name("instance", instance, true); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	var calls []string
	if cs := string(c.Query("calls")); cs != "" {
		calls = strings.Split(cs, ",")
		for i, name := range calls {
			if fe := api.Name(api.Index("calls", i), name, true); fe != nil {
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
			httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("wait", api.CodeOutOfRange, "want a duration in [0, %s], got %q", w.maxWait, s))
			return
		}
		wait = d
	}
	if applied > 0 {
		w.status.reportApplied(service, instance, applied)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	// Subscribed before each answer is computed, so that no change between
	// the two is missed; the answer may name more callees than subscribed
	// (a new client-scoped config), and then it subscribes again.
	changed := make(chan struct{}, 1)
	topics := topicsOf(service, calls)
	cancel := w.view.Subscribe(topics, changed)
	defer func() { cancel() }()
	for {
		a, callees := w.answer(service, instance, calls)
		w.answers.Inc()
		if want := topicsOf(service, callees); !subset(want, topics) {
			cancel()
			topics = want
			cancel = w.view.Subscribe(topics, changed)
			continue
		}
		if a.Version != version {
			w.status.sent(service, instance, calls, a)
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

func int64Query(c *app.RequestContext, name string) (int64, *api.FieldError) {
	s := string(c.Query(name))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, api.Errorf(name, api.CodeInvalidType, "want an integer, got %q", s)
	}
	return n, nil
}

// statusBook remembers, per instance, the answer it was last sent and the
// one it reported applying, so that /status can tell how many instances run
// which revision of a config. It is per config-center replica: behind a
// load balancer, ask each, or pin SDKs to one.
//
// It is bounded: an instance not heard from for ttl is forgotten (swept at
// most once per half ttl, as instances poll), and at most max instances
// are tracked at once; beyond that, new instances are not counted until
// others are forgotten.
type statusBook struct {
	ttl       time.Duration
	max       int
	now       func() time.Time
	mu        sync.Mutex
	sentTo    map[instanceKey]sentAnswer
	applied   map[instanceKey]appliedState
	lastSweep time.Time
}

// maxTrackedInstances bounds the status book.
const maxTrackedInstances = 200_000

type instanceKey struct{ service, instance string }

type sentAnswer struct {
	version int64
	calls   []string         // the callees it asked about, to recompute its answer
	revs    map[string]int64 // "kind/scope" -> revision
	at      time.Time
}

type appliedState struct {
	revs map[string]int64
	at   time.Time
}

func newStatusBook(ttl time.Duration) *statusBook {
	return &statusBook{ttl: ttl, max: maxTrackedInstances, now: time.Now,
		sentTo: map[instanceKey]sentAnswer{}, applied: map[instanceKey]appliedState{}}
}

func (b *statusBook) sent(service, instance string, calls []string, a api.WatchAnswer) {
	revs := revisionsOf(a)
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.sweep(now)
	k := instanceKey{service, instance}
	if _, known := b.sentTo[k]; !known && len(b.sentTo) >= b.max {
		return
	}
	b.sentTo[k] = sentAnswer{version: a.Version, calls: calls, revs: revs, at: now}
}

// sweep forgets the instances not heard from for ttl, at most once per half
// ttl. b.mu is held.
func (b *statusBook) sweep(now time.Time) {
	if now.Sub(b.lastSweep) < b.ttl/2 {
		return
	}
	b.lastSweep = now
	cutoff := now.Add(-b.ttl)
	for k, s := range b.sentTo {
		if a, ok := b.applied[k]; ok && a.at.After(s.at) {
			s.at = a.at
		}
		if s.at.Before(cutoff) {
			delete(b.sentTo, k)
			delete(b.applied, k)
		}
	}
}

// reportApplied records that an instance applied the answer with version.
func (b *statusBook) reportApplied(service, instance string, version int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := instanceKey{service, instance}
	if s, ok := b.sentTo[k]; ok && s.version == version {
		b.applied[k] = appliedState{revs: s.revs, at: b.now()}
	}
}

// seen keeps an instance that polls without news in the count.
func (b *statusBook) seen(service, instance string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := instanceKey{service, instance}
	now := b.now()
	if st, ok := b.applied[k]; ok {
		st.at = now
		b.applied[k] = st
	}
	if s, ok := b.sentTo[k]; ok {
		s.at = now
		b.sentTo[k] = s
	}
}

func (b *statusBook) of(r Ref) api.ConfigStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := api.ConfigStatus{Kind: r.Kind, Scope: r.Scope(), ByRevision: map[string]int{}}
	cutoff := b.now().Add(-b.ttl)
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

// subset tells whether every topic of a is in b.
func subset(a, b []string) bool {
	for _, t := range a {
		if !slices.Contains(b, t) {
			return false
		}
	}
	return true
}
