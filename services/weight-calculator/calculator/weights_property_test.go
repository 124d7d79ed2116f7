package calculator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// randomStats draws an instance's window from a wide, messy distribution:
// idle, tiny and huge traffic, no CPU report, error storms, zero latency.
func randomStats(r *rand.Rand, id string, firstSeen time.Time) InstanceStats {
	st := InstanceStats{Instance: id, FirstSeen: firstSeen, Windows: 3}
	switch r.IntN(4) {
	case 0: // idle
	case 1:
		st.CallRequests = r.Int64N(20)
	default:
		st.CallRequests = r.Int64N(1_000_000)
	}
	if st.CallRequests > 0 {
		st.CallErrors = r.Int64N(st.CallRequests + 1)
		if r.IntN(3) > 0 {
			st.CallErrors /= 20
		}
		st.CallTimeouts = r.Int64N(st.CallRequests - st.CallErrors + 1)
	}
	if r.IntN(5) > 0 {
		st.ServerWindows = 3
		st.ServerRequests = st.CallRequests + r.Int64N(100)
		st.CPUUtil = []float64{0, 1e-9, r.Float64(), 1}[r.IntN(4)]
	}
	st.LatencyMsAvg = []float64{0, 1e-6, r.Float64() * 10_000, r.ExpFloat64() * 20}[r.IntN(4)]
	return st
}

// For random inputs, round after round: weights stay in [0, 1000], 0 only
// when ejected, never all zero, never NaN, and no publish moves a weight by
// more than the step bound (falls are immediate).
func TestWeightsPropertiesUnderRandomInput(t *testing.T) {
	for seed := uint64(1); seed <= 300; seed++ {
		r := rand.New(rand.NewPCG(seed, seed*7))
		k := DefaultKnobs()
		k.EWMAAlpha = []float64{0.1, 0.5, 1}[r.IntN(3)]
		k.MaxEjectionPercent = []float64{0, 30, 100}[r.IntN(3)]
		k.EjectionMs = int64(r.IntN(5000))
		k.MaxStepRatio = []float64{0.1, 0.5, 2}[r.IntN(3)]
		n := 1 + r.IntN(20)
		start := time.UnixMilli(1_763_769_600_000)
		state := map[string]*instanceWeight{}
		firstSeen := map[string]time.Time{}
		var out []weightDecision
		for round := 0; round < 40; round++ {
			now := start.Add(time.Duration(round) * time.Second)
			var in []weighInput
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("i%02d", i)
				if _, ok := firstSeen[id]; !ok {
					// Most instances are known from the start, some join late.
					firstSeen[id] = time.Time{}
					if round > 0 {
						firstSeen[id] = now
					}
				}
				in = append(in, weighInput{stats: randomStats(r, id, firstSeen[id]), span: 3 * time.Second})
			}
			prev := map[string]instanceWeight{}
			for id, w := range state {
				prev[id] = *w
			}
			out = computeWeights(in, state, &k, now, out)
			positive := 0
			for _, d := range out {
				if d.Weight < 0 || d.Weight > MaxWeight || (d.Weight == 0) != d.Ejected {
					t.Fatalf("seed %d round %d: %s weight %d ejected %v", seed, round, d.Instance, d.Weight, d.Ejected)
				}
				if math.IsNaN(d.Target) || math.IsNaN(state[d.Instance].smoothed) {
					t.Fatalf("seed %d round %d: NaN for %s", seed, round, d.Instance)
				}
				if d.Weight > 0 {
					positive++
				}
				p, had := prev[d.Instance]
				if had && p.everSent && !d.Ejected && d.Reason != ReasonBlackout {
					step := max(int32(math.Floor(k.MaxStepRatio*float64(p.published))), k.MaxStepAbs)
					if d.Weight > p.published+step { // falls are not bounded: they only move load to the others
						t.Fatalf("seed %d round %d: %s rose %d -> %d, bound %d", seed, round, d.Instance, p.published, d.Weight, step)
					}
				}
			}
			if positive == 0 {
				t.Fatalf("seed %d round %d: all %d weights are zero", seed, round, n)
			}
			for _, d := range out { // publish every round
				state[d.Instance].published, state[d.Instance].everSent = d.Weight, true
			}
		}
	}
}
