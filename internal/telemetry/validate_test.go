package telemetry_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/telemetry"
)

var now = time.UnixMilli(1_763_769_600_000)

// validReport is the example report of docs/telemetry.md, at the test's clock.
func validReport() map[string]any {
	return map[string]any{
		"reporter":     map[string]any{"service": "feed-api", "instance": "10.0.0.1:8080", "cluster": "c1", "zone": "z1"},
		"window_ms":    1000,
		"timestamp_ms": now.UnixMilli(),
		"server": map[string]any{
			"requests": 5400, "cpu_util": 0.63, "queue_time_ms_avg": 4.1, "queue_time_ms_p99": 12.5,
			"inflight": 12, "client_timeouts": 2,
			"requests_by_priority": map[string]any{"0": 100, "64": 5000, "127": 300},
		},
		"calls": []any{map[string]any{
			"callee_service": "comment-svc", "callee_instance": "10.0.0.9:9000",
			"requests": 1200, "errors": 3, "timeouts": 1, "latency_ms_avg": 8.2, "latency_ms_p99": 31.0,
		}},
		"dry_run_denials": []any{map[string]any{
			"callee_service": "pay-svc", "caller_service": "feed-api", "rule": "allow-list", "count": 4,
		}},
		"unit_routes": []any{map[string]any{
			"callee_service": "comment-svc", "rule": "gold-to-c2", "unit": "c2", "outcome": "observed", "count": 310,
		}},
	}
}

func encode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeValid(t *testing.T) {
	lim := telemetry.DefaultLimits()
	one, fe := telemetry.Decode(encode(t, validReport()), lim, now)
	if fe != nil {
		t.Fatalf("valid report rejected: %v", fe)
	}
	if len(one) != 1 || one[0].Reporter.Service != "feed-api" || one[0].Server.RequestsByPriority[64] != 5000 ||
		one[0].Calls[0].LatencyMsP99 != 31 || one[0].DryRunDenials[0].Count != 4 || one[0].UnitRoutes[0].Count != 310 {
		t.Fatalf("decoded report differs from what was sent: %+v", one[0])
	}
	if got := one[0].Records(); got != 4 {
		t.Fatalf("records = %d, want 4 (server, one call, one denial, one unit route)", got)
	}
	many, fe := telemetry.Decode(encode(t, []any{validReport(), validReport()}), lim, now)
	if fe != nil || len(many) != 2 {
		t.Fatalf("array of two: %v reports, err %v", len(many), fe)
	}
}

// TestDecodeRejects covers every class of bad input: each is refused with the
// field it is about, and nothing is returned.
func TestDecodeRejects(t *testing.T) {
	lim := telemetry.DefaultLimits()
	lim.MaxCallsPerReport = 3
	lim.MaxReportsPerRequest = 2
	type edit func(r map[string]any)
	set := func(path string, v any) edit {
		return func(r map[string]any) {
			keys := strings.Split(path, ".")
			m := r
			for _, k := range keys[:len(keys)-1] {
				switch x := m[k].(type) {
				case map[string]any:
					m = x
				case []any:
					m = x[0].(map[string]any)
				}
			}
			if v == nil {
				delete(m, keys[len(keys)-1])
				return
			}
			m[keys[len(keys)-1]] = v
		}
	}
	raw := func(s string) []byte { return []byte(s) }
	withReport := func(edits ...edit) []byte {
		r := validReport()
		for _, e := range edits {
			e(r)
		}
		b, _ := json.Marshal(r)
		return b
	}
	calls := func(n int) edit {
		return func(r map[string]any) {
			var cs []any
			for i := 0; i < n; i++ {
				cs = append(cs, map[string]any{"callee_service": "s", "callee_instance": fmt.Sprint(i), "requests": 1})
			}
			r["calls"] = cs
		}
	}
	cases := []struct {
		name  string
		body  []byte
		code  string
		field string
	}{
		{"empty body", raw(""), api.CodeMalformedJSON, ""},
		{"not json", raw("hello"), api.CodeMalformedJSON, ""},
		{"truncated", raw(`{"reporter":{"service":"a"`), api.CodeMalformedJSON, ""},
		{"trailing garbage", append(withReport(), '}'), api.CodeMalformedJSON, ""},
		{"scalar", raw(`42`), api.CodeMalformedJSON, ""},
		{"empty array", raw(`[]`), api.CodeInvalidValue, ""},
		{"too many reports", encode(t, []any{validReport(), validReport(), validReport()}), api.CodeTooMany, ""},
		{"unknown top-level field", withReport(set("extra", 1)), api.CodeUnknownField, "extra"},
		{"unknown nested field", withReport(set("server.cpu", 0.5)), api.CodeUnknownField, "server.cpu"},
		{"unknown field in call", withReport(set("calls.rps", 1)), api.CodeUnknownField, "calls[0].rps"},
		{"missing reporter", withReport(set("reporter", nil)), api.CodeMissingField, "reporter"},
		{"reporter not an object", withReport(set("reporter", "feed-api")), api.CodeInvalidType, "reporter"},
		{"missing service", withReport(set("reporter.service", nil)), api.CodeMissingField, "reporter.service"},
		{"missing instance", withReport(set("reporter.instance", "")), api.CodeMissingField, "reporter.instance"},
		{"service with space", withReport(set("reporter.service", "feed api")), api.CodeInvalidValue, "reporter.service"},
		{"service too long", withReport(set("reporter.service", strings.Repeat("s", 300))), api.CodeOutOfRange, "reporter.service"},
		{"missing window", withReport(set("window_ms", nil)), api.CodeMissingField, "window_ms"},
		{"window too short", withReport(set("window_ms", 5)), api.CodeOutOfRange, "window_ms"},
		{"window too long", withReport(set("window_ms", 3_600_000)), api.CodeOutOfRange, "window_ms"},
		{"negative window", withReport(set("window_ms", -1000)), api.CodeOutOfRange, "window_ms"},
		{"window as string", withReport(set("window_ms", "1000")), api.CodeInvalidType, "window_ms"},
		{"missing timestamp", withReport(set("timestamp_ms", nil)), api.CodeMissingField, "timestamp_ms"},
		{"timestamp in the future", withReport(set("timestamp_ms", now.Add(time.Hour).UnixMilli())), api.CodeOutOfRange, "timestamp_ms"},
		{"timestamp too old", withReport(set("timestamp_ms", now.Add(-2*time.Hour).UnixMilli())), api.CodeOutOfRange, "timestamp_ms"},
		{"timestamp as float", withReport(set("timestamp_ms", 1.5)), api.CodeInvalidType, "timestamp_ms"},
		{"negative requests", withReport(set("server.requests", -1)), api.CodeOutOfRange, "server.requests"},
		{"requests as string", withReport(set("server.requests", "5400")), api.CodeInvalidType, "server.requests"},
		{"requests overflow int64", raw(strings.Replace(string(withReport()), `"requests":5400`, `"requests":99999999999999999999`, 1)), api.CodeOutOfRange, "server.requests"},
		{"requests fractional", withReport(set("server.requests", 1.5)), api.CodeInvalidType, "server.requests"},
		{"cpu above 1", withReport(set("server.cpu_util", 1.5)), api.CodeOutOfRange, "server.cpu_util"},
		{"negative cpu", withReport(set("server.cpu_util", -0.1)), api.CodeOutOfRange, "server.cpu_util"},
		{"NaN as string", withReport(set("server.cpu_util", "NaN")), api.CodeInvalidType, "server.cpu_util"},
		{"Inf as string", withReport(set("calls.latency_ms_avg", "Infinity")), api.CodeInvalidType, "calls[0].latency_ms_avg"},
		{"huge number rounds to Inf", raw(strings.Replace(string(withReport()), `"latency_ms_p99":31`, `"latency_ms_p99":1e400`, 1)), api.CodeOutOfRange, "calls[0].latency_ms_p99"},
		{"bare NaN literal", raw(strings.Replace(string(withReport()), `"cpu_util":0.63`, `"cpu_util":NaN`, 1)), api.CodeMalformedJSON, ""},
		{"negative queue time", withReport(set("server.queue_time_ms_avg", -4)), api.CodeOutOfRange, "server.queue_time_ms_avg"},
		{"negative inflight", withReport(set("server.inflight", -2)), api.CodeOutOfRange, "server.inflight"},
		{"priority out of range", withReport(set("server.requests_by_priority", map[string]any{"200": 1})), api.CodeOutOfRange, "server.requests_by_priority.200"},
		{"priority not a number", withReport(set("server.requests_by_priority", map[string]any{"high": 1})), api.CodeInvalidType, "server.requests_by_priority.high"},
		{"negative priority count", withReport(set("server.requests_by_priority", map[string]any{"3": -1})), api.CodeOutOfRange, "server.requests_by_priority.3"},
		{"calls not an array", withReport(set("calls", map[string]any{})), api.CodeInvalidType, "calls"},
		{"too many calls", withReport(calls(4)), api.CodeTooMany, "calls"},
		{"missing callee service", withReport(set("calls.callee_service", nil)), api.CodeMissingField, "calls[0].callee_service"},
		{"negative errors", withReport(set("calls.errors", -3)), api.CodeOutOfRange, "calls[0].errors"},
		{"errors above requests", withReport(set("calls.errors", 5000)), api.CodeOutOfRange, "calls[0].errors"},
		{"timeouts above requests", withReport(set("calls.timeouts", 5000)), api.CodeOutOfRange, "calls[0].timeouts"},
		{"negative latency", withReport(set("calls.latency_ms_avg", -1)), api.CodeOutOfRange, "calls[0].latency_ms_avg"},
		{"denials not an array", withReport(set("dry_run_denials", map[string]any{})), api.CodeInvalidType, "dry_run_denials"},
		{"denial count as string", withReport(set("dry_run_denials.count", "4")), api.CodeInvalidType, "dry_run_denials[0].count"},
		{"unknown field in denial", withReport(set("dry_run_denials.extra", 1)), api.CodeUnknownField, "dry_run_denials[0].extra"},
		{"unit routes not an array", withReport(set("unit_routes", map[string]any{})), api.CodeInvalidType, "unit_routes"},
		{"unknown unit outcome", withReport(set("unit_routes.outcome", "moved")), api.CodeInvalidValue, "unit_routes[0].outcome"},
		{"unit route without a rule", withReport(set("unit_routes.rule", nil)), api.CodeMissingField, "unit_routes[0].rule"},
		{"unit route without a unit", withReport(set("unit_routes.unit", "")), api.CodeMissingField, "unit_routes[0].unit"},
		{"negative unit route count", withReport(set("unit_routes.count", -1)), api.CodeOutOfRange, "unit_routes[0].count"},
		{"bad denial and bad server", withReport(set("dry_run_denials.caller_service", ""), set("server.requests", -1)), api.CodeOutOfRange, "server.requests"},
		{"second report bad", encode(t, []any{validReport(), func() map[string]any {
			r := validReport()
			r["server"].(map[string]any)["requests"] = -5
			return r
		}()}), api.CodeOutOfRange, "[1].server.requests"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reports, fe := telemetry.Decode(tc.body, lim, now)
			if fe == nil {
				t.Fatalf("accepted %d reports, want %s on %q", len(reports), tc.code, tc.field)
			}
			if reports != nil {
				t.Errorf("returned %d reports with an error", len(reports))
			}
			if fe.Code != tc.code || fe.Field != tc.field {
				t.Errorf("got %s on %q (%s), want %s on %q", fe.Code, fe.Field, fe.Message, tc.code, tc.field)
			}
			if fe.Message == "" {
				t.Error("error without a message")
			}
		})
	}
}

func TestValidateRejectsNaNFromGoCallers(t *testing.T) {
	var r api.Report
	if err := json.Unmarshal(encode(t, validReport()), &r); err != nil {
		t.Fatal(err)
	}
	r.Server.CPUUtil = nan()
	fe := telemetry.Validate(&r, telemetry.DefaultLimits(), now, "")
	if fe == nil || fe.Field != "server.cpu_util" {
		t.Fatalf("NaN cpu_util: got %v", fe)
	}
}

func nan() float64 { var z float64; return z / z }

// A report whose only fault is in its dry-run denials is accepted without
// them: the bad denials and those past the limit are left out and counted
// by reason, the server and call data are kept. Validate stays strict.
func TestDecodeDropsBadDenials(t *testing.T) {
	lim := telemetry.DefaultLimits()
	lim.MaxDenialsPerReport = 3
	denial := func(caller, rule string, count int) map[string]any {
		return map[string]any{"callee_service": "pay-svc", "caller_service": caller, "rule": rule, "count": count}
	}
	r := validReport()
	r["dry_run_denials"] = []any{
		denial("", "allow-list", 2),         // a caller without a name
		denial("feed-api", "allow-list", 4), // kept
		denial("bad name", "allow-list", 1), // whitespace
		denial("a", "allow-list", -1),       // negative
		denial("b", "allow-list", 1),        // kept
		denial("c", "", 1),                  // no rule
		denial("d", "allow-list", 1),        // kept
		denial("e", "allow-list", 1),        // past the limit
		denial("f", "allow-list", 1),        // past the limit
	}
	body := encode(t, []any{r, validReport()})
	check := func(name string, reports []api.Report, drops telemetry.DenialDrops, fe *api.FieldError) {
		t.Helper()
		if fe != nil {
			t.Fatalf("%s: refused: %v", name, fe)
		}
		if len(reports) != 2 || reports[0].Server == nil || reports[0].Server.Requests != 5400 || len(reports[0].Calls) != 1 {
			t.Fatalf("%s: the server and call data were not kept: %+v", name, reports)
		}
		var callers []string
		for _, d := range reports[0].DryRunDenials {
			callers = append(callers, d.CallerService)
		}
		if fmt.Sprint(callers) != "[feed-api b d]" {
			t.Errorf("%s: kept denials of %v, want [feed-api b d]", name, callers)
		}
		if len(reports[1].DryRunDenials) != 1 {
			t.Errorf("%s: the second report lost its good denial", name)
		}
		want := telemetry.DenialDrops{api.CodeMissingField: 2, api.CodeInvalidValue: 1, api.CodeOutOfRange: 1, api.CodeTooMany: 2}
		if fmt.Sprint(drops) != fmt.Sprint(want) || drops.Total() != 6 {
			t.Errorf("%s: dropped %v, want %v", name, drops, want)
		}
		for i := range reports {
			if fe := telemetry.Validate(&reports[i], lim, now, ""); fe != nil {
				t.Errorf("%s: report %d as kept fails the strict check: %v", name, i, fe)
			}
		}
	}
	reports, drops, fe := telemetry.DecodeCounting(body, lim, now)
	check("DecodeCounting", reports, drops, fe)
	var dec telemetry.Decoder
	for i := 0; i < 2; i++ { // the second time in the reports the first left
		reports, fe = dec.Decode(body, lim, now)
		check("Decoder", reports, dec.Dropped(), fe)
	}
	if _, fe := dec.Decode(encode(t, validReport()), lim, now); fe != nil || dec.Dropped() != nil {
		t.Errorf("a good report: %v, dropped %v", fe, dec.Dropped())
	}

	var strict api.Report
	if err := json.Unmarshal(encode(t, r), &strict); err != nil {
		t.Fatal(err)
	}
	if fe := telemetry.Validate(&strict, lim, now, ""); fe == nil || fe.Field != "dry_run_denials" {
		t.Errorf("Validate of too many denials: %v", fe)
	}
	strict.DryRunDenials = strict.DryRunDenials[:1]
	if fe := telemetry.Validate(&strict, lim, now, ""); fe == nil || fe.Field != "dry_run_denials[0].caller_service" {
		t.Errorf("Validate of an unnamed caller: %v", fe)
	}
}

// The security part: counts under the documented keys, none negative.
func TestDecodeSecurity(t *testing.T) {
	lim := telemetry.DefaultLimits()
	r := validReport()
	r["security"] = map[string]any{"identities": map[string]any{"verified": 9, "missing_denied": 1},
		"connections": map[string]any{"tls": 2, "plaintext": 1, "plaintext_refused": 0, "handshake_failed": 3}}
	got, fe := telemetry.Decode(encode(t, r), lim, now)
	if fe != nil {
		t.Fatalf("a report with a security part rejected: %v", fe)
	}
	if sec := got[0].Security; sec == nil || sec.Identities["verified"] != 9 || sec.Connections["handshake_failed"] != 3 {
		t.Fatalf("decoded security part %+v", got[0].Security)
	}
	if got[0].Records() != 4 { // server, call, denial, unit route: not the security part
		t.Fatalf("records = %d: the security part is not forwarded", got[0].Records())
	}
	for _, c := range []struct {
		security    map[string]any
		field, code string
	}{
		{map[string]any{"identities": map[string]any{"trusted": 1}}, "security.identities.trusted", api.CodeUnknownField},
		{map[string]any{"connections": map[string]any{"tls": -1}}, "security.connections.tls", api.CodeOutOfRange},
		{map[string]any{"spoofed": 1}, "security.spoofed", api.CodeUnknownField},
	} {
		r["security"] = c.security
		_, fe := telemetry.Decode(encode(t, r), lim, now)
		if fe == nil || fe.Field != c.field || fe.Code != c.code {
			t.Errorf("security %v: %v, want %s %s", c.security, fe, c.field, c.code)
		}
	}
}
