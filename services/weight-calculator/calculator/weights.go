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
	smoothed  float64 // EWMA of the targets, in [0, MaxWeight]
	published int32   // the weight last published, 0 before the first
	everSent  bool    // published holds a published value
	weighed   bool    // smoothed came from the instance's own data at least once

	ejectedUntil time.Time
	ejectReason  string
	ejections    int       // the ejection backoff's multiplier
	calmSince    time.Time // neither ejected nor an outlier since then
	returnedAt   time.Time // when its last ejection ended: slow start from there
	slowStrikes  int       // rounds in a row it was a latency outlier
}

// weightDecision is one instance's weight for this round.
type weightDecision struct {
	Instance string `json:"instance"`
	Weight   int32  `json:"weight"`
	Ejected  bool   `json:"ejected"`
	Reason   string `json:"reason"`
	// What the decision was made from, for /debug/policy.
	QPS         float64 `json:"qps"`
	Util        float64 `json:"utilization"`
	ErrorRate   float64 `json:"error_rate"`   // failed calls (errors and timeouts) over calls
	TimeoutRate float64 `json:"timeout_rate"` // of which timeouts
	LatencyMs   float64 `json:"latency_ms"`
	// Latency less the server's own queueing: what the instance takes when
	// it is not loaded more than the rest.
	ServiceMs float64 `json:"service_ms"`
	Target    float64 `json:"target"`
	SlowStart float64 `json:"slow_start,omitempty"` // the share of its weight an instance in slow start gets
	Dropped   bool    `json:"dropped,omitempty"`    // the target is the newest window's, a clear drop
}

// weighInput is what computeWeights needs of an instance.
type weighInput struct {
	stats InstanceStats
	span  time.Duration // length of the evaluation span, for rates
	// The newest window alone, of length window: a drop shows there first.
	newest InstanceStats
	window time.Duration
}

// computeWeights decides this round's weights of a service's live instances
// (inputs sorted by instance). state holds each instance's weight state and
// is updated; instances not in inputs are not touched.
//
// The target is gRPC's weighted_round_robin rule (gRFC A58),
// qps / (utilization + penalty x eps / qps): for an instance that is not
// overwhelmed, its capacity, whatever share of the load it gets now, so it
// does not feed back. The central view adds what no single client sees:
// an instance that every caller finds slower than latency_tolerance x the
// median, while it is not more utilized than the median (its latency does
// not follow load), loses weight in proportion. Instances without a CPU
// report are weighed by latency and errors alone. Targets are scaled so the
// best instance gets MaxWeight, smoothed (EWMA), held when there is too
// little data, ramped in by slow start (new instances and instances back
// from ejection), ejected when outliers while the rest can carry the load,
// and limited to a bounded step per publish. docs/weights.md says why.
func computeWeights(inputs []weighInput, state map[string]*instanceWeight, k *Knobs, now time.Time, out []weightDecision) []weightDecision {
	n := len(inputs)
	out = out[:0]
	if n == 0 {
		return out
	}

	// Rates and the service medians.
	allUtil := true
	lat := make([]float64, 0, n)
	errs := make([]float64, 0, n)
	utils := make([]float64, 0, n)
	reqs := make([]float64, 0, n)
	for i := range inputs {
		st := &inputs[i].stats
		d := rates(st, inputs[i].span)
		if judged(st, k) {
			if st.ServerWindows == 0 || st.CPUUtil <= 0 {
				allUtil = false
			}
			if d.ServiceMs > 0 {
				lat = append(lat, d.ServiceMs)
			}
			errs = append(errs, d.ErrorRate)
			utils = append(utils, d.Util)
			reqs = append(reqs, float64(st.requests()))
		}
		out = append(out, d)
	}
	medLat, medErr, medUtil, medReqs := median(lat), median(errs), median(utils), median(reqs)
	// An instance more utilized than the others, or near its capacity, has
	// the latency and the timeouts of its load, not of a fault.
	loaded := func(d *weightDecision) bool { return allUtil && (d.Util > medUtil*1.1 || d.Util > nearCapacity) }
	// The failures that are the instance's fault: its timeouts follow its
	// load when it is loaded (counting them would move load to the others
	// until they time out in turn).
	fault := func(d *weightDecision) float64 {
		if loaded(d) {
			return d.ErrorRate - d.TimeoutRate
		}
		return d.ErrorRate
	}

	// Raw scores, scaled to the best.
	score := func(d *weightDecision) float64 {
		eps := d.QPS * fault(d)
		var raw float64
		switch {
		case allUtil && d.QPS > 0:
			raw = d.QPS / (d.Util + k.ErrorUtilizationPenalty*eps/d.QPS)
			if slow := k.LatencyTolerance * medLat; k.LatencyExponent > 0 && medLat > 0 && d.ServiceMs > slow && !loaded(d) {
				raw *= clamp(math.Pow(slow/d.ServiceMs, k.LatencyExponent), 0.1, 1)
			}
		case d.LatencyMs > 0:
			raw = 1 / (d.LatencyMs * (1 + k.ErrorUtilizationPenalty*fault(d)*10))
		default:
			raw = 1 / (1 + k.ErrorUtilizationPenalty*fault(d)*10)
		}
		if !finite(raw) {
			return 0
		}
		return raw
	}
	best := 0.0
	for i := range out {
		d := &out[i]
		if !judged(&inputs[i].stats, k) {
			continue
		}
		d.Target = score(d)
		// A clear drop in the newest window counts at once: an instance
		// that slowed down is flooded before the span shows it.
		if nw := &inputs[i].newest; allUtil && nw.ServerWindows > 0 && nw.requests() >= max(k.MinRequests, dropEvidence) {
			nd := rates(nw, inputs[i].window)
			if t := score(&nd); t < k.DropRatio*d.Target {
				d.Target, d.Dropped = t, true
			}
		}
		best = max(best, d.Target)
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
			w = &instanceWeight{calmSince: now}
			state[d.Instance] = w
		}
		ejected := now.Before(w.ejectedUntil)
		if !ejected && !w.ejectedUntil.IsZero() && w.returnedAt.Before(w.ejectedUntil) {
			w.returnedAt = w.ejectedUntil // back from ejection: slow start
			w.calmSince = now
		}
		if !judged(st, k) {
			d.Reason = ReasonNoData
			w.slowStrikes = 0
			continue
		}
		d.Reason = ReasonComputed
		if ejected {
			continue // weighed afresh once it is back
		}
		if w.weighed {
			// Down at once, up smoothly: an instance that slows down is
			// flooded within seconds; one that recovers can wait.
			alpha := k.EWMAAlpha
			switch {
			case d.Dropped && d.Target < w.smoothed:
				alpha = 1
			case d.Target < w.smoothed:
				alpha = max(alpha, k.EWMAAlphaDown)
			}
			if !d.Dropped {
				// A round weighs by its evidence: a few dozen requests
				// estimate a capacity within several percent only.
				alpha *= min(1, float64(st.requests())/fullEvidence)
			}
			w.smoothed = alpha*d.Target + (1-alpha)*w.smoothed
		} else {
			w.smoothed, w.weighed = d.Target, true
		}
		if st.Windows < k.EvalWindows {
			continue // a partial span is no evidence to eject on
		}
		errRate := fault(d)
		slow := medLat > 0 && d.ServiceMs >= k.OutlierLatencyFactor*medLat && !loaded(d)
		if slow {
			w.slowStrikes++
		} else {
			w.slowStrikes = 0
		}
		switch {
		case errRate > 0 && errRate >= max(k.OutlierErrorRate, k.OutlierErrorRateFactor*medErr):
			outliers = append(outliers, i)
			w.ejectReason = "errors"
		case slow && w.slowStrikes >= k.OutlierLatencyRounds:
			outliers = append(outliers, i)
			w.ejectReason = "latency"
		case slow:
			// Slow, not yet for long enough to eject: not calm either.
		default:
			// Calm: the backoff forgets one ejection per ejection time.
			if w.ejections > 0 && now.Sub(w.calmSince) >= time.Duration(k.EjectionMs)*time.Millisecond {
				w.ejections--
				w.calmSince = now
			}
			continue
		}
		w.calmSince = now
	}
	ejectOutliers(inputs, out, outliers, state, k, now, medUtil)

	// The weights of this round.
	med := medianWeight(out, state, now)
	for i := range out {
		d, st := &out[i], &inputs[i].stats
		w := state[d.Instance]
		if now.Before(w.ejectedUntil) {
			d.Weight, d.Ejected, d.Reason = 0, true, ReasonEjected+":"+w.ejectReason
			continue
		}
		if d.Reason == ReasonNoData {
			// Too little traffic to judge. One never weighed (new, or back
			// from ejection) gets the median, as A58 gives a backend without
			// a weight the mean. One weighed before keeps its weight, drifting
			// slowly toward the median: a low weight brings little traffic,
			// and the drift brings enough to be judged again long before
			// the median would flood it.
			if w.weighed {
				// ...but no higher than needed to be judged: a weight that
				// draws twice min_requests a span at the median instance's
				// traffic. Clients that avoid it locally must not make a
				// known-bad instance drift up to a share it cannot carry.
				probe := med
				if medReqs > 0 {
					probe = min(med, max(MinWeight, med*2*float64(k.MinRequests)/medReqs))
				}
				if w.smoothed < probe {
					w.smoothed = min(probe, w.smoothed+(med-w.smoothed)*k.EWMAAlpha/4)
				}
			} else {
				w.smoothed = med
			}
			d.Target = w.smoothed
		}
		weight := w.smoothed
		if f := slowStart(w, st, k, now); f < 1 {
			d.SlowStart = f
			d.Reason = ReasonBlackout
			weight *= f
		}
		d.Weight = int32(clamp(math.Round(weight), MinWeight, MaxWeight))
		if w.everSent && w.published > 0 {
			d.Weight = stepBound(w.published, d.Weight, k)
		}
	}
	return out
}

// fullEvidence is the requests in an evaluation span from which a round
// moves the smoothed weight by the full EWMA step.
const fullEvidence = 500

// nearCapacity is the utilization above which an instance counts as
// loaded whatever the others' (docs/weights.md, rule 3).
const nearCapacity = 0.85

// dropEvidence is the requests a window must hold for a drop in it to count
// at once: with fewer, a 30 % drop is within the noise of one window.
const dropEvidence = 100

// rates turns an instance's sums over span into rates.
func rates(st *InstanceStats, span time.Duration) weightDecision {
	// The server's own count is what its utilization was spent on (as A58
	// takes qps from the backend): callers also count requests that timed
	// out unserved, which would make a flooded instance look capacious.
	reqs := st.CallRequests
	if st.ServerWindows > 0 {
		reqs = st.ServerRequests
	}
	d := weightDecision{Instance: st.Instance, QPS: float64(reqs) / span.Seconds(), Util: st.CPUUtil, LatencyMs: st.LatencyMsAvg}
	if st.CallRequests > 0 {
		d.ErrorRate = min(float64(st.CallErrors+st.CallTimeouts)/float64(st.CallRequests), 1)
		d.TimeoutRate = min(float64(st.CallTimeouts)/float64(st.CallRequests), d.ErrorRate)
	}
	// The server's queueing is load; what is left is the instance's own
	// pace (never less than a tenth of what callers see, against skew).
	d.ServiceMs = max(st.LatencyMsAvg-st.QueueTimeMsAvg, st.LatencyMsAvg/10)
	return d
}

// slowStart is the share of its weight an instance gets while it ramps in
// after it was first seen or came back from ejection, as Envoy's slow start:
// max(min share, (elapsed / window)^(1 / aggression)); 1 when not ramping.
func slowStart(w *instanceWeight, st *InstanceStats, k *Knobs, now time.Time) float64 {
	window := time.Duration(k.BlackoutMs) * time.Millisecond
	if window <= 0 {
		return 1
	}
	since := st.FirstSeen
	if w.returnedAt.After(since) {
		since = w.returnedAt
	}
	elapsed := now.Sub(since)
	if since.IsZero() || elapsed >= window {
		return 1
	}
	f := math.Pow(float64(elapsed)/float64(window), 1/k.SlowStartAggression)
	return max(k.SlowStartMinPercent/100, f)
}

// ejectOutliers ejects outliers, worst first, while the rest can carry the
// load (Envoy's panic threshold, by capacity rather than by count) and at
// most max_ejection_percent of the instances, never all; each ejection of
// an instance lasts longer than its last (ejection_ms x ejections in a row,
// up to max_ejection_ms).
func ejectOutliers(inputs []weighInput, out []weightDecision, outliers []int, state map[string]*instanceWeight, k *Knobs, now time.Time, medUtil float64) {
	n := len(out)
	ejected := 0
	var load, capacity float64 // requests/s, of the instances not ejected
	for i := range out {
		load += out[i].QPS
		if now.Before(state[out[i].Instance].ejectedUntil) {
			ejected++
			continue
		}
		capacity += capacityOf(&out[i], &inputs[i].stats, k, medUtil)
	}
	allowed := min(int(math.Floor(k.MaxEjectionPercent/100*float64(n))), n-1) - ejected
	slices.SortFunc(outliers, func(a, b int) int { // worst first
		return cmp.Or(cmp.Compare(out[b].ErrorRate, out[a].ErrorRate), cmp.Compare(out[b].ServiceMs, out[a].ServiceMs))
	})
	for _, i := range outliers {
		if allowed <= 0 {
			break
		}
		left := capacity - capacityOf(&out[i], &inputs[i].stats, k, medUtil)
		if medUtil > 0 && left*k.PanicUtilization < load {
			continue // the others could not carry the load: keep it serving
		}
		w := state[out[i].Instance]
		w.ejections++
		d := min(time.Duration(k.EjectionMs)*time.Millisecond*time.Duration(w.ejections), time.Duration(k.MaxEjectionMs)*time.Millisecond)
		w.ejectedUntil = now.Add(d)
		w.smoothed, w.weighed = 0, false // weighed afresh when it is back
		capacity = left
		allowed--
	}
}

// capacityOf estimates the requests/s an instance serves at full
// utilization: qps / utilization, with the service's median utilization
// for one without a CPU report. When no instance reports CPU (medUtil 0)
// capacity is unknown and only max_ejection_percent bounds ejections.
func capacityOf(d *weightDecision, st *InstanceStats, k *Knobs, medUtil float64) float64 {
	if !judged(st, k) {
		return 0
	}
	u := d.Util
	if u <= 0 {
		u = medUtil
	}
	return d.QPS / max(u, 0.01)
}

// stepBound limits how far a weight rises from the one last published: a
// rise floods an instance that is not what it seemed, a fall only moves
// load to the others.
func stepBound(prev, next int32, k *Knobs) int32 {
	step := max(int32(math.Floor(k.MaxStepRatio*float64(prev))), k.MaxStepAbs)
	return max(min(next, prev+step), MinWeight)
}

// requests is how many requests the instance took in the stats' span, as
// it counted them or, when higher, as its callers did.
func (st *InstanceStats) requests() int64 { return max(st.ServerRequests, st.CallRequests) }

// judged tells whether an instance carries enough data to be weighed.
func judged(st *InstanceStats, k *Knobs) bool {
	return st.requests() >= k.MinRequests && st.requests() > 0
}

// medianWeight is the median of this round's smoothed weights of instances
// that are judged, not ejected and past blackout; MaxWeight when none are.
func medianWeight(out []weightDecision, state map[string]*instanceWeight, now time.Time) float64 {
	var ws []float64
	for i := range out {
		w := state[out[i].Instance]
		if out[i].Reason == ReasonComputed && w.weighed && !now.Before(w.ejectedUntil) {
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
