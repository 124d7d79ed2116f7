package calculator

import (
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/overloadconf"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
)

// Knobs tune the weight and overload computation of one service. They are
// read from etcd at {prefix}config/{service}/calculator as JSON with these
// field names; a field left out keeps its default (docs/weights.md).
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

// DefaultKnobs are the documented defaults.
func DefaultKnobs() Knobs {
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

// ParseKnobs decodes a service's knobs over the defaults.
func ParseKnobs(data []byte) (Knobs, *api.FieldError) {
	k := DefaultKnobs()
	if fe := jsonx.Decode(data, &k); fe != nil {
		return DefaultKnobs(), fe
	}
	if fe := k.Validate(); fe != nil {
		return DefaultKnobs(), fe
	}
	return k, nil
}

// KnobsKind is the config kind of a service's knobs (api.Keys.Config).
const KnobsKind = api.KindCalculator

// KnobStore follows every service's knobs in etcd: the calculator kind (raw
// knobs) and the config-center's overload kind (its document in force
// overrides the overload knobs it sets). Services without knobs, or with
// documents that do not validate, get the defaults.
type KnobStore struct {
	log      *slog.Logger
	mu       sync.Mutex
	byName   map[string]Knobs
	overload map[string]*overloadconf.Config
	view     atomic.Pointer[map[string]Knobs]
}

// NewKnobStore makes an empty store; feed it with an etcdx.Mirror of config/.
func NewKnobStore(log *slog.Logger) *KnobStore {
	s := &KnobStore{log: log, byName: map[string]Knobs{}, overload: map[string]*overloadconf.Config{}}
	s.publish()
	return s
}

// For returns the knobs of service.
func (s *KnobStore) For(service string) Knobs {
	if k, ok := (*s.view.Load())[service]; ok {
		return k
	}
	return DefaultKnobs()
}

// Reset implements etcdx.MirrorHandler.
func (s *KnobStore) Reset(kvs []etcdx.Event, _ int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byName = map[string]Knobs{}
	s.overload = map[string]*overloadconf.Config{}
	for _, kv := range kvs {
		s.put(kv.Key, kv.Value, false)
	}
	s.publish()
}

// Apply implements etcdx.MirrorHandler.
func (s *KnobStore) Apply(events []etcdx.Event, _ int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range events {
		s.put(ev.Key, ev.Value, ev.Deleted)
	}
	s.publish()
}

// put takes a key relative to config/: {service}/calculator or {service}/overload.
func (s *KnobStore) put(key string, value []byte, deleted bool) {
	service, kind, client, ok := api.ParseConfigPath(key)
	if !ok || client != "" {
		return
	}
	if kind == api.KindOverload {
		s.putOverload(service, value, deleted)
		return
	}
	if kind != KnobsKind {
		return
	}
	if deleted {
		delete(s.byName, service)
		return
	}
	k, fe := ParseKnobs(value)
	if fe != nil {
		s.log.Warn("invalid calculator knobs; using the defaults", "service", service, "err", fe)
		delete(s.byName, service)
		return
	}
	s.byName[service] = k
}

// putOverload takes the config-center's entry of a service's overload
// config: its document in force (docs/config-center.md, storage).
func (s *KnobStore) putOverload(service string, value []byte, deleted bool) {
	if deleted {
		delete(s.overload, service)
		return
	}
	var entry struct {
		Document json.RawMessage `json:"document"`
	}
	if err := json.Unmarshal(value, &entry); err != nil {
		s.log.Warn("unreadable overload config; using the defaults", "service", service, "err", err)
		delete(s.overload, service)
		return
	}
	c, fe := overloadconf.Parse(entry.Document)
	if fe != nil {
		s.log.Warn("invalid overload config; using the defaults", "service", service, "err", fe)
		delete(s.overload, service)
		return
	}
	s.overload[service] = c
}

func (s *KnobStore) publish() {
	m := make(map[string]Knobs, len(s.byName)+len(s.overload))
	for k, v := range s.byName {
		m[k] = v
	}
	for service, c := range s.overload {
		k, ok := m[service]
		if !ok {
			k = DefaultKnobs()
		}
		set := func(dst *float64, v *float64) {
			if v != nil {
				*dst = *v
			}
		}
		set(&k.OverloadQueueTimeMs, c.QueueTimeMs)
		set(&k.OverloadCPU, c.CPU)
		set(&k.OverloadTimeoutRatio, c.TimeoutRatio)
		set(&k.ShedStep, c.ShedStep)
		set(&k.RecoverStep, c.RecoverStep)
		m[service] = k
	}
	s.view.Store(&m)
}
