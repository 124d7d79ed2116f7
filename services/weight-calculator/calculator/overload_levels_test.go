package calculator

import (
	"math"
	"slices"
	"testing"

	"github.com/sextant-mesh/sextant/api"
)

// arrivals is a load with perLevel requests at every user priority of each
// class in classes, except the levels below shedBelow (shed upstream).
func arrivals(perLevel int64, shedBelow int32, classes ...int32) *loadByLevel {
	var h LevelHistogram
	for _, c := range classes {
		for u := range int32(api.UserLevels) {
			if l := api.Level(c, u); l >= shedBelow {
				h[l] = perLevel
			}
		}
	}
	var b loadByLevel
	b.fill(&h)
	return &b
}

// A service with one business priority sheds a precise share: 5 % more of
// what it admits per overloaded round (the nearest level), within the
// priority.
func TestOverloadShedsWithinOnePriority(t *testing.T) {
	k := DefaultKnobs()
	var c overloadControl
	over := overloadSignals{queueTimeMs: 100}
	for round := 1; round <= 10; round++ {
		over.load = arrivals(10, c.AdmitMinLevel, 64) // callers shed below the level
		prev := c.AdmitMinLevel
		c.step(over, &k)
		if c.AdmitMinPriority != 64 {
			t.Fatalf("round %d: admit_min_priority %d, want 64 (shedding within it)", round, c.AdmitMinPriority)
		}
		admittedBefore := float64(api.Level(64, 63) - max(prev, api.Level(64, 0)) + 1)
		admittedAfter := float64(api.Level(64, 63) - c.AdmitMinLevel + 1)
		shed := 1 - admittedAfter/admittedBefore
		if c.AdmitMinLevel == prev || math.Abs(shed-0.05) > 0.5/admittedBefore+1e-9 && c.AdmitMinLevel > prev+1 {
			t.Fatalf("round %d: level %d -> %d sheds %.3f of the admitted load, want the nearest to 5 %% (at least one level)", round, prev, c.AdmitMinLevel, shed)
		}
	}
	if c.State != StateOverloaded {
		t.Fatalf("state %s", c.State)
	}
}

// Levels opened in the last rounds arrive only in part (callers learn a
// level late) and count as the mean level of their priority: the step
// after a recovery sheds 5 % of the load, not the few levels that arrived
// least.
func TestOverloadStepCountsLevelsOpenedLatelyInFull(t *testing.T) {
	k := DefaultKnobs()
	var c overloadControl
	for c.AdmitMinLevel < api.Level(64, 32) {
		c.step(overloadSignals{queueTimeMs: 100, load: arrivals(12, c.AdmitMinLevel, 64)}, &k)
	}
	for range 3 { // recover three levels: the callers still shed them
		c.step(overloadSignals{load: arrivals(12, c.AdmitMinLevel+3, 64)}, &k)
	}
	cur := c.AdmitMinLevel
	partly := arrivals(12, cur+2, 64)
	var h LevelHistogram
	for l := range h {
		h[l] = partly.below[l+1] - partly.below[l]
	}
	h[cur], h[cur+1] = 0, 2 // opened one and two rounds ago
	var load loadByLevel
	load.fill(&h)
	c.step(overloadSignals{queueTimeMs: 100, load: &load}, &k)
	admitted := float64(api.Level(64, 63) - cur + 1)
	if shed := float64(c.AdmitMinLevel-cur) / admitted; math.Abs(shed-0.05) > 0.5/admitted {
		t.Fatalf("level %d -> %d sheds %.3f of the admitted levels, want the nearest to 5 %% (%d levels admitted)", cur, c.AdmitMinLevel, shed, int(admitted))
	}

	// Counted as they arrived, the two levels would have reached further.
	var fresh overloadControl
	fresh.AdmitMinLevel = cur
	fresh.step(overloadSignals{queueTimeMs: 100, load: &load}, &k)
	if fresh.AdmitMinLevel <= c.AdmitMinLevel {
		t.Fatalf("without the levels' history the step reached %d, with it %d: the test does not tell them apart", fresh.AdmitMinLevel, c.AdmitMinLevel)
	}
}

// A raise shows in the windows measured two rounds later: until then an
// overloaded round holds the level, unless the service sheds much of what
// arrives itself (an overload beginning), which raises every round.
func TestOverloadWaitsForARaiseToShow(t *testing.T) {
	k := DefaultKnobs()
	var c overloadControl
	mild := overloadSignals{queueTimeMs: 1.5 * k.OverloadQueueTimeMs}
	var raised []int
	for round := 1; round <= 9; round++ {
		mild.load = arrivals(10, c.AdmitMinLevel, 64)
		mild.served = mild.load.total * 9 / 10 // 10 % shed by the service itself
		prev := c.AdmitMinLevel
		c.step(mild, &k)
		if c.State != StateOverloaded {
			t.Fatalf("round %d: state %s while overloaded", round, c.State)
		}
		if c.AdmitMinLevel > prev {
			raised = append(raised, round)
		}
	}
	if want := []int{1, 4, 7}; !slices.Equal(raised, want) {
		t.Fatalf("raised in rounds %v, want %v (two rounds held after each raise)", raised, want)
	}

	var far overloadControl
	for round := 1; round <= 4; round++ {
		prev := far.AdmitMinLevel
		load := arrivals(10, far.AdmitMinLevel, 64)
		far.step(overloadSignals{queueTimeMs: 1.5 * k.OverloadQueueTimeMs, load: load, served: load.total * 7 / 10}, &k)
		if far.AdmitMinLevel <= prev {
			t.Fatalf("round %d: level %d -> %d with 30 %% of the arrivals shed by the service, want a raise every round", round, prev, far.AdmitMinLevel)
		}
	}
}

// Recovery comes down one level per round, through every priority that
// arrived lately (though shed upstream now), and skips the empty ones.
func TestOverloadRecoversLevelByLevelThroughThePriorities(t *testing.T) {
	k := DefaultKnobs()
	var c overloadControl
	// Three priorities arrive; overload until priority 20 is all shed and 64 half.
	for c.AdmitMinLevel < api.Level(64, 32) {
		c.step(overloadSignals{queueTimeMs: 100, load: arrivals(10, c.AdmitMinLevel, 20, 64, 100)}, &k)
	}
	start := c.AdmitMinLevel
	rounds := 0
	for c.State != StateNormal && rounds < 1000 {
		prev := c.AdmitMinLevel
		c.step(overloadSignals{load: arrivals(10, c.AdmitMinLevel, 20, 64, 100)}, &k)
		rounds++
		if prev >= api.Level(64, 1) && prev-c.AdmitMinLevel > 1 {
			t.Fatalf("round %d: %d -> %d, more than one level at once", rounds, prev, c.AdmitMinLevel)
		}
		if prev == api.Level(64, 0) && c.AdmitMinLevel != api.Level(20, 63) {
			t.Fatalf("from the bottom of priority 64 to %d, want the top of 20 (%d): the empty priorities between are skipped", c.AdmitMinLevel, api.Level(20, 63))
		}
	}
	want := int(start-api.Level(64, 0)) + api.UserLevels + 1
	if c.State != StateNormal || rounds != want {
		t.Fatalf("recovered in %d rounds (state %s), want %d: one level per round through 64 and 20", rounds, c.State, want)
	}
}

// A data plane that sends no levels reports each priority at its top level:
// such a priority is one step, as priorities were before levels.
func TestOverloadPrioritiesWithoutLevelsAreOneStep(t *testing.T) {
	k := DefaultKnobs()
	var h LevelHistogram
	for _, p := range []int32{10, 64, 100} {
		h[api.Level(p, api.UserLevels-1)] = 100
	}
	var load loadByLevel
	load.fill(&h)
	c := overloadControl{State: StateRecovering, AdmitMinLevel: api.Level(64, 63)}
	c.everSeen[10], c.everSeen[64], c.everSeen[100] = true, true, true
	c.step(overloadSignals{load: &load}, &k)
	if c.AdmitMinLevel != api.Level(64, 0) {
		t.Fatalf("%d, want the bottom of 64", c.AdmitMinLevel)
	}
	c.step(overloadSignals{load: &load}, &k)
	if c.AdmitMinLevel != api.Level(10, 0) {
		t.Fatalf("%d, want the bottom of 10 (all of it admitted in one step)", c.AdmitMinLevel)
	}
}
