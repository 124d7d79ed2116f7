package sdk

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/overloadconf"
)

// Default keys an Edge reads a request's user id and request id from.
const (
	DefaultUserIDKey    = "x-user-id"
	DefaultRequestIDKey = "x-request-id"
)

// Edge assigns a Priority to a request that enters the mesh without one:
// the business priority from the priority rules in force (the first rule
// that matches the request's features, else the rules' default; 64 without
// rules), the user priority from a hash of the user id (UserPriority), of
// the request id when there is no user id, random when there is neither.
// A nil *Edge uses the defaults.
type Edge struct {
	// Rules give business priorities (nil: none).
	Rules *PriorityRules
	// UserIDKey and RequestIDKey are the header or metainfo keys (lower
	// case) the ids are read from (defaults x-user-id, x-request-id); the
	// service's overload config overrides them once followed (Follow).
	UserIDKey, RequestIDKey string

	keys atomic.Pointer[[2]string] // from the overload config
}

// NewEdge makes an Edge that follows w (Follow); w may be nil.
func NewEdge(w *ConfigWatcher) *Edge {
	e := &Edge{Rules: NewPriorityRules()}
	if w != nil {
		e.Follow(w)
	}
	return e
}

// Follow keeps the Edge's rules those of the priority_rules config of the
// watcher's service, and its id keys those of its overload config, as the
// config-center answers them (see PriorityRules.Follow). Call it before
// the Edge assigns priorities.
func (e *Edge) Follow(w *ConfigWatcher) {
	if e.Rules == nil {
		e.Rules = NewPriorityRules()
	}
	e.Rules.Follow(w)
	followOverload(w, func(doc *overloadconf.Config, fe *api.FieldError) {
		switch {
		case fe != nil:
			w.o.Logger.Warn("overload config refused; keeping the id keys in force", "service", w.o.Service, "err", fe)
		case doc == nil:
			e.keys.Store(nil)
		default:
			e.keys.Store(&[2]string{doc.UserIDKey, doc.RequestIDKey})
		}
	})
}

// followOverload calls apply with the overload config of w's service each
// time the config-center answers (nil when the service has none; fe when
// the document is refused), and once now.
func followOverload(w *ConfigWatcher, apply func(doc *overloadconf.Config, fe *api.FieldError)) {
	update := func() {
		a := w.Current()
		if a == nil {
			return
		}
		c, ok := a.Find(api.KindOverload, w.o.Service)
		if !ok {
			apply(nil, nil)
			return
		}
		apply(overloadconf.Parse(c.Document))
	}
	w.OnChange(func(*WatchAnswer) { update() })
	update()
}

// Assign is the priority of the request f, at now.
func (e *Edge) Assign(f PriorityFeatures, now time.Time) Priority {
	var rules *PriorityRules
	userKey, reqKey := DefaultUserIDKey, DefaultRequestIDKey
	if e != nil {
		rules = e.Rules
		if e.UserIDKey != "" {
			userKey = e.UserIDKey
		}
		if e.RequestIDKey != "" {
			reqKey = e.RequestIDKey
		}
		if k := e.keys.Load(); k != nil {
			if k[0] != "" {
				userKey = k[0]
			}
			if k[1] != "" {
				reqKey = k[1]
			}
		}
	}
	p := Priority{}
	p.Business, _ = rules.Priority(f)
	id := ""
	if f.Header != nil {
		if id = f.Header(userKey); id == "" {
			id = f.Header(reqKey)
		}
	}
	if id == "" {
		p.User = rand.Int32N(UserPriorities)
	} else {
		p.User = UserPriority(id, now)
	}
	return p
}

// QueueTimeFrom returns the queueing time threshold of the overload config
// of w's service as the config-center answers it (queue_time_ms;
// DefaultQueueTime without one), for GateOptions.QueueTime.
func QueueTimeFrom(w *ConfigWatcher) func() time.Duration {
	var cur atomic.Int64
	cur.Store(int64(DefaultQueueTime))
	followOverload(w, func(doc *overloadconf.Config, fe *api.FieldError) {
		switch {
		case fe != nil: // refused: the threshold in force stays
		case doc == nil || doc.QueueTimeMs == nil:
			cur.Store(int64(DefaultQueueTime))
		default:
			cur.Store(int64(*doc.QueueTimeMs * float64(time.Millisecond)))
		}
	})
	return func() time.Duration { return time.Duration(cur.Load()) }
}
