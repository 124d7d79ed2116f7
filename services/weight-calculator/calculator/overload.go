package calculator

import (
	"math"
	"sort"

	"github.com/sextant-mesh/sextant/api"
)

// Overload states (docs/overload.md).
const (
	StateNormal     = api.StateNormal
	StateOverloaded = api.StateOverloaded
	StateRecovering = api.StateRecovering
)

// overloadControl is the admission state of a service or an instance, after
// WeChat's DAGOR: while overloaded, the share of load to shed grows by
// ShedStep per round; while healthy again, it shrinks by RecoverStep per
// round. The threshold is the lowest admission level (business priority x
// 64 + user priority) that sheds at least that share of the load, measured
// from requests by level as they arrive, and never sheds the highest level
// present. Within one business priority the user priorities (a hash of the
// user) divide the load into 64 parts, so a service with a single priority
// class sheds a precise share too.
type overloadControl struct {
	State         string `json:"state"`
	AdmitMinLevel int32  `json:"admit_min_level"`
	// The business priority of AdmitMinLevel: data planes that know no
	// levels shed below it, whole classes only.
	AdmitMinPriority int32   `json:"admit_min_priority"`
	ShedTarget       float64 `json:"shed_target"`
	// The signals of the last round, for /debug/policy.
	QueueTimeMs  float64 `json:"queue_time_ms"`
	CPU          float64 `json:"cpu"`
	TimeoutRatio float64 `json:"timeout_ratio"`
	Reason       string  `json:"reason,omitempty"`

	round    int64
	seenAt   [api.MaxPriority + 1]int64 // the last round each business priority arrived
	everSeen [api.MaxPriority + 1]bool
	// A priority whose requests came with user priorities (not only at
	// its top level, as from a data plane that sends no levels).
	levelled [api.MaxPriority + 1]bool
	// The levels in force before AdmitMinLevel, newest first: callers
	// learn a level a round or two after it is decided, so the levels
	// opened lately arrive only in part in the window measured.
	earlier [2]int32
	// The round of the last raise: the rounds just after it measure
	// windows from before it took effect.
	raisedAt int64
}

// raiseShowsAfter is how many rounds after a raise the windows measured
// still predate it: a window is the second before its round, and callers
// learn a level a round or two after it is decided.
const raiseShowsAfter = 2

// farPast: a service that did not serve more than this many steps
// (shed_step) of the requests that arrived, shedding them itself, is far
// past what its callers should send (as an overload begins): it raises
// every round, without waiting for the last raise to show, as waiting
// costs more there than a step too many.
const farPast = 4

// seenRounds is how long a business priority that stopped arriving (shed
// upstream, or gone) still counts as present when the threshold comes down.
const seenRounds = 600

// overloadSignals is what one round knows of the load.
type overloadSignals struct {
	queueTimeMs  float64
	cpu          float64
	timeoutRatio float64
	load         *loadByLevel // arrivals by level in the round's window
	served       int64        // requests served in the window
}

// overloaded tells whether the signals pass a threshold, and which.
func (s overloadSignals) overloaded(k *Knobs) (bool, string) {
	switch {
	case s.queueTimeMs > k.OverloadQueueTimeMs:
		return true, "queue_time"
	case s.cpu > k.OverloadCPU:
		return true, "cpu"
	case s.timeoutRatio > k.OverloadTimeoutRatio:
		return true, "client_timeouts"
	}
	return false, ""
}

// step advances the control by one round. While overloaded the threshold
// rises to shed ShedStep more of the load it admits now (measured from the
// arrivals by level); while recovering it comes down by RecoverStep x 64
// levels (at least one: a sixty-fourth of a business priority) per round,
// by levels rather than by measured load because the load below the
// threshold is mostly shed upstream (callers shed before sending) and never
// arrives to be measured.
func (c *overloadControl) step(sig overloadSignals, k *Knobs) {
	if c.State == "" {
		c.State = StateNormal
	}
	defer func(before int32) { c.earlier[0], c.earlier[1] = before, c.earlier[0] }(c.AdmitMinLevel)
	c.QueueTimeMs, c.CPU, c.TimeoutRatio = sig.queueTimeMs, sig.cpu, sig.timeoutRatio
	over, why := sig.overloaded(k)
	c.Reason = why
	load := sig.load
	c.round++
	for p := range c.seenAt {
		lo, top := p*api.UserLevels, (p+1)*api.UserLevels-1
		if load.below[top+1] > load.below[lo] {
			c.seenAt[p], c.everSeen[p] = c.round, true
			// Only what the threshold lets through arrives: a priority is
			// known to carry no levels only when all of it could arrive.
			if levels := load.below[top] > load.below[lo]; levels || c.AdmitMinLevel <= int32(lo) {
				c.levelled[p] = levels
			}
		}
	}
	switch {
	case over && load.total > 0 && c.raisedAt > 0 && c.round-c.raisedAt <= raiseShowsAfter &&
		float64(load.total-sig.served) <= farPast*k.ShedStep*float64(load.total):
		// The last raise does not show yet in the window measured: raising
		// again on it would compound one overload into several steps,
		// which the one-level recovery then takes rounds to give back.
		c.State = StateOverloaded
	case over && load.total > 0:
		c.State = StateOverloaded
		c.AdmitMinLevel = load.shedMore(c.AdmitMinLevel, max(c.earlier[0], c.earlier[1]), k.ShedStep)
		c.raisedAt = c.round
	case over:
		// Overloaded with nothing arriving to measure shares with: hold.
	case load.total == 0:
		// Nothing arrives (the top level is never shed upstream): no load.
		c.State, c.AdmitMinLevel = StateNormal, 0
	case c.State != StateNormal:
		c.State = StateRecovering
		c.AdmitMinLevel = c.lower(c.AdmitMinLevel, recoverLevels(k))
	}
	c.ShedTarget = load.shedShare(c.AdmitMinLevel)
	c.AdmitMinPriority = c.AdmitMinLevel / api.UserLevels
	if c.State == StateRecovering && c.AdmitMinLevel == 0 {
		c.State, c.ShedTarget = StateNormal, 0
	}
}

// lower brings the threshold down by n levels within its business
// priority; from the bottom of one it goes to the top of the next lower
// priority that arrived lately, and to 0 when there is none. A priority
// whose requests carry no user priorities is one step.
func (c *overloadControl) lower(cur, n int32) int32 {
	class := cur / api.UserLevels
	bottom := class * api.UserLevels
	if cur > bottom {
		if !c.levelled[class] {
			return bottom
		}
		return max(cur-n, bottom)
	}
	for p := class - 1; p >= 0; p-- {
		if c.everSeen[p] && c.round-c.seenAt[p] <= seenRounds {
			if !c.levelled[p] {
				return p * api.UserLevels
			}
			return p*api.UserLevels + api.UserLevels - 1
		}
	}
	return 0
}

// recoverLevels is how many levels the threshold comes down per round.
func recoverLevels(k *Knobs) int32 {
	return max(1, int32(math.Round(k.RecoverStep*api.UserLevels)))
}

// loadByLevel is one window's arrivals by admission level, as cumulative
// counts, so that shares and thresholds take no scan.
type loadByLevel struct {
	below [api.MaxLevel + 2]int64 // below[l]: arrivals under level l
	total int64
	top   int32 // the highest level present
}

func (b *loadByLevel) fill(h *LevelHistogram) {
	b.total, b.top = 0, 0
	for l, n := range h {
		b.below[l] = b.total
		if n > 0 {
			b.total += n
			b.top = int32(l)
		}
	}
	b.below[len(h)] = b.total
}

// shedShare is the share of the load below level threshold.
func (b *loadByLevel) shedShare(threshold int32) float64 {
	if b.total == 0 {
		return 0
	}
	return float64(b.below[min(max(threshold, 0), api.MaxLevel+1)]) / float64(b.total)
}

// shedMore is the threshold above cur that sheds the share of the load
// cur admits nearest to step, at least one level higher while anything is
// admitted, capped at the highest level present (never shed). Nearest, not
// at least: with a few dozen levels admitted one level is several percent
// of the load, and rounding every step up sheds more than the knob says,
// which the one-level recovery then takes rounds to give back.
//
// The levels of cur's business priority from cur up to opened (the
// highest level in force in the last rounds) were opened lately: callers
// that learned that late shed part of their requests in the window, and
// counted as they arrived they would make a step reach too far. Each counts
// as at least the mean level of that priority from opened up (a user
// priority is a hash of the user: the levels of a priority carry alike).
func (b *loadByLevel) shedMore(cur, opened int32, step float64) int32 {
	cur = min(max(cur, 0), b.top)
	if b.total-b.below[cur] <= 0 {
		return cur
	}
	classEnd := min((cur/api.UserLevels+1)*api.UserLevels, b.top+1) // past cur's priority
	var mean float64
	if opened = min(max(opened, cur), classEnd); classEnd-opened >= minMeanLevels {
		mean = float64(b.below[classEnd]-b.below[opened]) / float64(classEnd-opened)
	} else {
		opened = cur
	}
	count := func(l int32) float64 {
		n := float64(b.below[l+1] - b.below[l])
		if l < opened {
			return max(n, mean)
		}
		return n
	}
	admitted := float64(b.total - b.below[opened])
	for l := cur; l < opened; l++ {
		admitted += count(l)
	}
	want := step * admitted
	shed := 0.0
	for l := cur; l < b.top; l++ {
		before := shed
		if shed += count(l); shed >= want {
			if l > cur && want-before < shed-want {
				return l // nearer to step without level l
			}
			return l + 1
		}
	}
	return b.top
}

// minMeanLevels is how many levels above the ones opened lately a mean
// level is taken over; with fewer the arrivals count as they are.
const minMeanLevels = 4

// thresholdFor is the lowest level that sheds at least target of the
// load, capped at the highest level present.
func (b *loadByLevel) thresholdFor(target float64) int32 {
	if target <= 0 || b.total == 0 {
		return 0
	}
	want := target*float64(b.total) - 1e-9*float64(b.total)
	l := sort.Search(int(b.top)+1, func(l int) bool { return float64(b.below[l]) >= want })
	return int32(min(l, int(b.top)))
}
