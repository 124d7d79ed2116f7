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
			if fe := Validate(&reports[i], lim, now, jsonx.Index("", i)); fe != nil {
				return nil, fe
			}
		}
	case trimmed[0] == '{':
		reports = make([]Report, 1)
		if fe := jsonx.Decode(body, &reports[0]); fe != nil {
			return nil, fe
		}
		if fe := Validate(&reports[0], lim, now, ""); fe != nil {
			return nil, fe
		}
	default:
		return nil, jsonx.Errorf("", jsonx.CodeMalformedJSON, "want a report object or an array of reports")
	}
	return reports, nil
}

// Validate checks one decoded report; path prefixes the field names it reports.
func Validate(r *Report, lim Limits, now time.Time, path string) *jsonx.FieldError {
	at := func(field string) string { return jsonx.Join(path, field) }
	if r.Reporter == nil {
		return jsonx.Errorf(at("reporter"), jsonx.CodeMissingField, "reporter is required")
	}
	if fe := jsonx.Name(at("reporter.service"), r.Reporter.Service, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name(at("reporter.instance"), r.Reporter.Instance, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name(at("reporter.cluster"), r.Reporter.Cluster, false); fe != nil {
		return fe
	}
	if fe := jsonx.Name(at("reporter.zone"), r.Reporter.Zone, false); fe != nil {
		return fe
	}
	if r.WindowMs == 0 {
		return jsonx.Errorf(at("window_ms"), jsonx.CodeMissingField, "window_ms is required")
	}
	if w := time.Duration(r.WindowMs) * time.Millisecond; r.WindowMs < 0 || w < lim.MinWindow || w > lim.MaxWindow {
		return jsonx.Errorf(at("window_ms"), jsonx.CodeOutOfRange, "window_ms %d is outside [%d, %d]",
			r.WindowMs, lim.MinWindow.Milliseconds(), lim.MaxWindow.Milliseconds())
	}
	if r.TimestampMs == 0 {
		return jsonx.Errorf(at("timestamp_ms"), jsonx.CodeMissingField, "timestamp_ms is required")
	}
	if ts := time.UnixMilli(r.TimestampMs); ts.After(now.Add(lim.MaxFutureSkew)) || ts.Before(now.Add(-lim.MaxAge)) {
		return jsonx.Errorf(at("timestamp_ms"), jsonx.CodeOutOfRange,
			"timestamp_ms %d is more than %s ahead of or %s behind the mixer's clock", r.TimestampMs, lim.MaxFutureSkew, lim.MaxAge)
	}
	if r.Server != nil {
		if fe := validateServer(r.Server, at("server")); fe != nil {
			return fe
		}
	}
	if len(r.Calls) > lim.MaxCallsPerReport {
		return jsonx.Errorf(at("calls"), jsonx.CodeTooMany, "%d calls in one report, at most %d", len(r.Calls), lim.MaxCallsPerReport)
	}
	for i := range r.Calls {
		if fe := validateCall(&r.Calls[i], jsonx.Index(at("calls"), i)); fe != nil {
			return fe
		}
	}
	if len(r.DryRunDenials) > lim.MaxDenialsPerReport {
		return jsonx.Errorf(at("dry_run_denials"), jsonx.CodeTooMany, "%d dry-run denials in one report, at most %d",
			len(r.DryRunDenials), lim.MaxDenialsPerReport)
	}
	for i := range r.DryRunDenials {
		if fe := validateDenial(&r.DryRunDenials[i], jsonx.Index(at("dry_run_denials"), i)); fe != nil {
			return fe
		}
	}
	return nil
}

func validateServer(s *ServerStats, path string) *jsonx.FieldError {
	at := func(field string) string { return jsonx.Join(path, field) }
	for _, c := range []struct {
		field string
		v     int64
	}{{"requests", s.Requests}, {"inflight", s.Inflight}, {"client_timeouts", s.ClientTimeouts}} {
		if fe := checkCount(at(c.field), c.v); fe != nil {
			return fe
		}
	}
	if fe := checkFloat(at("cpu_util"), s.CPUUtil, 1); fe != nil {
		return fe
	}
	if fe := checkFloat(at("queue_time_ms_avg"), s.QueueTimeMsAvg, math.MaxFloat64); fe != nil {
		return fe
	}
	if fe := checkFloat(at("queue_time_ms_p99"), s.QueueTimeMsP99, math.MaxFloat64); fe != nil {
		return fe
	}
	for prio, n := range s.RequestsByPriority {
		field := jsonx.Join(at("requests_by_priority"), strconv.Itoa(int(prio)))
		if prio < 0 || prio > MaxPriority {
			return jsonx.Errorf(field, jsonx.CodeOutOfRange, "priority %d is outside [0, %d]", prio, MaxPriority)
		}
		if fe := checkCount(field, n); fe != nil {
			return fe
		}
	}
	return nil
}

func validateCall(c *Call, path string) *jsonx.FieldError {
	at := func(field string) string { return jsonx.Join(path, field) }
	if fe := jsonx.Name(at("callee_service"), c.CalleeService, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name(at("callee_instance"), c.CalleeInstance, true); fe != nil {
		return fe
	}
	for _, n := range []struct {
		field string
		v     int64
	}{{"requests", c.Requests}, {"errors", c.Errors}, {"timeouts", c.Timeouts}} {
		if fe := checkCount(at(n.field), n.v); fe != nil {
			return fe
		}
	}
	if c.Errors > c.Requests {
		return jsonx.Errorf(at("errors"), jsonx.CodeOutOfRange, "errors %d exceed requests %d", c.Errors, c.Requests)
	}
	if c.Timeouts > c.Requests {
		return jsonx.Errorf(at("timeouts"), jsonx.CodeOutOfRange, "timeouts %d exceed requests %d", c.Timeouts, c.Requests)
	}
	if fe := checkFloat(at("latency_ms_avg"), c.LatencyMsAvg, math.MaxFloat64); fe != nil {
		return fe
	}
	return checkFloat(at("latency_ms_p99"), c.LatencyMsP99, math.MaxFloat64)
}

func validateDenial(d *DryRunDenial, path string) *jsonx.FieldError {
	at := func(field string) string { return jsonx.Join(path, field) }
	if fe := jsonx.Name(at("callee_service"), d.CalleeService, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name(at("caller_service"), d.CallerService, true); fe != nil {
		return fe
	}
	if fe := jsonx.Name(at("rule"), d.Rule, true); fe != nil {
		return fe
	}
	return checkCount(at("count"), d.Count)
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
