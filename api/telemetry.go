package api

import "time"

// POST /v1/telemetry on the telemetry-mixer takes one Report (a JSON object)
// or several (a JSON array), answers 202 when it accepted all of them, 400
// naming the first bad field (and keeps none), 429 when its queue is full
// (send the same reports again later). Bad dry-run denials are the
// exception: they are left out of a report otherwise good, which is kept
// (the 202 says how many). docs/telemetry.md explains each field.

// HeaderSentAt is the request header in which a data plane may say when
// it sent a telemetry request, in ms since the epoch on its own clock. A
// mixer that finds it more than ClockSkewTolerance away from its own clock
// takes the difference for the data plane's clock skew: it checks the
// reports' timestamp_ms against the data plane's clock and moves them onto
// its own (counted in sextant_mixer_reports_clock_corrected_total), so that
// a data plane whose clock is off neither has its reports refused nor
// places them in windows that are not theirs.
const HeaderSentAt = "X-Sextant-Sent-At"

// ClockSkewTolerance is how far HeaderSentAt may be from the mixer's clock
// before the mixer corrects the reports' timestamps: about a window, more
// than a request takes on its way (one delayed longer is taken for skew:
// its reports move later by the delay, which the calculator's ring of
// windows absorbs).
const ClockSkewTolerance = time.Second

// MaxPriority is the highest business priority of a request; 0 is the lowest.
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

// Report is what one data plane sends for one window.
type Report struct {
	Reporter      *Reporter      `json:"reporter"`
	WindowMs      int64          `json:"window_ms"`
	TimestampMs   int64          `json:"timestamp_ms"`
	Server        *ServerStats   `json:"server,omitempty"`
	Calls         []Call         `json:"calls,omitempty"`
	DryRunDenials []DryRunDenial `json:"dry_run_denials,omitempty"`
	Security      *SecurityStats `json:"security,omitempty"`
	// UnitRoutes count what the callees' unit_routing rules decided of the
	// reporter's requests (docs/units.md).
	UnitRoutes []UnitRoute `json:"unit_routes,omitempty"`
}

// SecurityStats is what the reporting instance's server saw of its
// callers' identities and connections in the window (docs/security.md).
type SecurityStats struct {
	// Identities counts requests by their caller's identity and what the
	// identity policy did: keys in IdentityStatKeys.
	Identities map[string]int64 `json:"identities,omitempty"`
	// Connections counts the connections its TLS listener took: keys in
	// ConnectionStatKeys.
	Connections map[string]int64 `json:"connections,omitempty"`
}

// IdentityStatKeys are the keys of SecurityStats.Identities: verified, and
// for each of missing, invalid and expired the requests served with the
// declared name (<outcome>), served and reported as dry-run denials
// (<outcome>_dry_run) and refused (<outcome>_denied).
var IdentityStatKeys = []string{
	IdentityVerified,
	IdentityMissing, IdentityMissing + "_dry_run", IdentityMissing + "_denied",
	IdentityInvalid, IdentityInvalid + "_dry_run", IdentityInvalid + "_denied",
	IdentityExpired, IdentityExpired + "_dry_run", IdentityExpired + "_denied",
}

// ConnectionStatKeys are the keys of SecurityStats.Connections: TLS
// handshakes completed, plaintext connections served (permissive),
// plaintext connections refused (strict), handshakes that failed.
var ConnectionStatKeys = []string{"tls", "plaintext", "plaintext_refused", "handshake_failed"}

// Reporter identifies the data plane that sent a report.
type Reporter struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	Cluster  string `json:"cluster,omitempty"`
	Zone     string `json:"zone,omitempty"`
}

// ServerStats is what the reporting instance saw of its own serving side.
type ServerStats struct {
	Requests       int64   `json:"requests"`
	CPUUtil        float64 `json:"cpu_util"`
	QueueTimeMsAvg float64 `json:"queue_time_ms_avg"`
	QueueTimeMsP99 float64 `json:"queue_time_ms_p99"`
	Inflight       int64   `json:"inflight"`
	ClientTimeouts int64   `json:"client_timeouts"`
	// Priority (0..127, as a JSON object key) to requests in the window.
	RequestsByPriority map[int32]int64 `json:"requests_by_priority,omitempty"`
	// Admission level (Level(priority, user priority), 0..MaxLevel) to
	// requests in the window; what shedding within a priority is measured with.
	RequestsByLevel map[int32]int64 `json:"requests_by_level,omitempty"`
}

// Call is what the reporter saw of its calls to one callee instance.
type Call struct {
	CalleeService  string  `json:"callee_service"`
	CalleeInstance string  `json:"callee_instance"`
	Requests       int64   `json:"requests"`
	Errors         int64   `json:"errors"`
	Timeouts       int64   `json:"timeouts"`
	LatencyMsAvg   float64 `json:"latency_ms_avg"`
	LatencyMsP99   float64 `json:"latency_ms_p99"`
	// Plaintext counts the calls of the window sent in plaintext to an
	// instance that does not advertise mTLS (clients with data-plane
	// encryption only; docs/security.md).
	Plaintext int64 `json:"plaintext,omitempty"`
}

// DryRunDenial counts requests an access rule in dry_run mode would have denied.
type DryRunDenial struct {
	CalleeService string `json:"callee_service"`
	CallerService string `json:"caller_service"`
	Rule          string `json:"rule"`
	Count         int64  `json:"count"`
}

// UnitRoute counts the requests to a callee that one of its unit_routing
// rules matched, by what became of them: observed (routed as before; they
// would have gone to Unit), observed_denied, routed, denied, fallback or
// failed (api/unitrouting).
type UnitRoute struct {
	CalleeService string `json:"callee_service"`
	Rule          string `json:"rule"`
	Unit          string `json:"unit"`
	Outcome       string `json:"outcome"`
	Count         int64  `json:"count"`
}

// Records is how many records the report turns into on the way to the
// calculator: one per call edge, dry-run denial and unit route, plus one for
// the server part.
func (r *Report) Records() int {
	n := len(r.Calls) + len(r.DryRunDenials) + len(r.UnitRoutes)
	if r.Server != nil {
		n++
	}
	return n
}
