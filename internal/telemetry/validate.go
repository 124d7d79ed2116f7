package telemetry

import (
	"bytes"
	"math"
	"strconv"
	"time"

	"github.com/sextant-mesh/sextant/internal/jsonx"
)

// Limits bound what one request may carry. The zero value is not useful; start
// from DefaultLimits.
type Limits struct {
	MaxReportsPerRequest int
	MaxCallsPerReport    int
	MaxDenialsPerReport  int
	MinWindow            time.Duration
	MaxWindow            time.Duration
	// How far a report's timestamp may lie in the future (clock skew) or in the
	// past (a data plane flushing what it buffered while the control plane was away).
	MaxFutureSkew time.Duration
	MaxAge        time.Duration
}

// DefaultLimits are the documented defaults (docs/telemetry.md).
func DefaultLimits() Limits {
	return Limits{
		MaxReportsPerRequest: 1000,
		MaxCallsPerReport:    1000,
		MaxDenialsPerReport:  100,
		MinWindow:            100 * time.Millisecond,
		MaxWindow:            time.Minute,
		MaxFutureSkew:        5 * time.Minute,
		MaxAge:               time.Hour,
	}
}

// MaxPriority is the highest request priority; 0 is the lowest.
const MaxPriority = 127

// UserLevels is how many user priorities divide each business priority
// (DAGOR's compound admission level).
const UserLevels = 64

// MaxLevel is the highest admission level.
const MaxLevel = (MaxPriority+1)*UserLevels - 1

// Level is the admission level of a request of business priority p and
// user priority u: requests are admitted from the highest level down, the
// business priority first, the user priority within it.
func Level(p, u int32) int32 { return p*UserLevels + u }

// Decode reads one report (a JSON object) or several (a JSON array) and
// validates each. Either every report is good and returned, or the first bad
// field is named and nothing is returned.
func Decode(body []byte, lim Limits, now time.Time) ([]Report, *jsonx.FieldError) {
	var reports []Report
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return nil, jsonx.Errorf("", jsonx.CodeMalformedJSON, "empty body")
	case trimmed[0] == '[':
		if fe := jsonx.Decode(body, &reports); fe != nil {
			return nil, fe
		}
		if len(reports) == 0 {
			return nil, jsonx.Errorf("", jsonx.CodeInvalidValue, "empty array: send at least one report")
		}
		if len(reports) > lim.MaxReportsPerRequest {
			return nil, jsonx.Errorf("", jsonx.CodeTooMany, "%d reports in one request, at most %d", len(reports), lim.MaxReportsPerRequest)
		}
		for i := range reports {
			if fe := validate(&reports[i], lim, now); fe != nil {
				return nil, jsonx.Under(jsonx.Index("", i), fe)
			}
		}
	case trimmed[0] == '{':
		reports = make([]Report, 1)
		if fe := jsonx.Decode(body, &reports[0]); fe != nil {
			return nil, fe
		}
		if fe := validate(&reports[0], lim, now); fe != nil {
			return nil, fe
		}
	default:
		return nil, jsonx.Errorf("", jsonx.CodeMalformedJSON, "want a report object or an array of reports")
	}
	return reports, nil
}

// Validate checks one decoded report; path prefixes the field names it reports.
func Validate(r *Report, lim Limits, now time.Time, path string) *jsonx.FieldError {
	return jsonx.Under(path, validate(r, lim, now))
}

// validate and the checks below name fields relative to what they check: no
// path is built unless there is an error to report.
func validate(r *Report, lim Limits, now time.Time) *jsonx.FieldError {
	if r.Reporter == nil {
		return jsonx.Errorf("reporter", jsonx.CodeMissingField, "reporter is required")
	}
	if fe := jsonx.Name("reporter.service", r.Reporter.Service, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name("reporter.instance", r.Reporter.Instance, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name("reporter.cluster", r.Reporter.Cluster, false); fe != nil {
		return fe
	}
	if fe := jsonx.Name("reporter.zone", r.Reporter.Zone, false); fe != nil {
		return fe
	}
	if r.WindowMs == 0 {
		return jsonx.Errorf("window_ms", jsonx.CodeMissingField, "window_ms is required")
	}
	if w := time.Duration(r.WindowMs) * time.Millisecond; r.WindowMs < 0 || w < lim.MinWindow || w > lim.MaxWindow {
		return jsonx.Errorf("window_ms", jsonx.CodeOutOfRange, "window_ms %d is outside [%d, %d]",
			r.WindowMs, lim.MinWindow.Milliseconds(), lim.MaxWindow.Milliseconds())
	}
	if r.TimestampMs == 0 {
		return jsonx.Errorf("timestamp_ms", jsonx.CodeMissingField, "timestamp_ms is required")
	}
	if ts := time.UnixMilli(r.TimestampMs); ts.After(now.Add(lim.MaxFutureSkew)) || ts.Before(now.Add(-lim.MaxAge)) {
		return jsonx.Errorf("timestamp_ms", jsonx.CodeOutOfRange,
			"timestamp_ms %d is more than %s ahead of or %s behind the mixer's clock", r.TimestampMs, lim.MaxFutureSkew, lim.MaxAge)
	}
	if r.Server != nil {
		if fe := validateServer(r.Server); fe != nil {
			return jsonx.Under("server", fe)
		}
	}
	if len(r.Calls) > lim.MaxCallsPerReport {
		return jsonx.Errorf("calls", jsonx.CodeTooMany, "%d calls in one report, at most %d", len(r.Calls), lim.MaxCallsPerReport)
	}
	for i := range r.Calls {
		if fe := validateCall(&r.Calls[i]); fe != nil {
			return jsonx.Under(jsonx.Index("calls", i), fe)
		}
	}
	if len(r.DryRunDenials) > lim.MaxDenialsPerReport {
		return jsonx.Errorf("dry_run_denials", jsonx.CodeTooMany, "%d dry-run denials in one report, at most %d",
			len(r.DryRunDenials), lim.MaxDenialsPerReport)
	}
	for i := range r.DryRunDenials {
		if fe := validateDenial(&r.DryRunDenials[i]); fe != nil {
			return jsonx.Under(jsonx.Index("dry_run_denials", i), fe)
		}
	}
	return nil
}

func validateServer(s *ServerStats) *jsonx.FieldError {
	if fe := checkCount("requests", s.Requests); fe != nil {
		return fe
	}
	if fe := checkCount("inflight", s.Inflight); fe != nil {
		return fe
	}
	if fe := checkCount("client_timeouts", s.ClientTimeouts); fe != nil {
		return fe
	}
	if fe := checkFloat("cpu_util", s.CPUUtil, 1); fe != nil {
		return fe
	}
	if fe := checkFloat("queue_time_ms_avg", s.QueueTimeMsAvg, math.MaxFloat64); fe != nil {
		return fe
	}
	if fe := checkFloat("queue_time_ms_p99", s.QueueTimeMsP99, math.MaxFloat64); fe != nil {
		return fe
	}
	for level, n := range s.RequestsByLevel {
		field := jsonx.Join("requests_by_level", strconv.Itoa(int(level)))
		if level < 0 || level > MaxLevel {
			return jsonx.Errorf(field, jsonx.CodeOutOfRange, "level %d is outside [0, %d]", level, MaxLevel)
		}
		if n < 0 {
			return jsonx.Errorf(field, jsonx.CodeOutOfRange, "%d is negative", n)
		}
	}
	for prio, n := range s.RequestsByPriority {
		if prio < 0 || prio > MaxPriority {
			return jsonx.Errorf(priorityField(prio), jsonx.CodeOutOfRange, "priority %d is outside [0, %d]", prio, MaxPriority)
		}
		if n < 0 {
			return jsonx.Errorf(priorityField(prio), jsonx.CodeOutOfRange, "%d is negative", n)
		}
	}
	return nil
}

func priorityField(prio int32) string {
	return jsonx.Join("requests_by_priority", strconv.Itoa(int(prio)))
}

func validateCall(c *Call) *jsonx.FieldError {
	if fe := jsonx.Name("callee_service", c.CalleeService, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name("callee_instance", c.CalleeInstance, true); fe != nil {
		return fe
	}
	if fe := checkCount("requests", c.Requests); fe != nil {
		return fe
	}
	if fe := checkCount("errors", c.Errors); fe != nil {
		return fe
	}
	if fe := checkCount("timeouts", c.Timeouts); fe != nil {
		return fe
	}
	if c.Errors > c.Requests {
		return jsonx.Errorf("errors", jsonx.CodeOutOfRange, "errors %d exceed requests %d", c.Errors, c.Requests)
	}
	if c.Timeouts > c.Requests {
		return jsonx.Errorf("timeouts", jsonx.CodeOutOfRange, "timeouts %d exceed requests %d", c.Timeouts, c.Requests)
	}
	if fe := checkFloat("latency_ms_avg", c.LatencyMsAvg, math.MaxFloat64); fe != nil {
		return fe
	}
	return checkFloat("latency_ms_p99", c.LatencyMsP99, math.MaxFloat64)
}

func validateDenial(d *DryRunDenial) *jsonx.FieldError {
	if fe := jsonx.Name("callee_service", d.CalleeService, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name("caller_service", d.CallerService, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name("rule", d.Rule, true); fe != nil {
		return fe
	}
	return checkCount("count", d.Count)
}

func checkCount(field string, v int64) *jsonx.FieldError {
	if v < 0 {
		return jsonx.Errorf(field, jsonx.CodeOutOfRange, "%d is negative", v)
	}
	return nil
}

// checkFloat accepts finite numbers in [0, max]. JSON cannot spell NaN or
// Inf, but a huge literal rounds to Inf and Go callers can pass either.
func checkFloat(field string, v, max float64) *jsonx.FieldError {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > max {
		return jsonx.Errorf(field, jsonx.CodeOutOfRange, "%g is outside [0, %g]", v, max)
	}
	return nil
}
