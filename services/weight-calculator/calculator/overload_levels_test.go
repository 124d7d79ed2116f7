package calculator

import (
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
// what it admits per overloaded round, within the priority.
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
		if shed := 1 - admittedAfter/admittedBefore; shed < 0.05 || shed > 0.05+1/admittedBefore+1e-9 {
			t.Fatalf("round %d: level %d -> %d sheds %.3f of the admitted load, want 5 %% (one level of rounding)", round, prev, c.AdmitMinLevel, shed)
		}
	}
	if c.State != StateOverloaded {
		t.Fatalf("state %s", c.State)
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
