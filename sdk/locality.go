package sdk

import (
	"maps"
	"math"
	"os"
	"slices"
)

// Zone-aware routing, after Envoy's: a caller keeps its requests in its own
// zone while that zone has the capacity for the zone's demand, and spills
// the rest over to the other zones in proportion to their spare capacity.
// Capacity is Sextant's weights (a zone's share of the service's weight),
// demand is the policy's share of requests by caller zone (measured by the
// weight-calculator from every caller's reports: Snapshot.ZoneDemand).
//
// It is applied as weights, so every Balancer, the Kitex resolver and the
// Hertz client honour it unchanged: each instance's weight is scaled by
// its zone's share of this caller's requests over the zone's share of
// capacity.

// ZoneSplit is where a caller in one zone sends its requests: Local to its
// own zone, Spill to each other zone (Local plus the spills make 1).
type ZoneSplit struct {
	Local float64
	Spill map[string]float64
}

// SplitByZone computes the split of a caller in zone for snap; false when
// zone-aware routing does not apply (no zone, no demand in the policy, or
// no capacity in the caller's zone: then every instance is a candidate as
// usual).
func SplitByZone(snap *Snapshot, zone string) (ZoneSplit, bool) {
	if zone == "" || len(snap.ZoneDemand) == 0 || snap.Version == 0 {
		return ZoneSplit{}, false
	}
	capacity := map[string]float64{}
	var total float64
	for in, w := range Eligible(snap) {
		capacity[in.Zone] += float64(w)
		total += float64(w)
	}
	if total <= 0 || capacity[zone] <= 0 {
		return ZoneSplit{}, false
	}
	for z := range capacity {
		capacity[z] /= total
	}
	local := 1.0
	if d := snap.ZoneDemand[zone]; capacity[zone] < d {
		local = capacity[zone] / d
	}
	split := ZoneSplit{Local: local, Spill: map[string]float64{}}
	if local >= 1 {
		return split, true
	}
	// The rest goes where capacity exceeds demand, in proportion to the
	// surplus; with no surplus anywhere, in proportion to capacity.
	surplus := map[string]float64{}
	var sum float64
	for z, c := range capacity {
		if z == zone {
			continue
		}
		if s := c - snap.ZoneDemand[z]; s > 0 {
			surplus[z], sum = s, sum+s
		}
	}
	if sum == 0 {
		for z, c := range capacity {
			if z != zone {
				surplus[z], sum = c, sum+c
			}
		}
	}
	if sum == 0 { // the caller's zone is the only one
		split.Local = 1
		return split, true
	}
	for z, s := range surplus {
		split.Spill[z] = (1 - local) * s / sum
	}
	return split, true
}

// zoneScale is the resolution of the scaled weights: a weight of 1 in a
// zone that gets a hundredth of its capacity share stays positive.
const zoneScale = 100

// ZoneWeighted returns snap with its weights scaled for a caller in zone,
// so that picking by weight sends each zone its share of SplitByZone; snap
// itself when zone-aware routing does not apply. A zone the split gives no
// share keeps its instances at weight 0, as ejected ones: they come back as
// soon as the caller's zone runs short.
func ZoneWeighted(snap *Snapshot, zone string) *Snapshot {
	split, ok := SplitByZone(snap, zone)
	if !ok {
		return snap
	}
	capacity := map[string]int64{}
	for in, w := range Eligible(snap) {
		capacity[in.Zone] += w
	}
	share := maps.Clone(split.Spill)
	share[zone] = split.Local
	var total int64
	for _, c := range capacity {
		total += c
	}
	out := *snap
	out.Instances = slices.Clone(snap.Instances)
	for i := range out.Instances {
		in := &out.Instances[i]
		c := capacity[in.Zone]
		if in.Weight <= 0 || c == 0 {
			continue
		}
		// weight x (zone's share of requests / zone's share of capacity)
		f := share[in.Zone] * float64(total) / float64(c)
		in.Weight = int32(min(math.Round(float64(in.Weight)*f*zoneScale), math.MaxInt32))
		if in.Weight == 0 {
			in.Healthy = false // not a candidate now, as an ejected instance
		}
	}
	return &out
}

// zoneOf is the caller's zone: the option, else $SEXTANT_ZONE.
func zoneOf(zone string) string {
	if zone != "" {
		return zone
	}
	return os.Getenv("SEXTANT_ZONE")
}
