package core

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
)

// pollerBook remembers, per data plane that names itself on its polls
// (?client=, the SDK sends its instance or host name) and per poll (the
// services it follows together), the version it holds: what `sextant
// status` compares with the version in force, as istioctl proxy-status
// does. It is per replica and bounded: a poll not seen for ttl is
// forgotten, and at most maxPollers are kept (new ones are not counted
// beyond that until others are forgotten).
type pollerBook struct {
	ttl time.Duration

	mu        sync.Mutex
	polls     map[string]*pollerEntry // client + "\x00" + services
	lastSweep time.Time
}

type pollerEntry struct {
	client   string
	services []string
	many     bool  // a poll of /v1/discovery?services=: its version is the batch's
	held     int64 // the version it holds: asked with, or last answered
	seen     time.Time
}

const maxPollers = 200_000

func newPollerBook(ttl time.Duration) *pollerBook {
	return &pollerBook{ttl: ttl, polls: map[string]*pollerEntry{}}
}

// saw records that client holds version of services, polled one by one
// or together (many) (a poll arrived, or was answered with it). A nil
// book, or a poll without a client, records nothing.
func (b *pollerBook) saw(client string, services []string, many bool, version int64, now time.Time) {
	if b == nil || client == "" {
		return
	}
	key := client + "\x00" + strings.Join(services, ",")
	if many {
		key += "\x00*"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.lastSweep) > b.ttl/2 {
		b.lastSweep = now
		for k, e := range b.polls {
			if now.Sub(e.seen) > b.ttl {
				delete(b.polls, k)
			}
		}
	}
	e := b.polls[key]
	if e == nil {
		if len(b.polls) >= maxPollers {
			return
		}
		e = &pollerEntry{client: strings.Clone(client), services: slices.Clone(services), many: many}
		b.polls[key] = e
	}
	e.held, e.seen = version, now
}

// DataPlanePoll is one data plane's poll (the contract's type).
type DataPlanePoll = api.DataPlaneDiscovery

// list answers the polls that follow service (every poll when empty).
func (b *pollerBook) list(service string, cache *Cache, now time.Time) []DataPlanePoll {
	b.mu.Lock()
	entries := make([]pollerEntry, 0, len(b.polls))
	for _, e := range b.polls {
		if now.Sub(e.seen) <= b.ttl && (service == "" || slices.Contains(e.services, service)) {
			entries = append(entries, *e)
		}
	}
	b.mu.Unlock()
	out := make([]DataPlanePoll, 0, len(entries))
	for _, e := range entries {
		p := DataPlanePoll{Client: e.client, Services: e.services, Held: e.held, LastSeenMs: e.seen.UnixMilli(), State: api.StateStale}
		if e.many {
			_, p.Current = collect(cache, e.services)
		} else {
			p.Current = cache.Get(e.services[0]).Version
		}
		if p.Held == p.Current {
			p.State = api.StateSynced
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b DataPlanePoll) int {
		return strings.Compare(a.Client+"\x00"+strings.Join(a.Services, ","), b.Client+"\x00"+strings.Join(b.Services, ","))
	})
	return out
}

// serve answers GET /v1/dataplanes?service=S.
func (b *pollerBook) serve(cache *Cache) app.HandlerFunc {
	return func(_ context.Context, c *app.RequestContext) {
		service := string(c.Query("service"))
		if fe := api.Name("service", service, false); fe != nil {
			httpx.WriteError(c, consts.StatusBadRequest, fe)
			return
		}
		c.JSON(consts.StatusOK, map[string]any{"dataplanes": b.list(service, cache, time.Now())})
	}
}
