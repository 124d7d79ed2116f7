// Package weightknobs is the document of the config-center's calculator
// kind: the knobs of a service's weight and overload computation, governed
// like its other config (validated, versioned, audited). The
// weight-calculator reads them (docs/weights.md).
package weightknobs

import "github.com/sextant-mesh/sextant/api"

// Knobs tune the weight and overload computation of one service: the
// document of the config-center's calculator kind, with these field
// names; a field left out keeps its default (docs/weights.md).
type Knobs struct {
	// Windows averaged per round for weights.
	EvalWindows int `json:"eval_windows"`
	// A58's error_utilization_penalty.
	ErrorUtilizationPenalty float64 `json:"error_utilization_penalty"`
	// An instance slower than LatencyTolerance x the median (latency less
	// the server's queueing) while not more utilized than the median has its
	// weight multiplied by (tolerance x median / latency)^LatencyExponent,
	// at least 0.1; 0 ignores callers' latency.
	LatencyExponent  float64 `json:"latency_exponent"`
	LatencyTolerance float64 `json:"latency_tolerance"`
	// EWMA weight of the newest target, in (0, 1]; EWMAAlphaDown when the
	// target is below the current weight.
	EWMAAlpha     float64 `json:"ewma_alpha"`
	EWMAAlphaDown float64 `json:"ewma_alpha_down"`
	// The newest window's target replaces the span's when below DropRatio x it.
	DropRatio float64 `json:"drop_ratio"`
	// Slow start: a new instance, or one back from ejection, gets
	// max(slow_start_min_percent %, (elapsed / blackout_ms)^(1 / slow_start_aggression))
	// of its weight until blackout_ms passed (Envoy's slow start).
	BlackoutMs          int64   `json:"blackout_ms"`
	SlowStartMinPercent float64 `json:"slow_start_min_percent"`
	SlowStartAggression float64 `json:"slow_start_aggression"`
	// An instance without reports for this long falls back to its static weight.
	WeightExpiryMs int64 `json:"weight_expiry_ms"`
	// Requests (per evaluation span) below which an instance is not judged.
	MinRequests int64 `json:"min_requests"`
	// An instance is an outlier when its error rate is at least
	// max(OutlierErrorRate, OutlierErrorRateFactor x the service median), or
	// its latency at least OutlierLatencyFactor x the median.
	OutlierErrorRate       float64 `json:"outlier_error_rate"`
	OutlierErrorRateFactor float64 `json:"outlier_error_rate_factor"`
	OutlierLatencyFactor   float64 `json:"outlier_latency_factor"`
	// Rounds in a row an instance must be a latency outlier to be ejected.
	OutlierLatencyRounds int `json:"outlier_latency_rounds"`
	// At most this share of a service's instances is ejected at once (floor,
	// and never all of them).
	MaxEjectionPercent float64 `json:"max_ejection_percent"`
	// An ejection lasts EjectionMs x the ejections in a row (one is
	// forgotten per EjectionMs without being an outlier), at most MaxEjectionMs.
	EjectionMs    int64 `json:"ejection_ms"`
	MaxEjectionMs int64 `json:"max_ejection_ms"`
	// An outlier is ejected only while the other instances, at this
	// utilization, can carry the load measured (panic threshold).
	PanicUtilization float64 `json:"panic_utilization"`
	// A published weight rises at most max(MaxStepRatio x itself, MaxStepAbs) per publish.
	MaxStepRatio float64 `json:"max_step_ratio"`
	MaxStepAbs   int32   `json:"max_step_abs"`
	// Publish when some weight moved by more than this share (or an instance
	// came, went, was ejected, or the overload state changed), and at least
	// every RepublishMs.
	PublishThreshold float64 `json:"publish_threshold"`
	RepublishMs      int64   `json:"republish_ms"`
	// Overload: queueing time, CPU and client-timeout share that mark an
	// instance or service overloaded.
	OverloadQueueTimeMs  float64 `json:"overload_queue_time_ms"`
	OverloadCPU          float64 `json:"overload_cpu"`
	OverloadTimeoutRatio float64 `json:"overload_timeout_ratio"`
	// Share of the load shed more per round while overloaded, and less per
	// round while recovering.
	ShedStep    float64 `json:"shed_step"`
	RecoverStep float64 `json:"recover_step"`
}

// Defaults are the documented defaults.
func Defaults() Knobs {
	return Knobs{
		EvalWindows:             3,
		ErrorUtilizationPenalty: 1.0,
		LatencyExponent:         1.0,
		LatencyTolerance:        1.5,
		EWMAAlpha:               0.3,
		EWMAAlphaDown:           0.7,
		DropRatio:               0.7,
		BlackoutMs:              10_000,
		SlowStartMinPercent:     10,
		SlowStartAggression:     1.0,
		WeightExpiryMs:          30_000,
		MinRequests:             10,
		OutlierErrorRate:        0.05,
		OutlierErrorRateFactor:  3,
		OutlierLatencyFactor:    3,
		OutlierLatencyRounds:    5,
		MaxEjectionPercent:      30,
		EjectionMs:              30_000,
		MaxEjectionMs:           300_000,
		PanicUtilization:        0.9,
		MaxStepRatio:            0.5,
		MaxStepAbs:              50,
		PublishThreshold:        0.1,
		RepublishMs:             30_000,
		OverloadQueueTimeMs:     20,
		OverloadCPU:             0.95,
		OverloadTimeoutRatio:    0.01,
		ShedStep:                0.05,
		RecoverStep:             0.01,
	}
}

// Validate names the first knob out of its range.
func (k *Knobs) Validate() *api.FieldError {
	type rng struct {
		field    string
		v        float64
		min, max float64
	}
	for _, r := range []rng{
		{"eval_windows", float64(k.EvalWindows), 1, 60},
		{"error_utilization_penalty", k.ErrorUtilizationPenalty, 0, 100},
		{"latency_exponent", k.LatencyExponent, 0, 4},
		{"latency_tolerance", k.LatencyTolerance, 1, 100},
		{"ewma_alpha", k.EWMAAlpha, 0.01, 1},
		{"ewma_alpha_down", k.EWMAAlphaDown, 0.01, 1},
		{"drop_ratio", k.DropRatio, 0, 1},
		{"blackout_ms", float64(k.BlackoutMs), 0, 3_600_000},
		{"slow_start_min_percent", k.SlowStartMinPercent, 1, 100},
		{"slow_start_aggression", k.SlowStartAggression, 0.1, 10},
		{"weight_expiry_ms", float64(k.WeightExpiryMs), 1000, 3_600_000},
		{"min_requests", float64(k.MinRequests), 0, 1e9},
		{"outlier_error_rate", k.OutlierErrorRate, 0, 1},
		{"outlier_error_rate_factor", k.OutlierErrorRateFactor, 1, 1000},
		{"outlier_latency_factor", k.OutlierLatencyFactor, 1, 1000},
		{"outlier_latency_rounds", float64(k.OutlierLatencyRounds), 1, 1000},
		{"max_ejection_percent", k.MaxEjectionPercent, 0, 100},
		{"ejection_ms", float64(k.EjectionMs), 0, 3_600_000},
		{"max_ejection_ms", float64(k.MaxEjectionMs), 0, 3_600_000},
		{"panic_utilization", k.PanicUtilization, 0.05, 1},
		{"max_step_ratio", k.MaxStepRatio, 0.01, 10},
		{"max_step_abs", float64(k.MaxStepAbs), 1, 1000},
		{"publish_threshold", k.PublishThreshold, 0, 1},
		{"republish_ms", float64(k.RepublishMs), 1000, 3_600_000},
		{"overload_queue_time_ms", k.OverloadQueueTimeMs, 0.1, 60_000},
		{"overload_cpu", k.OverloadCPU, 0.05, 1},
		{"overload_timeout_ratio", k.OverloadTimeoutRatio, 0, 1},
		{"shed_step", k.ShedStep, 0.001, 1},
		{"recover_step", k.RecoverStep, 0.001, 1},
	} {
		if !(r.v >= r.min && r.v <= r.max) { // also catches NaN
			return api.Errorf(r.field, api.CodeOutOfRange, "%g is outside [%g, %g]", r.v, r.min, r.max)
		}
	}
	return nil
}

// Parse decodes a service's knobs strictly over the defaults; the error
// names the field.
func Parse(data []byte) (Knobs, *api.FieldError) {
	k := Defaults()
	if fe := api.DecodeObject(data, &k); fe != nil {
		return Defaults(), fe
	}
	if fe := k.Validate(); fe != nil {
		return Defaults(), fe
	}
	return k, nil
}
