package sdk

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
)

// PriorityKey carries a request's priority: an HTTP header, and the same
// Kitex metainfo key. Integers 0..127, higher is more important.
const PriorityKey = "x-sextant-priority"

// CallerKey carries the calling service's name over HTTP (Kitex carries it
// in its own RPC info).
const CallerKey = "x-sextant-caller"

// ErrShed is returned for a request dropped by overload admission. It is
// retryable: another instance, or later, may take it.
var ErrShed = errors.New("sextant: shed by overload admission")

// ErrDenied is returned for a request an enforced access rule blocks.
var ErrDenied = errors.New("sextant: denied by access control")

// ParsePriority reads a priority, falling back to def when v is empty or
// not an integer in 0..127.
func ParsePriority(v string, def int32) int32 {
	if v == "" {
		return def
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 0 || p > 127 {
		return def
	}
	return int32(p)
}

// Gate is the server side of admission: it sheds requests whose admission
// level is below the one in force, applies access rules, optionally bounds
// concurrency, measures queueing time from each request's arrival, and
// counts what it sees for the reporter. It also tells what level to answer
// callers with (AdmitLevel): its own, or higher when the callees of a method
// answered with a higher one lately.
type Gate struct {
	// Threshold returns the admission level in force.
	threshold func() int32
	access    func() *AccessRules
	slots     *slots // nil: no concurrency bound
	maxWait   time.Duration
	report    *Reporter
	inflight  atomic.Int64
	now       func() time.Time
	learnTTL  time.Duration

	identities identityCounters

	mu      sync.Mutex
	learned map[string]levelAt // method -> the highest level its callees answered with
}

// GateOptions configure a Gate.
type GateOptions struct {
	// Threshold returns the admission level in force (nil: admit all);
	// ThresholdFrom reads it from discovery.
	Threshold func() int32
	// Access returns the access rules in force (nil: none).
	Access func() *AccessRules
	// Concurrency bounds the requests handled at once; requests beyond it
	// wait, and their wait is the queueing time. 0 leaves it unbounded.
	Concurrency int
	// MaxQueueWait sheds a request that waited this long for a slot: its
	// caller has likely given up, and serving it would only delay the next
	// (default 1 s).
	MaxQueueWait time.Duration
	// Reporter receives the server-side counts (nil: none).
	Reporter *Reporter
	// Now is the clock (default time.Now); a simulation passes its own.
	Now func() time.Time
	// DownstreamTTL is how long a level learned from a method's callees is
	// advertised without being seen again (default 2 s).
	DownstreamTTL time.Duration
	// QueueTime returns the service's overload threshold on queueing time
	// (the overload config's queue_time_ms; nil: its default, 20 ms; see
	// QueueTimeFrom). With a concurrency bound, the queue for slots sheds
	// from its low end the requests that waited three times that (see
	// slots).
	QueueTime func() time.Duration
}

// DefaultQueueTime is the default of the overload config's queue_time_ms.
const DefaultQueueTime = 20 * time.Millisecond

// StandingBound is how long a request of the lowest business priority
// waiting may wait for a slot before a Gate with a concurrency bound sheds
// it (SlotQueue.Trim): three times the service's overload threshold on
// queueing time. A lower bound cuts the tail further and sheds more at the
// service, after its callers' work, instead of at the edge
// (docs/overload.md).
func StandingBound(queueTime time.Duration) time.Duration { return 3 * queueTime }

// NewGate makes a Gate.
func NewGate(o GateOptions) *Gate {
	g := &Gate{threshold: o.Threshold, access: o.Access, report: o.Reporter, maxWait: o.MaxQueueWait,
		now: o.Now, learnTTL: o.DownstreamTTL, learned: map[string]levelAt{}}
	if g.maxWait <= 0 {
		g.maxWait = time.Second
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.learnTTL <= 0 {
		g.learnTTL = 2 * time.Second
	}
	if o.Concurrency > 0 {
		g.slots = newSlots(o.Concurrency)
		g.slots.now = g.now
		queueTime := o.QueueTime
		if queueTime == nil {
			queueTime = func() time.Duration { return DefaultQueueTime }
		}
		g.slots.standing = func() time.Duration { return StandingBound(queueTime()) }
		if o.Reporter != nil {
			o.Reporter.setCapacity(o.Concurrency)
		}
	}
	if w := g.Workload(); w != nil {
		w.gate.CompareAndSwap(nil, g)
	}
	return g
}

// Admission is one admitted request; Done must be called when it ends.
type Admission struct {
	g        *Gate
	started  time.Time
	slot     bool
	method   string
	priority Priority
	deadline time.Time // the caller's (ctx's at Enter): a request done later timed out there

	mu         sync.Mutex
	downstream int32 // the highest level a callee answered with (ObserveDownstream)
	observed   bool
}

// Context carries the admitted request's priority to the calls made while
// serving it (ContextWithPriority), and lets their answers' levels reach
// the Gate (ObserveDownstream).
func (a *Admission) Context(ctx context.Context) context.Context {
	return ContextWithPriority(context.WithValue(ctx, admissionCtxKey{}, a), a.priority)
}

// Enter admits or refuses a request that arrived at arrived (when the server
// read it: the wait until now is its queueing time) with priority p, from
// caller (empty when unknown) for method. ctx's deadline is the caller's: a
// request past it is shed, and one waits for a slot no longer. A refused
// request returns ErrShed or ErrDenied (wrapped with why) and needs no Done.
func (g *Gate) Enter(ctx context.Context, arrived time.Time, p Priority, caller, method string) (*Admission, error) {
	return g.EnterPeer(ctx, arrived, p, Peer{Declared: caller, Identity: api.IdentityMissing}, method)
}

// EnterPeer is Enter for a request from peer: access rules check the
// service of its verified identity when it has one; without, the access
// control's identity policy allows (checking the declared name), denies or
// dry-runs it (served, and reported as a dry-run denial of rule
// "identity-<outcome>"). Every case is counted (IdentityStats).
func (g *Gate) EnterPeer(ctx context.Context, arrived time.Time, p Priority, peer Peer, method string) (*Admission, error) {
	if g.report != nil {
		g.report.arrived(p)
	}
	var rules *AccessRules
	if g.access != nil {
		rules = g.access()
	}
	caller := peer.Declared
	if peer.Identity == api.IdentityVerified {
		caller = peer.Service
		g.identities.add(api.IdentityVerified, "")
		if g.report != nil {
			g.report.identity(api.IdentityVerified)
		}
	} else {
		var policy *api.IdentityPolicy
		if rules != nil {
			policy = rules.Identity
		}
		action := policy.Action(peer.Identity)
		g.identities.add(peer.Identity, action)
		if g.report != nil {
			g.report.identity(identityKey(peer.Identity, action))
		}
		switch action {
		case api.IdentityDeny:
			err := fmt.Errorf("%w: the caller's identity is %s", ErrDenied, peer.Identity)
			if peer.Err != nil {
				err = fmt.Errorf("%w (%v)", err, peer.Err)
			}
			return nil, err
		case api.IdentityDryRun:
			if g.report != nil {
				g.report.dryRunDenial(caller, "identity-"+peer.Identity)
			}
		}
	}
	if rules != nil {
		if denied, rule, dryRun := rules.Check(caller, method); denied {
			if dryRun {
				if g.report != nil {
					g.report.dryRunDenial(caller, rule)
				}
			} else {
				return nil, fmt.Errorf("%w: caller %q by rule %q", ErrDenied, caller, rule)
			}
		}
	}
	if err := g.admit(p, method); err != nil {
		return nil, err
	}
	dl, hasDeadline := ctx.Deadline()
	if hasDeadline && !g.now().Before(dl) {
		g.shedOne() // its caller gave up already: serving it is wasted work
		return nil, fmt.Errorf("%w: its caller's deadline passed %s ago", ErrShed, g.now().Sub(dl))
	}
	a := &Admission{g: g, method: method, priority: p, deadline: dl}
	if g.slots != nil {
		wait := g.maxWait
		if hasDeadline {
			wait = min(wait, dl.Sub(g.now())) // no longer than the caller waits
		}
		got, err := g.slots.acquire(ctx, p.Level(), wait)
		if !got {
			g.shedOne()
			if errors.Is(err, errTrimmed) {
				return nil, fmt.Errorf("%w: level %d was %v", ErrShed, p.Level(), err)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %v while waiting for a slot", ErrShed, err)
			}
			return nil, fmt.Errorf("%w: waited %s for a slot", ErrShed, wait)
		}
		a.slot = true
		// The threshold may have risen while the request waited.
		if err := g.admit(p, method); err != nil {
			g.slots.release()
			return nil, err
		}
	}
	a.started = g.now()
	g.inflight.Add(1)
	if g.report != nil {
		g.report.started(a.started.Sub(arrived), g.inflight.Load())
	}
	return a, nil
}

// admit sheds levels below the one in force for method: the Gate's own, or
// its callees' for that method when higher (a request they would shed is
// shed here, before any work is done on it).
func (g *Gate) admit(p Priority, method string) error {
	if t := g.AdmitLevel(method); p.Level() < t {
		g.shedOne()
		return fmt.Errorf("%w: level %d (priority %d, user %d) is below %d", ErrShed, p.Level(), p.Business, p.User, t)
	}
	return nil
}

// maxLearned bounds the methods a Gate remembers callees' levels for.
const maxLearned = 4096

// learn records what method's callees answered with; expired entries go
// when the table is full, and a new method is not learned while it stays full.
func (g *Gate) learn(method string, level int32, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.learned[method]; !ok && len(g.learned) >= maxLearned {
		for m, l := range g.learned {
			if now.Sub(l.at) > g.learnTTL {
				delete(g.learned, m)
			}
		}
		if len(g.learned) >= maxLearned {
			return
		}
	}
	g.learned[method] = levelAt{level, now}
}

// AdmitLevel is the level a request for method is admitted from, and the
// one to answer its callers with: the Gate's own threshold, or the level
// the method's callees answered with lately when higher (a request below it
// would be shed further down the chain).
func (g *Gate) AdmitLevel(method string) int32 {
	var t int32
	if g.threshold != nil {
		t = g.threshold()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if l, ok := g.learned[method]; ok && g.now().Sub(l.at) <= g.learnTTL {
		t = max(t, l.level)
	}
	return t
}

func (g *Gate) shedOne() {
	if g.report != nil {
		g.report.shed()
	}
}

// Done ends the request.
func (a *Admission) Done() {
	now := a.g.now()
	busy := now.Sub(a.started)
	a.mu.Lock()
	if a.observed {
		a.g.learn(a.method, a.downstream, now)
	}
	a.mu.Unlock()
	if !a.deadline.IsZero() && now.After(a.deadline) && a.g.report != nil {
		a.g.report.clientTimeout()
	}
	a.g.inflight.Add(-1)
	if a.slot {
		a.g.slots.release()
	}
	if a.g.report != nil {
		a.g.report.finished(busy)
	}
}

// Capacity is the number of requests the gate handles at once (0: unbounded).
func (g *Gate) Capacity() int {
	if g.slots == nil {
		return 0
	}
	return g.slots.size
}

// AccessRules is the access_control config of a service (config-center);
// Check tells whether a caller is denied.
type AccessRules = api.AccessControl

// ThresholdFrom reads the admission level in force for instance of service
// from discovery, 0 (admit all) when there is no answer; for GateOptions.Threshold.
func ThresholdFrom(d *Discovery, service, instance string) func() int32 {
	var once sync.Once
	return func() int32 {
		once.Do(func() { d.Watch(service, nil, nil) })
		if s, ok := d.Get(service); ok {
			return s.Threshold(instance)
		}
		return 0
	}
}
