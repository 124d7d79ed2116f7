// Package telemetry decodes and validates the telemetry reports (api.Report)
// that data planes send to the telemetry-mixer.
package telemetry

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/unitrouting"
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

// DenialDrops counts the dry-run denials left out of reports that were
// accepted, by reason: the code of the denial's first bad field
// (missing_field, invalid_value, out_of_range), or too_many for the good
// denials past MaxDenialsPerReport. A bad denial is a data plane's
// bookkeeping gone wrong, not a reason to lose the window's server and call
// data: the rest of its report is kept.
type DenialDrops map[string]int

// Total is the number of denials dropped.
func (d DenialDrops) Total() int {
	n := 0
	for _, c := range d {
		n += c
	}
	return n
}

func (d *DenialDrops) add(reason string, n int) {
	if *d == nil {
		*d = DenialDrops{}
	}
	(*d)[reason] += n
}

// Decode reads one report (a JSON object) or several (a JSON array) and
// validates each. Either every report is good and returned, or the first bad
// field is named and nothing is returned. Bad dry-run denials, and those
// past the limit, are the exception: they are left out of a report that is
// otherwise good (DecodeCounting says how many).
func Decode(body []byte, lim Limits, now time.Time) ([]api.Report, *api.FieldError) {
	reports, _, fe := DecodeCounting(body, lim, now)
	return reports, fe
}

// DecodeCounting is Decode, and counts the denials it left out.
func DecodeCounting(body []byte, lim Limits, now time.Time) ([]api.Report, DenialDrops, *api.FieldError) {
	var drops DenialDrops
	reports, fe := decode(body, nil, jsonx.Decode, lim, now, &drops)
	if fe != nil {
		return nil, nil, fe
	}
	return reports, drops, nil
}

// Decoder decodes as Decode does into reports it keeps and reuses from one
// body to the next (the reports, their call and denial slices), whose
// strings point into the body: what it returns is valid until the next
// Decode and as long as the body is. A Decoder is used by one goroutine at
// a time.
type Decoder struct {
	reports []api.Report
	drops   DenialDrops
}

// Dropped counts the denials the last Decode left out of the reports it
// returned (nil: none).
func (d *Decoder) Dropped() DenialDrops { return d.drops }

// Decode is Decode into d's reports.
func (d *Decoder) Decode(body []byte, lim Limits, now time.Time) ([]api.Report, *api.FieldError) {
	// Each report is emptied, keeping the room of its slices: the JSON
	// decoder fills what is within a slice's capacity in place.
	all := d.reports[:cap(d.reports)]
	for i := range all {
		r := &all[i]
		calls, denials := r.Calls[:cap(r.Calls)], r.DryRunDenials[:cap(r.DryRunDenials)]
		clear(calls)
		clear(denials)
		*r = api.Report{Calls: calls[:0], DryRunDenials: denials[:0]}
	}
	d.drops = nil
	reports, fe := decode(body, d.reports[:0], jsonx.DecodeView, lim, now, &d.drops)
	if fe != nil {
		d.drops = nil
	}
	if reports != nil {
		d.reports = reports
	}
	return reports, fe
}

// Size is the number of call edges and denials d keeps room for: a pool of
// decoders leaves out one grown by an outsized request.
func (d *Decoder) Size() int {
	n := cap(d.reports)
	for _, r := range d.reports[:cap(d.reports)] {
		n += cap(r.Calls) + cap(r.DryRunDenials)
	}
	return n
}

func decode(body []byte, reports []api.Report, unmarshal func([]byte, any) *api.FieldError, lim Limits, now time.Time, drops *DenialDrops) ([]api.Report, *api.FieldError) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return nil, api.Errorf("", api.CodeMalformedJSON, "empty body")
	case trimmed[0] == '[':
		if fe := unmarshal(body, &reports); fe != nil {
			return nil, fe
		}
		if len(reports) == 0 {
			return nil, api.Errorf("", api.CodeInvalidValue, "empty array: send at least one report")
		}
		if len(reports) > lim.MaxReportsPerRequest {
			return nil, api.Errorf("", api.CodeTooMany, "%d reports in one request, at most %d", len(reports), lim.MaxReportsPerRequest)
		}
		for i := range reports {
			if fe := validate(&reports[i], lim, now, drops); fe != nil {
				return nil, api.Under(api.Index("", i), fe)
			}
		}
	case trimmed[0] == '{':
		if cap(reports) == 0 {
			reports = make([]api.Report, 1)
		}
		reports = reports[:1]
		if fe := unmarshal(body, &reports[0]); fe != nil {
			return nil, fe
		}
		if fe := validate(&reports[0], lim, now, drops); fe != nil {
			return nil, fe
		}
	default:
		return nil, api.Errorf("", api.CodeMalformedJSON, "want a report object or an array of reports")
	}
	return reports, nil
}

// Validate checks one decoded report; path prefixes the field names it
// reports. It is strict: a bad denial, or one too many, is an error (Decode
// leaves them out instead).
func Validate(r *api.Report, lim Limits, now time.Time, path string) *api.FieldError {
	return api.Under(path, validate(r, lim, now, nil))
}

// validate and the checks below name fields relative to what they check: no
// path is built unless there is an error to report. With drops, bad denials
// and those past the limit are removed from r and counted there, once the
// rest of r is known to be good; without, they are errors.
func validate(r *api.Report, lim Limits, now time.Time, drops *DenialDrops) *api.FieldError {
	if r.Reporter == nil {
		return api.Errorf("reporter", api.CodeMissingField, "reporter is required")
	}
	if fe := api.Name("reporter.service", r.Reporter.Service, true); fe != nil {
		return fe
	}
	if fe := api.Name("reporter.instance", r.Reporter.Instance, true); fe != nil {
		return fe
	}
	if fe := api.Name("reporter.cluster", r.Reporter.Cluster, false); fe != nil {
		return fe
	}
	if fe := api.Name("reporter.zone", r.Reporter.Zone, false); fe != nil {
		return fe
	}
	if r.WindowMs == 0 {
		return api.Errorf("window_ms", api.CodeMissingField, "window_ms is required")
	}
	if w := time.Duration(r.WindowMs) * time.Millisecond; r.WindowMs < 0 || w < lim.MinWindow || w > lim.MaxWindow {
		return api.Errorf("window_ms", api.CodeOutOfRange, "window_ms %d is outside [%d, %d]",
			r.WindowMs, lim.MinWindow.Milliseconds(), lim.MaxWindow.Milliseconds())
	}
	if r.TimestampMs == 0 {
		return api.Errorf("timestamp_ms", api.CodeMissingField, "timestamp_ms is required")
	}
	if ts := time.UnixMilli(r.TimestampMs); ts.After(now.Add(lim.MaxFutureSkew)) || ts.Before(now.Add(-lim.MaxAge)) {
		return api.Errorf("timestamp_ms", api.CodeOutOfRange,
			"timestamp_ms %d is more than %s ahead of or %s behind the mixer's clock", r.TimestampMs, lim.MaxFutureSkew, lim.MaxAge)
	}
	if r.Server != nil {
		if fe := validateServer(r.Server); fe != nil {
			return api.Under("server", fe)
		}
	}
	if r.Security != nil {
		if fe := validateSecurity(r.Security); fe != nil {
			return api.Under("security", fe)
		}
	}
	if len(r.Calls) > lim.MaxCallsPerReport {
		return api.Errorf("calls", api.CodeTooMany, "%d calls in one report, at most %d", len(r.Calls), lim.MaxCallsPerReport)
	}
	for i := range r.Calls {
		if fe := validateCall(&r.Calls[i]); fe != nil {
			return api.Under(api.Index("calls", i), fe)
		}
	}
	if len(r.UnitRoutes) > lim.MaxDenialsPerReport {
		return api.Errorf("unit_routes", api.CodeTooMany, "%d unit routes in one report, at most %d",
			len(r.UnitRoutes), lim.MaxDenialsPerReport)
	}
	for i := range r.UnitRoutes {
		if fe := validateUnitRoute(&r.UnitRoutes[i]); fe != nil {
			return api.Under(api.Index("unit_routes", i), fe)
		}
	}
	if drops != nil {
		keepDenials(r, lim.MaxDenialsPerReport, drops)
		return nil
	}
	if len(r.DryRunDenials) > lim.MaxDenialsPerReport {
		return api.Errorf("dry_run_denials", api.CodeTooMany, "%d dry-run denials in one report, at most %d",
			len(r.DryRunDenials), lim.MaxDenialsPerReport)
	}
	for i := range r.DryRunDenials {
		if fe := validateDenial(&r.DryRunDenials[i]); fe != nil {
			return api.Under(api.Index("dry_run_denials", i), fe)
		}
	}
	return nil
}

// keepDenials compacts r's denials to the good ones, at most max, in
// order, and counts the others by reason.
func keepDenials(r *api.Report, max int, drops *DenialDrops) {
	kept := r.DryRunDenials[:0]
	for i := range r.DryRunDenials {
		d := &r.DryRunDenials[i]
		switch fe := validateDenial(d); {
		case fe != nil:
			drops.add(fe.Code, 1)
		case len(kept) >= max:
			drops.add(api.CodeTooMany, 1)
		default:
			kept = append(kept, *d)
		}
	}
	clear(r.DryRunDenials[len(kept):])
	r.DryRunDenials = kept
}

func validateServer(s *api.ServerStats) *api.FieldError {
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
		field := api.Join("requests_by_level", strconv.Itoa(int(level)))
		if level < 0 || level > api.MaxLevel {
			return api.Errorf(field, api.CodeOutOfRange, "level %d is outside [0, %d]", level, api.MaxLevel)
		}
		if n < 0 {
			return api.Errorf(field, api.CodeOutOfRange, "%d is negative", n)
		}
	}
	for prio, n := range s.RequestsByPriority {
		if prio < 0 || prio > api.MaxPriority {
			return api.Errorf(priorityField(prio), api.CodeOutOfRange, "priority %d is outside [0, %d]", prio, api.MaxPriority)
		}
		if n < 0 {
			return api.Errorf(priorityField(prio), api.CodeOutOfRange, "%d is negative", n)
		}
	}
	return nil
}

func priorityField(prio int32) string {
	return api.Join("requests_by_priority", strconv.Itoa(int(prio)))
}

func validateCall(c *api.Call) *api.FieldError {
	if fe := api.Name("callee_service", c.CalleeService, true); fe != nil {
		return fe
	}
	if fe := api.Name("callee_instance", c.CalleeInstance, true); fe != nil {
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
	if fe := checkCount("plaintext", c.Plaintext); fe != nil {
		return fe
	}
	if c.Errors > c.Requests {
		return api.Errorf("errors", api.CodeOutOfRange, "errors %d exceed requests %d", c.Errors, c.Requests)
	}
	if c.Timeouts > c.Requests {
		return api.Errorf("timeouts", api.CodeOutOfRange, "timeouts %d exceed requests %d", c.Timeouts, c.Requests)
	}
	if fe := checkFloat("latency_ms_avg", c.LatencyMsAvg, math.MaxFloat64); fe != nil {
		return fe
	}
	return checkFloat("latency_ms_p99", c.LatencyMsP99, math.MaxFloat64)
}

func validateDenial(d *api.DryRunDenial) *api.FieldError {
	if fe := api.Name("callee_service", d.CalleeService, true); fe != nil {
		return fe
	}
	if fe := api.Name("caller_service", d.CallerService, true); fe != nil {
		return fe
	}
	if fe := api.Name("rule", d.Rule, true); fe != nil {
		return fe
	}
	return checkCount("count", d.Count)
}

func validateSecurity(s *api.SecurityStats) *api.FieldError {
	if fe := checkCounts("identities", s.Identities, api.IdentityStatKeys); fe != nil {
		return fe
	}
	return checkCounts("connections", s.Connections, api.ConnectionStatKeys)
}

// checkCounts accepts counts >= 0 under the keys given.
func checkCounts(field string, m map[string]int64, keys []string) *api.FieldError {
	for k, v := range m {
		if !slices.Contains(keys, k) {
			return api.Errorf(api.Join(field, k), api.CodeUnknownField, "unknown key %q; one of %s", k, strings.Join(keys, ", "))
		}
		if fe := checkCount(api.Join(field, k), v); fe != nil {
			return fe
		}
	}
	return nil
}

func validateUnitRoute(u *api.UnitRoute) *api.FieldError {
	if fe := api.Name("callee_service", u.CalleeService, true); fe != nil {
		return fe
	}
	if fe := api.Name("rule", u.Rule, true); fe != nil {
		return fe
	}
	if fe := api.Name("unit", u.Unit, true); fe != nil {
		return fe
	}
	switch u.Outcome {
	case unitrouting.Observed, unitrouting.ObservedDenied, unitrouting.Routed, unitrouting.Denied, unitrouting.FellBack, unitrouting.Failed:
	default:
		return api.Errorf("outcome", api.CodeInvalidValue, "want observed, observed_denied, routed, denied, fallback or failed, got %q", u.Outcome)
	}
	return checkCount("count", u.Count)
}

func checkCount(field string, v int64) *api.FieldError {
	if v < 0 {
		return api.Errorf(field, api.CodeOutOfRange, "%d is negative", v)
	}
	return nil
}

// checkFloat accepts finite numbers in [0, max]. JSON cannot spell NaN or
// Inf, but a huge literal rounds to Inf and Go callers can pass either.
func checkFloat(field string, v, max float64) *api.FieldError {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > max {
		return api.Errorf(field, api.CodeOutOfRange, "%g is outside [0, %g]", v, max)
	}
	return nil
}
