package sdk

import (
	"math"
	"os"
	"slices"
)

// Zone-aware routing: the weight-calculator sees every caller's demand by
// zone and every instance's capacity, and publishes, for callers in each
// zone, the share of their requests each zone of the service should get
// (Snapshot.ZoneRouting): local while the caller's zone can serve its
// demand below a headroom utilization, the overflow to zones with room in
// proportion to it (docs/weights.md#zone-aware-routing).
//
// A caller applies it as weights, so every Balancer, the Kitex resolver and
// the Hertz client honour it unchanged: each instance's weight is scaled by
// its zone's share of this caller's requests over the zone's share of the
// service's weight.

// zoneScale is the resolution of the scaled weights: an instance of weight
// 1 in a zone that gets a hundredth of its weight share stays positive.
const zoneScale = 100

// ZoneWeighted returns snap with its weights scaled for a caller in zone,
// so that picking by weight gives each zone its share of the policy's
// routing for zone; snap itself when there is none (no zone, no routing
// for it, or none of the zones it names has an eligible instance). A zone
// the routing gives no share keeps its instances at weight 0, out as
// ejected ones are, until the routing changes.
func ZoneWeighted(snap *Snapshot, zone string) *Snapshot {
	if zone == "" || snap.Version == 0 {
		return snap
	}
	routing := snap.ZoneRouting[zone]
	if len(routing) == 0 {
		return snap
	}
	weight := map[string]int64{}
	var total int64
	for in, w := range Eligible(snap) {
		weight[in.Zone] += w
		total += w
	}
	// The shares of zones that have instances here, made to sum to 1.
	var sum float64
	for z, share := range routing {
		if weight[z] > 0 {
			sum += share
		}
	}
	if sum <= 0 || total <= 0 {
		return snap
	}
	out := *snap
	out.Instances = slices.Clone(snap.Instances)
	for i := range out.Instances {
		in := &out.Instances[i]
		w := weight[in.Zone]
		if in.Weight <= 0 || w == 0 {
			continue
		}
		f := routing[in.Zone] / sum * float64(total) / float64(w)
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
