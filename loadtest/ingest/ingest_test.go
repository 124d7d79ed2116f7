package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/jsonx"
	"github.com/sextant-mesh/sextant/internal/telemetry"
	"github.com/sextant-mesh/sextant/internal/testenv"
)

// The comparison is only fair if both servers answer alike; these tests hold
// the baseline to the mixer's answers for the same bodies.

// running is one in-process server of the test.
type running struct {
	url  string
	sink *countingSink
}

func startBoth(t *testing.T) map[string]running {
	t.Helper()
	out := map[string]running{}
	for _, kind := range []string{"edge", "baseline"} {
		sink := &countingSink{}
		srv, err := startServer(kind, "127.0.0.1:0", sink)
		if err != nil {
			t.Fatalf("start %s: %v", kind, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Stop(ctx)
		})
		out[kind] = running{url: "http://" + srv.Addr() + "/v1/telemetry", sink: sink}
	}
	return out
}

// post returns the status and the accepted count (-1 when the answer has none).
func post(t *testing.T, url string, body []byte) (int, int) {
	t.Helper()
	resp, err := testenv.HTTP.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var answer struct {
		Accepted *int `json:"accepted"`
		Error    *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	if resp.StatusCode != http.StatusAccepted && answer.Error == nil {
		t.Fatalf("answer %d without an error object: %q", resp.StatusCode, raw)
	}
	if answer.Accepted == nil {
		return resp.StatusCode, -1
	}
	return resp.StatusCode, *answer.Accepted
}

func TestBothServersAnswerAlike(t *testing.T) {
	srv := startBoth(t)
	valid := makeBodies(1, 3, 5, 1)[0]
	var one []json.RawMessage
	if err := json.Unmarshal(valid, &one); err != nil {
		t.Fatal(err)
	}
	report := string(one[0])
	cases := []struct {
		name       string
		body       string
		wantStatus int
	}{
		{"array of three", string(valid), 202},
		{"one object", report, 202},
		{"negative requests", strings.Replace(report, `"requests":`, `"requests":-`, 1), 400},
		{"unknown field", strings.Replace(report, `"window_ms"`, `"surprise":1,"window_ms"`, 1), 400},
		{"cpu_util 1.5", replaceValue(report, "cpu_util", "1.5"), 400},
		{"empty array", "[]", 400},
		{"empty body", "", 400},
		{"not JSON", "{", 400},
		{"string for a number", replaceValue(report, "window_ms", `"1000"`), 400},
		{"trailing data", report + " {}", 400},
		{"too large", "[" + strings.Repeat(report+",", maxBody/len(report)) + report + "]", 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, acc := post(t, srv["edge"].url, []byte(tc.body))
			bst, bacc := post(t, srv["baseline"].url, []byte(tc.body))
			if st != tc.wantStatus || bst != st || bacc != acc {
				t.Errorf("sextant %d accepted %d, baseline %d accepted %d; want status %d for both",
					st, acc, bst, bacc, tc.wantStatus)
			}
		})
	}
	s, b := srv["edge"].sink, srv["baseline"].sink
	if s.reports.Load() != 4 || b.reports.Load() != 4 || s.records.Load() != b.records.Load() {
		t.Errorf("sinks: sextant %d reports %d records, baseline %d reports %d records; want 4 reports each, equal records",
			s.reports.Load(), s.records.Load(), b.reports.Load(), b.records.Load())
	}
}

// replaceValue swaps the first numeric value of field in a JSON object.
func replaceValue(obj, field, value string) string {
	key := fmt.Sprintf(`"%s":`, field)
	i := strings.Index(obj, key) + len(key)
	j := i + strings.IndexAny(obj[i:], ",}")
	return obj[:i] + value + obj[j:]
}

// BenchmarkDecode splits one default request body (10 reports, 50 edges
// each) into what both servers share and what differs, without HTTP:
// go test -run '^$' -bench Decode -benchmem ./loadtest/ingest
func BenchmarkDecode(b *testing.B) {
	body := makeBodies(1, 10, 50, 7)[0]
	lim := telemetry.DefaultLimits()
	var decoded []api.Report
	if fe := jsonx.Decode(body, &decoded); fe != nil {
		b.Fatal(fe)
	}
	run := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("sextant-decode+validate", func() error { _, fe := telemetry.Decode(body, lim, time.Now()); return asErr(fe) })
	run("std-decode+validate", func() error { _, err := decodeStd(bytes.NewReader(body), lim, time.Now()); return err })
	run("sonic-decode-only", func() error { var r []api.Report; return asErr(jsonx.Decode(body, &r)) })
	run("validate-only", func() error { return validateAll(decoded, true, lim, time.Now()) })
}

// asErr keeps a nil *FieldError from becoming a non-nil error.
func asErr(fe *api.FieldError) error {
	if fe == nil {
		return nil
	}
	return fe
}
