package calculator

import (
	"math"
	"slices"
)

// Zone-aware routing (docs/weights.md#zone-aware-routing): callers keep
// their requests in their own zone while it can serve them below the
// headroom utilization, and send the overflow to zones with capacity to
// spare below it, in proportion to that spare capacity. When the whole
// service runs above the headroom, every zone is given load in proportion
// to its capacity (Envoy's zone-aware rule), so that no zone runs hotter
// than the others.

// zoneRouting computes, for callers in each zone of demand, the share of
// their requests each zone of capacity gets. Both are in requests per
// second: capacity from the instances' own load (requests over
// utilization), demand from the callers' reports. nil when either is
// empty.
func zoneRouting(capacity, demand map[string]float64, headroom float64) map[string]map[string]float64 {
	var totalC, totalD float64
	for _, c := range capacity {
		totalC += c
	}
	for _, d := range demand {
		totalD += d
	}
	if totalC <= 0 || totalD <= 0 {
		return nil
	}
	zones := make([]string, 0, len(capacity))
	for z := range capacity {
		zones = append(zones, z)
	}
	slices.Sort(zones) // a fixed order: the same sums, the same policy
	out := make(map[string]map[string]float64, len(demand))
	for from, d := range demand {
		if d <= 0 {
			continue
		}
		to := map[string]float64{}
		if totalD <= headroom*totalC {
			// Local up to the headroom; the rest where there is room below it.
			local := min(d, headroom*capacity[from])
			to[from] = local / d
			if over := d - local; over > 0 {
				var spare float64
				for _, z := range zones {
					if z != from {
						spare += max(0, headroom*capacity[z]-demand[z])
					}
				}
				for _, z := range zones {
					if s := max(0, headroom*capacity[z]-demand[z]); z != from && s > 0 {
						to[z] = over / d * s / spare
					}
				}
			}
		} else {
			// Above the headroom everywhere: each zone's load in proportion
			// to its capacity.
			c, dShare := capacity[from]/totalC, d/totalD
			local := min(1, c/dShare)
			to[from] = local
			var surplus float64
			for _, z := range zones {
				if z != from {
					surplus += max(0, capacity[z]/totalC-demand[z]/totalD)
				}
			}
			for _, z := range zones {
				if z == from {
					continue
				}
				s := max(0, capacity[z]/totalC-demand[z]/totalD)
				if surplus == 0 {
					s, surplus = capacity[z], totalC-capacity[from]
				}
				if s > 0 && surplus > 0 {
					to[z] = (1 - local) * s / surplus
				}
			}
		}
		for z, share := range to {
			// 0.1 % steps: finer moves are noise, and each would be a new
			// discovery version for every caller.
			if share = math.Round(share*1000) / 1000; share > 0 {
				to[z] = share
			} else {
				delete(to, z)
			}
		}
		if len(to) > 0 {
			out[from] = to
		}
	}
	return out
}
