package sdk

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
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

// Gate is the server side of admission: it sheds requests below the current
// admit_min_priority, applies access rules, optionally bounds concurrency
// (the queue it forms is the queueing time reported to Sextant), and counts
// what it sees for the reporter.
type Gate struct {
	// Threshold returns the admit_min_priority in force.
	threshold func() int32
	access    func() *AccessRules
	slots     *slots // nil: no concurrency bound
	maxWait   time.Duration
	report    *Reporter
	inflight  atomic.Int64
}

// GateOptions configure a Gate.
type GateOptions struct {
	// Threshold returns the current admit_min_priority (nil: admit all).
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
}

// NewGate makes a Gate.
func NewGate(o GateOptions) *Gate {
	g := &Gate{threshold: o.Threshold, access: o.Access, report: o.Reporter, maxWait: o.MaxQueueWait}
	if g.maxWait <= 0 {
		g.maxWait = time.Second
	}
	if o.Concurrency > 0 {
		g.slots = newSlots(o.Concurrency)
		if o.Reporter != nil {
			o.Reporter.setCapacity(o.Concurrency)
		}
	}
	return g
}

// Admission is one admitted request; Done must be called when it ends.
type Admission struct {
	g       *Gate
	started time.Time
	slot    bool
}

// Enter admits or refuses a request that arrived at arrived with priority,
// from caller (empty when unknown) for method. A refused request returns
// ErrShed or ErrDenied (wrapped with why) and needs no Done.
func (g *Gate) Enter(ctx context.Context, arrived time.Time, priority int32, caller, method string) (*Admission, error) {
	if g.report != nil {
		g.report.arrived(priority)
	}
	if g.access != nil {
		if rules := g.access(); rules != nil {
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
	}
	if err := g.admit(priority); err != nil {
		return nil, err
	}
	a := &Admission{g: g}
	if g.slots != nil {
		got, err := g.slots.acquire(ctx, priority, g.maxWait)
		if err != nil {
			return nil, err
		}
		if !got {
			g.shedOne()
			return nil, fmt.Errorf("%w: waited %s for a slot", ErrShed, g.maxWait)
		}
		a.slot = true
		// The threshold may have risen while the request waited.
		if err := g.admit(priority); err != nil {
			g.slots.release()
			return nil, err
		}
	}
	a.started = time.Now()
	g.inflight.Add(1)
	if g.report != nil {
		g.report.started(a.started.Sub(arrived), g.inflight.Load())
	}
	return a, nil
}

// admit sheds priorities below the threshold in force.
func (g *Gate) admit(priority int32) error {
	if g.threshold == nil {
		return nil
	}
	if t := g.threshold(); priority < t {
		g.shedOne()
		return fmt.Errorf("%w: priority %d is below %d", ErrShed, priority, t)
	}
	return nil
}

func (g *Gate) shedOne() {
	if g.report != nil {
		g.report.shed()
	}
}

// Done ends the request.
func (a *Admission) Done() {
	busy := time.Since(a.started)
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

// AccessRules is the access_control config of a service (config-center).
type AccessRules struct {
	Rules []AccessRule `json:"rules"`
}

// AccessRule is one allow or deny list.
type AccessRule struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Callers []string `json:"callers"`
	Methods []string `json:"methods,omitempty"`
	Mode    string   `json:"mode"`
}

// Check tells whether caller calling method is denied, by which rule, and
// whether that rule is only a dry run. Deny rules block the callers they
// list; when allow rules exist, callers none of them lists are blocked.
// Enforced rules are checked before dry-run ones.
func (r *AccessRules) Check(caller, method string) (denied bool, rule string, dryRun bool) {
	for _, mode := range []string{"enforce", "dry_run"} {
		allowSeen, allowed, allowRule := false, false, ""
		for _, ru := range r.Rules {
			if ru.Mode != mode || !ru.appliesTo(method) {
				continue
			}
			listed := ru.lists(caller)
			switch ru.Type {
			case "deny":
				if listed {
					return true, ru.Name, mode == "dry_run"
				}
			case "allow":
				allowSeen, allowRule = true, ru.Name
				allowed = allowed || listed
			}
		}
		if allowSeen && !allowed {
			return true, allowRule, mode == "dry_run"
		}
	}
	return false, "", false
}

func (ru *AccessRule) appliesTo(method string) bool {
	if len(ru.Methods) == 0 {
		return true
	}
	for _, m := range ru.Methods {
		if m == method {
			return true
		}
	}
	return false
}

func (ru *AccessRule) lists(caller string) bool {
	for _, c := range ru.Callers {
		if c == caller {
			return true
		}
	}
	return false
}

// thresholdFrom reads a service's threshold for instance from discovery,
// 0 (admit all) when there is no answer.
func thresholdFrom(d *Discovery, service, instance string) func() int32 {
	var once sync.Once
	return func() int32 {
		once.Do(func() { d.Watch(service, nil, nil) })
		if s, ok := d.Get(service); ok {
			return s.Threshold(instance)
		}
		return 0
	}
}
