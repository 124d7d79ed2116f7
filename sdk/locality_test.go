package sdk

import (
	"fmt"
	"math"
	"testing"

	"github.com/sextant-mesh/sextant/api"
)

// zonedSnap is a service with instances per zone (all weight 100) and the
// policy's zone routing.
func zonedSnap(perZone map[string]int, routing map[string]map[string]float64) *Snapshot {
	s := &Snapshot{Discovery: api.Discovery{Service: "svc", Version: 7, ZoneRouting: routing}}
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

// The routing's shares become the picks' shares, whatever the zones' sizes.
func TestZoneWeightedFollowsTheRouting(t *testing.T) {
	snap := zonedSnap(map[string]int{"a": 6, "b": 4}, map[string]map[string]float64{
		"a": {"a": 1}, "b": {"b": 0.8, "a": 0.2}})
	if got := shares(snap, "a", 10000); !near(got["a"], 1) {
		t.Errorf("picks of a caller in a: %v", got)
	}
	if got := shares(snap, "b", 10000); !near(got["b"], 0.8) || !near(got["a"], 0.2) {
		t.Errorf("picks of a caller in b: %v", got)
	}
	// Within a zone, the weights keep their proportions.
	snap.Instances[0].Weight = 300
	w := ZoneWeighted(snap, "b")
	if w.Instances[0].Weight != 3*w.Instances[1].Weight {
		t.Errorf("a's instances lost their proportions: %d vs %d", w.Instances[0].Weight, w.Instances[1].Weight)
	}
	if snap.Instances[0].Weight != 300 {
		t.Error("ZoneWeighted changed its input")
	}
}

// Where it does not apply, the snapshot is left as it is; a zone the
// routing gives nothing is out; a zone named without instances is skipped.
func TestZoneWeightedOnlyWhereItApplies(t *testing.T) {
	routing := map[string]map[string]float64{"a": {"a": 1}, "x": {"c": 1}}
	snap := zonedSnap(map[string]int{"a": 6, "b": 4}, routing)
	for name, c := range map[string]struct {
		snap *Snapshot
		zone string
	}{
		"no zone":                          {snap, ""},
		"a zone the routing does not name": {snap, "b"},
		"routing only to absent zones":     {snap, "x"},
		"no routing":                       {zonedSnap(map[string]int{"a": 6, "b": 4}, nil), "a"},
	} {
		if got := ZoneWeighted(c.snap, c.zone); got != c.snap {
			t.Errorf("%s: the snapshot changed", name)
		}
	}
	for _, in := range ZoneWeighted(snap, "a").Instances {
		if in.Zone == "b" && (in.Weight != 0 || in.Healthy) {
			t.Errorf("caller in a, instance in b: %+v, want out", in)
		}
	}
	half := zonedSnap(map[string]int{"a": 2, "b": 2}, map[string]map[string]float64{"a": {"a": 0.5, "c": 0.5}})
	if got := shares(half, "a", 1000); !near(got["a"], 1) {
		t.Errorf("routing half to an absent zone: %v, want all to a", got)
	}
}
