package calculator

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Weight bounds of the published policy.
const (
	MaxWeight = 1000
	MinWeight = 1
)

// Reasons a weight is what it is; they appear in the policy and /debug/policy.
const (
	ReasonComputed = "computed"
	ReasonBlackout = "blackout"
	ReasonNoData   = "insufficient_data"
	ReasonEjected  = "ejected"
)

// instanceWeight is the weight state of one instance across rounds.
type instanceWeight struct {
	smoothed     float64 // EWMA of the targets, in [0, MaxWeight]
	published    int32   // the weight last published, 0 before the first
	everSent     bool    // published holds a published value
	ejectedUntil time.Time
	ejectReason  string
}

// weightDecision is one instance's weight for this round.
type weightDecision struct {
	Instance string `json:"instance"`
	Weight   int32  `json:"weight"`
	Ejected  bool   `json:"ejected"`
	Reason   string `json:"reason"`
	// What the decision was made from, for /debug/policy.
	QPS       float64 `json:"qps"`
	Util      float64 `json:"utilization"`
	ErrorRate float64 `json:"error_rate"`
	LatencyMs float64 `json:"latency_ms"`
	Target    float64 `json:"target"`
}

// weighInput is what computeWeights needs of an instance.
type weighInput struct {
	stats InstanceStats
	span  time.Duration // length of the evaluation span, for rates
}

// computeWeights decides this round's weights of a service's live instances
// (inputs sorted by instance). state holds each instance's weight state and
// is updated; instances not in inputs are not touched.
//
// The target is gRPC's weighted_round_robin rule (gRFC A58),
// qps / (utilization + penalty x eps / qps), scaled by callers' latency
// against the service median: a central view sees the latency every caller
// measured, which no single client does. Instances without a CPU report are
// weighed by latency and errors alone. Targets are scaled so the best
// instance gets MaxWeight, smoothed (EWMA), ramped in for new instances,
// ejected when outliers, and limited to a bounded step per publish.
func computeWeights(inputs []weighInput, state map[string]*instanceWeight, k *Knobs, now time.Time, out []weightDecision) []weightDecision {
	n := len(inputs)
	out = out[:0]
	if n == 0 {
		return out
	}
	blackout := time.Duration(k.BlackoutMs) * time.Millisecond

	// Rates and the service medians.
	allUtil := true
	lat := make([]float64, 0, n)
	errs := make([]float64, 0, n)
	for i := range inputs {
		st := &inputs[i].stats
		secs := inputs[i].span.Seconds()
		reqs := max(st.ServerRequests, st.CallRequests)
		d := weightDecision{Instance: st.Instance, QPS: float64(reqs) / secs, Util: st.CPUUtil, LatencyMs: st.LatencyMsAvg}
		if st.CallRequests > 0 {
			d.ErrorRate = float64(st.CallErrors+st.CallTimeouts) / float64(st.CallRequests)
			d.ErrorRate = min(d.ErrorRate, 1)
		}
		if judged(st, k) {
			if st.ServerWindows == 0 || st.CPUUtil <= 0 {
				allUtil = false
			}
			if st.LatencyMsAvg > 0 {
				lat = append(lat, st.LatencyMsAvg)
			}
			errs = append(errs, d.ErrorRate)
		}
		out = append(out, d)
	}
	medLat, medErr := median(lat), median(errs)

	// Raw scores, scaled to the best.
	best := 0.0
	for i := range out {
		d := &out[i]
		if !judged(&inputs[i].stats, k) {
			continue
		}
		eps := d.QPS * d.ErrorRate
		var raw float64
		switch {
		case allUtil && d.QPS > 0:
			raw = d.QPS / (d.Util + k.ErrorUtilizationPenalty*eps/d.QPS)
		case d.LatencyMs > 0:
			raw = 1 / (d.LatencyMs * (1 + k.ErrorUtilizationPenalty*d.ErrorRate*10))
		default:
			raw = 1 / (1 + k.ErrorUtilizationPenalty*d.ErrorRate*10)
		}
		if allUtil && k.LatencyExponent > 0 && medLat > 0 && d.LatencyMs > 0 {
			raw *= clamp(math.Pow(medLat/d.LatencyMs, k.LatencyExponent), 0.1, 2)
		}
		if !finite(raw) {
			raw = 0
		}
		d.Target = raw
		best = max(best, raw)
	}
	for i := range out {
		if best > 0 {
			out[i].Target = MaxWeight * out[i].Target / best
		}
	}

	// Smooth, and pick the outliers.
	var outliers []int
	for i := range out {
		d, st := &out[i], &inputs[i].stats
		w := state[d.Instance]
		if w == nil {
			w = &instanceWeight{}
			state[d.Instance] = w
		}
		if !judged(st, k) {
			d.Reason = ReasonNoData
			continue
		}
		if w.everSent || w.smoothed > 0 {
			w.smoothed = k.EWMAAlpha*d.Target + (1-k.EWMAAlpha)*w.smoothed
		} else {
			w.smoothed = d.Target
		}
		d.Reason = ReasonComputed
		if now.Before(w.ejectedUntil) {
			continue // already ejected
		}
		if d.ErrorRate >= max(k.OutlierErrorRate, k.OutlierErrorRateFactor*medErr) && d.ErrorRate > 0 {
			outliers = append(outliers, i)
			w.ejectReason = "errors"
		} else if medLat > 0 && d.LatencyMs >= k.OutlierLatencyFactor*medLat {
			outliers = append(outliers, i)
			w.ejectReason = "latency"
		}
	}
	ejected := 0
	for i := range out {
		if now.Before(state[out[i].Instance].ejectedUntil) {
			ejected++
		}
	}
	// Never all of them: at least one instance keeps serving.
	allowed := min(int(math.Floor(k.MaxEjectionPercent/100*float64(n))), n-1) - ejected
	slices.SortFunc(outliers, func(a, b int) int { // worst first
		return cmp.Or(cmp.Compare(out[b].ErrorRate, out[a].ErrorRate), cmp.Compare(out[b].LatencyMs, out[a].LatencyMs))
	})
	for j, i := range outliers {
		if j >= allowed {
			break
		}
		state[out[i].Instance].ejectedUntil = now.Add(time.Duration(k.EjectionMs) * time.Millisecond)
	}

	// The weights of this round.
	med := medianWeight(out, state, now)
	for i := range out {
		d, st := &out[i], &inputs[i].stats
		w := state[d.Instance]
		switch {
		case now.Before(w.ejectedUntil):
			d.Weight, d.Ejected, d.Reason = 0, true, ReasonEjected+":"+w.ejectReason
			w.smoothed = 0
			continue
		case now.Sub(st.FirstSeen) < blackout:
			// Slow start: from nothing to the median over the blackout.
			ramp := float64(now.Sub(st.FirstSeen)) / float64(blackout)
			d.Weight, d.Reason = int32(clamp(math.Round(med*ramp), MinWeight, MaxWeight)), ReasonBlackout
			w.smoothed = float64(d.Weight)
			continue
		case d.Reason == ReasonNoData:
			// Too little traffic to judge (a low weight, or just back from
			// ejection): drift toward the median, as A58 gives instances
			// without a weight the mean one, within the step bound.
			d.Target = med
			if w.everSent {
				w.smoothed = k.EWMAAlpha*med + (1-k.EWMAAlpha)*w.smoothed
			} else {
				w.smoothed = med
			}
		}
		d.Weight = int32(clamp(math.Round(w.smoothed), MinWeight, MaxWeight))
		if w.everSent {
			d.Weight = stepBound(w.published, d.Weight, k)
		}
	}
	return out
}

// stepBound limits how far a weight moves from the one last published.
func stepBound(prev, next int32, k *Knobs) int32 {
	step := max(int32(math.Floor(k.MaxStepRatio*float64(prev))), k.MaxStepAbs)
	return max(min(next, prev+step), prev-step, MinWeight)
}

// judged tells whether an instance carries enough data to be weighed.
func judged(st *InstanceStats, k *Knobs) bool {
	return max(st.ServerRequests, st.CallRequests) >= k.MinRequests && max(st.ServerRequests, st.CallRequests) > 0
}

// medianWeight is the median of this round's smoothed weights of instances
// that are judged, not ejected and past blackout; MaxWeight when none are.
func medianWeight(out []weightDecision, state map[string]*instanceWeight, now time.Time) float64 {
	var ws []float64
	for i := range out {
		w := state[out[i].Instance]
		if out[i].Reason == ReasonComputed && !now.Before(w.ejectedUntil) {
			ws = append(ws, w.smoothed)
		}
	}
	if len(ws) == 0 {
		return MaxWeight
	}
	return median(ws)
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	m := len(vs) / 2
	if len(vs)%2 == 1 {
		return vs[m]
	}
	return (vs[m-1] + vs[m]) / 2
}

func clamp(v, lo, hi float64) float64 {
	if math.IsNaN(v) {
		return lo
	}
	return math.Max(lo, math.Min(hi, v))
}
