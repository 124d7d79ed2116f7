package sdk

import (
	"fmt"
	"math"
	"testing"

	"github.com/sextant-mesh/sextant/api"
)

// zonedSnap is a service with instances per zone (all weight 100) and the
// policy's demand by caller zone.
func zonedSnap(perZone map[string]int, demand map[string]float64) *Snapshot {
	s := &Snapshot{Discovery: api.Discovery{Service: "svc", Version: 7, ZoneDemand: demand}}
	for _, z := range []string{"a", "b", "c"} {
		for i := range perZone[z] {
			s.Instances = append(s.Instances, Instance{Instance: fmt.Sprintf("%s-%d", z, i), Zone: z, Weight: 100, Healthy: true})
		}
	}
	return s
}

// shares picks n times through a Picker over the zone-weighted snapshot
// and returns the share of picks per zone.
func shares(snap *Snapshot, zone string, n int) map[string]float64 {
	var p Picker
	p.Update(ZoneWeighted(snap, zone))
	out := map[string]float64{}
	for range n {
		in, err := p.Pick()
		if err != nil {
			panic(err)
		}
		out[in.Zone] += 1 / float64(n)
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 0.005 }

// Zone a holds 60 % of the capacity, b 40 %; callers are half in each.
// Callers in a stay home; callers in b keep 0.4/0.5 = 80 % at home and
// spill 20 % to a, whose spare capacity takes it; overall each zone then
// carries its capacity share.
func TestZoneAwareSpillsOverInProportion(t *testing.T) {
	snap := zonedSnap(map[string]int{"a": 6, "b": 4}, map[string]float64{"a": 0.5, "b": 0.5})
	if s, ok := SplitByZone(snap, "a"); !ok || s.Local != 1 || len(s.Spill) != 0 {
		t.Errorf("caller in a: %+v %v, want all local", s, ok)
	}
	s, ok := SplitByZone(snap, "b")
	if !ok || !near(s.Local, 0.8) || !near(s.Spill["a"], 0.2) {
		t.Errorf("caller in b: %+v %v, want 80 %% local, 20 %% to a", s, ok)
	}
	if got := shares(snap, "a", 10000); !near(got["a"], 1) {
		t.Errorf("picks of a caller in a: %v", got)
	}
	if got := shares(snap, "b", 10000); !near(got["b"], 0.8) || !near(got["a"], 0.2) {
		t.Errorf("picks of a caller in b: %v", got)
	}
	// Load per zone, half the callers in each: a gets 0.5 + 0.5 x 0.2 = 60 %, its capacity share.
}

// With three zones, the spill goes where capacity exceeds demand, in
// proportion to the surplus.
func TestZoneAwareSpillFollowsSurplus(t *testing.T) {
	snap := zonedSnap(map[string]int{"a": 2, "b": 5, "c": 3}, map[string]float64{"a": 0.4, "b": 0.3, "c": 0.3})
	s, ok := SplitByZone(snap, "a")
	// a: capacity 0.2 for demand 0.4: half stays; surplus b 0.2, c 0.0.
	if !ok || !near(s.Local, 0.5) || !near(s.Spill["b"], 0.5) || s.Spill["c"] != 0 {
		t.Errorf("caller in a: %+v", s)
	}
}

// Where it does not apply, the snapshot is left as it is.
func TestZoneAwareOnlyWhereItApplies(t *testing.T) {
	snap := zonedSnap(map[string]int{"a": 6, "b": 4}, map[string]float64{"a": 0.5, "b": 0.5})
	for name, c := range map[string]struct {
		snap *Snapshot
		zone string
	}{
		"no zone":                 {snap, ""},
		"a zone without capacity": {snap, "z"},
		"no demand in the policy": {zonedSnap(map[string]int{"a": 6, "b": 4}, nil), "b"},
	} {
		if got := ZoneWeighted(c.snap, c.zone); got != c.snap {
			t.Errorf("%s: the snapshot changed", name)
		}
	}
	// A zone given no share is out for now, and back when the split changes.
	w := ZoneWeighted(snap, "a")
	for _, in := range w.Instances {
		if in.Zone == "b" && (in.Weight != 0 || in.Healthy) {
			t.Errorf("caller in a, instance in b: %+v, want weight 0", in)
		}
	}
	if snap.Instances[0].Weight != 100 {
		t.Error("ZoneWeighted changed its input")
	}
}
