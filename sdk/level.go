package sdk

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/sextant-mesh/sextant/api"
)

// Keys that carry admission along a call chain, as HTTP headers and as Kitex
// metainfo (kitexsdk: persistent, forwarded by every Kitex hop that passes
// ctx on).
const (
	// UserPriorityKey carries the user priority (0..63).
	UserPriorityKey = "x-sextant-user-priority"
	// AdmitLevelKey carries, in answers, the lowest admission level the
	// answering service admits now (what its callers may shed by before sending).
	AdmitLevelKey = "x-sextant-admit-level"
)

// UserPriorities is how many user priorities divide a business priority.
const UserPriorities = api.UserLevels

// Priority is a request's place in admission, after WeChat's DAGOR: its
// business priority (0..127, higher is more important; from priority rules
// at the edge or set by the caller) and its user priority (0..63, a hash of
// the user that rotates hourly), which divides a business priority so that a
// precise share of it can be shed. Both are set once, where the request
// enters the mesh, and travel with every call made while serving it, so a
// request admitted upstream is not dropped halfway.
type Priority struct {
	Business int32
	User     int32
}

// Level is the admission level: requests are admitted from the highest down.
func (p Priority) Level() int32 { return api.Level(p.Business, p.User) }

type priorityCtxKey struct{}

// ContextWithPriority carries p with ctx, for every call made with it: the
// Hertz and Kitex adapters put it on the wire (headers, metainfo), any other
// client reads it with PriorityFrom.
func ContextWithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityCtxKey{}, p)
}

// PriorityFrom returns the priority ctx carries, if any.
func PriorityFrom(ctx context.Context) (Priority, bool) {
	p, ok := ctx.Value(priorityCtxKey{}).(Priority)
	return p, ok
}

// ParsePriorities reads a priority as carried in headers or metainfo, false
// when business is not a priority. A missing or invalid user priority is
// the highest: the caller knows no user priorities.
func ParsePriorities(business, user string) (Priority, bool) {
	b := ParsePriority(business, -1)
	if b < 0 {
		return Priority{}, false
	}
	return Priority{Business: b, User: ParseUserPriority(user, UserPriorities-1)}, true
}

// WithBusinessPriority sets the business priority (0..127) of the calls made
// with ctx, keeping the user priority ctx carries (the highest when none).
func WithBusinessPriority(ctx context.Context, business int32) context.Context {
	p, ok := PriorityFrom(ctx)
	if !ok {
		p.User = UserPriorities - 1
	}
	p.Business = business
	return ContextWithPriority(ctx, p)
}

// ParseUserPriority reads a user priority, def when v is not one.
func ParseUserPriority(v string, def int32) int32 {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n >= UserPriorities {
		return def
	}
	return int32(n)
}

// UserPriority hashes a user id (or, without one, a request id) into a user
// priority. The salt is the hour: the same users are not always the ones
// shed, and within the hour a user keeps one priority everywhere.
func UserPriority(id string, now time.Time) int32 {
	h := fnv.New32a()
	var salt [8]byte
	hour := now.Unix() / 3600
	for i := range salt {
		salt[i] = byte(hour >> (8 * i))
	}
	h.Write(salt[:])
	h.Write([]byte(id))
	return int32(h.Sum32() % UserPriorities)
}

// Downstreams remembers the admission level each callee service answered
// with lately, so a caller sheds a request its callee would shed, before
// sending it (DAGOR's piggyback). A level is forgotten after TTL without
// an answer to refresh it. Safe for concurrent use.
type Downstreams struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	by map[string]levelAt
}

type levelAt struct {
	level int32
	at    time.Time
}

// NewDownstreams makes an empty Downstreams; ttl 0 means 2 s, now nil time.Now.
func NewDownstreams(ttl time.Duration, now func() time.Time) *Downstreams {
	if ttl <= 0 {
		ttl = 2 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	return &Downstreams{ttl: ttl, now: now, by: map[string]levelAt{}}
}

// Observe records the level service answered with.
func (d *Downstreams) Observe(service string, level int32) {
	d.mu.Lock()
	d.by[service] = levelAt{level, d.now()}
	d.mu.Unlock()
}

// Level is the level service admits, as it answered lately (0: all).
func (d *Downstreams) Level(service string) int32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.by[service]
	if !ok || d.now().Sub(l.at) > d.ttl {
		return 0
	}
	return l.level
}

// ShedBeforeSending tells whether a call of priority p to service is to be
// shed before it is sent: its level is below what service admits, as its
// answers said lately or as its policy says (policyLevel, from discovery's
// Overload.Level; 0 when unknown). It returns the level that applies.
func (d *Downstreams) ShedBeforeSending(service string, p Priority, policyLevel int32) (bool, int32) {
	level := max(d.Level(service), policyLevel)
	return p.Level() < level, level
}

// BeforeSending tells whether the call made with ctx to service is to be
// shed before it is sent: an error wrapping ErrShed when its priority's
// level is below what service admits, as its answers said lately or as
// mesh-core's policy for it says (disc may be nil); the request being
// served learns the level (ObserveDownstream). A call without a priority
// is sent.
func (d *Downstreams) BeforeSending(ctx context.Context, service string, disc *Discovery) error {
	p, ok := PriorityFrom(ctx)
	if !ok {
		return nil
	}
	var policy int32
	if disc != nil {
		if snap, ok := disc.Get(service); ok {
			policy = snap.Overload.Level()
		}
	}
	shed, level := d.ShedBeforeSending(service, p, policy)
	if !shed {
		return nil
	}
	ObserveDownstream(ctx, level)
	return fmt.Errorf("%w: before sending, level %d is below %s's %d", ErrShed, p.Level(), service, level)
}

// Answered records the admission level service answered with (the value
// of AdmitLevelKey), and tells the request being served.
func (d *Downstreams) Answered(ctx context.Context, service, value string) {
	level, err := strconv.Atoi(value)
	if err != nil || level < 0 || level > api.MaxLevel {
		return
	}
	d.Observe(service, int32(level))
	ObserveDownstream(ctx, int32(level))
}

type admissionCtxKey struct{}

// ObserveDownstream tells the request being served with ctx (admitted by a
// Gate) what admission level a callee answered with, or would have (a call
// shed before sending): the Gate then advertises the highest such level to
// its own callers of the same method, so that a request the callee would
// shed is shed at the edge, before any work is done on it.
func ObserveDownstream(ctx context.Context, level int32) {
	if a, ok := ctx.Value(admissionCtxKey{}).(*Admission); ok {
		a.mu.Lock()
		a.downstream = max(a.downstream, level)
		a.observed = true
		a.mu.Unlock()
	}
}
