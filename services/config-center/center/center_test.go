package center_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
)

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

func (r reply) errorField() (string, string) {
	var e struct {
		Error struct{ Code, Field string } `json:"error"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Code, e.Error.Field
}

type apiClient struct {
	t     testing.TB
	base  string
	token string
}

func (c apiClient) do(method, path, body string, headers ...string) reply {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

func setup(t *testing.T, tweak func(*center.Config)) (*testenv.Etcd, string, apiClient) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	cc := centertest.Start(t, etcd, prefix, tweak)
	return etcd, prefix, apiClient{t: t, base: "http://" + cc.Addr(), token: centertest.AdminToken}
}

// sameJSON compares two JSON documents by value.
func sameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

func documentOf(t testing.TB, r reply) []byte {
	t.Helper()
	var e struct {
		Document json.RawMessage `json:"document"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("entry %s: %v", r.body, err)
	}
	return e.Document
}

var validDocs = map[string]struct{ scope, doc string }{
	"rpc_timeout":    {"feed-api/comment-svc", `{"*": {"rpc_timeout_ms": 800, "conn_timeout_ms": 50}, "GetComment": {"rpc_timeout_ms": 300, "conn_timeout_ms": 20}}`},
	"retry":          {"feed-api/comment-svc", `{"*": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 2, "max_duration_ms": 1000, "cb_policy": {"error_rate": 0.1}}, "backoff_policy": {"backoff_type": "fixed", "cfg_items": {"fix_ms": 20}}}}}`},
	"circuit_break":  {"feed-api/comment-svc", `{"GetComment": {"enable": true, "err_rate": 0.3, "min_sample": 100}}`},
	"degradation":    {"feed-api/comment-svc", `{"enable": true, "percentage": 30}`},
	"limit":          {"comment-svc", `{"connection_limit": 1000, "qps_limit": 5000}`},
	"access_control": {"pay-svc", `{"rules": [{"name": "allow-list", "type": "allow", "callers": ["feed-api", "order-svc"], "mode": "dry_run"}, {"name": "no-batch", "type": "deny", "callers": ["batch-job"], "methods": ["Refund"], "mode": "enforce"}], "identity": {"missing": "dry_run", "invalid": "deny", "expired": "allow"}, "tls": "strict"}`},
	"unit_routing":   {"comment-svc", `{"rules": [{"name": "vip-to-c2", "match": {"headers": {"x-tier": "vip"}}, "unit": "c2", "mode": "enforce"}, {"name": "batch", "match": {"caller": "batch-job"}, "unit": "c3", "mode": "observe"}]}`},
}

func TestEveryKindRoundTrips(t *testing.T) {
	_, _, cc := setup(t, nil)
	for kind, v := range validDocs {
		t.Run(kind, func(t *testing.T) {
			path := "/v1/configs/" + kind + "/" + v.scope
			put := cc.do("PUT", path, v.doc)
			if put.status != 200 || put.header.Get("ETag") == "" {
				t.Fatalf("PUT: %s", put)
			}
			got := cc.do("GET", path, "")
			if got.status != 200 || got.header.Get("ETag") != put.header.Get("ETag") {
				t.Fatalf("GET: %s (ETag %q, PUT gave %q)", got, got.header.Get("ETag"), put.header.Get("ETag"))
			}
			if !sameJSON(t, documentOf(t, got), []byte(v.doc)) {
				t.Fatalf("stored %s, wrote %s", documentOf(t, got), v.doc)
			}
		})
	}
	// Everything that applies to comment-svc, as server or client.
	r := cc.do("GET", "/v1/configs?service=comment-svc", "")
	var list struct {
		Configs []api.Entry `json:"configs"`
	}
	if json.Unmarshal(r.body, &list); r.status != 200 {
		t.Fatalf("list: %s", r)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		r = cc.do("GET", "/v1/configs?service=comment-svc", "")
		_ = json.Unmarshal(r.body, &list)
		if len(list.Configs) != 6 { // 4 client kinds + limit + unit_routing
			return fmt.Errorf("%d configs list comment-svc: %s", len(list.Configs), r.body)
		}
		return nil
	})
}

func TestInvalidDocumentsAreRefusedAndNothingWritten(t *testing.T) {
	_, _, cc := setup(t, nil)
	for _, tc := range []struct {
		name, path, doc, code, field string
	}{
		{"malformed", "/v1/configs/rpc_timeout/a/b", `{"*":`, "malformed_json", ""},
		{"not an object", "/v1/configs/limit/b", `[1,2]`, "invalid_type", ""},
		{"unknown field", "/v1/configs/rpc_timeout/a/b", `{"*": {"rpc_timeout": 100}}`, "unknown_field", "*.rpc_timeout"},
		{"wrong type", "/v1/configs/rpc_timeout/a/b", `{"*": {"rpc_timeout_ms": "100ms"}}`, "invalid_type", "*.rpc_timeout_ms"},
		{"negative timeout", "/v1/configs/rpc_timeout/a/b", `{"*": {"rpc_timeout_ms": -1}}`, "out_of_range", "*.rpc_timeout_ms"},
		{"retry type", "/v1/configs/retry/a/b", `{"*": {"enable": true, "type": 7}}`, "out_of_range", "*.type"},
		{"retry without policy", "/v1/configs/retry/a/b", `{"*": {"enable": true, "type": 0}}`, "missing_field", "*.failure_policy"},
		{"too many retries", "/v1/configs/retry/a/b", `{"*": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 9}}}}`, "out_of_range", "*.stop_policy.max_retry_times"},
		{"err rate above 1", "/v1/configs/circuit_break/a/b", `{"m": {"enable": true, "err_rate": 1.5, "min_sample": 10}}`, "out_of_range", "m.err_rate"},
		{"degradation percent", "/v1/configs/degradation/a/b", `{"enable": true, "percentage": 150}`, "out_of_range", "percentage"},
		{"negative qps", "/v1/configs/limit/b", `{"qps_limit": -5}`, "out_of_range", "qps_limit"},
		{"bad mode", "/v1/configs/access_control/b", `{"rules": [{"name": "r", "type": "allow", "callers": ["x"], "mode": "maybe"}]}`, "invalid_value", "rules[0].mode"},
		{"no callers", "/v1/configs/access_control/b", `{"rules": [{"name": "r", "type": "deny", "callers": [], "mode": "enforce"}]}`, "missing_field", "rules[0].callers"},
		{"identity action", "/v1/configs/access_control/b", `{"rules": [], "identity": {"missing": "reject"}}`, "invalid_value", "identity.missing"},
		{"identity outcome", "/v1/configs/access_control/b", `{"rules": [], "identity": {"revoked": "deny"}}`, "unknown_field", "identity.revoked"},
		{"tls mode", "/v1/configs/access_control/b", `{"rules": [], "tls": "on"}`, "invalid_value", "tls"},
		{"routing without match", "/v1/configs/unit_routing/b", `{"rules": [{"name": "r", "match": {}, "unit": "c1", "mode": "enforce"}]}`, "missing_field", "rules[0].match"},
		{"unknown kind", "/v1/configs/timeouts/a/b", `{}`, "invalid_value", "kind"},
		{"client kind with one name", "/v1/configs/rpc_timeout/b", `{}`, "invalid_value", "scope"},
		{"server kind with two names", "/v1/configs/limit/a/b", `{}`, "invalid_value", "scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cc.do("PUT", tc.path, tc.doc)
			code, field := r.errorField()
			if r.status != 400 || code != tc.code || field != tc.field {
				t.Fatalf("%s: want 400 %s on %q", r, tc.code, tc.field)
			}
			if g := cc.do("GET", tc.path, ""); g.status != 404 && g.status != 400 {
				t.Fatalf("after a refused write: %s", g)
			}
		})
	}
	if r := cc.do("GET", "/v1/audit", ""); !strings.Contains(string(r.body), `"entries":[]`) {
		t.Fatalf("refused writes were audited: %s", r)
	}
}

func TestConcurrentWritersAndHistory(t *testing.T) {
	_, _, cc := setup(t, nil)
	path := "/v1/configs/limit/comment-svc"
	v1 := `{"connection_limit": 100, "qps_limit": 1000}`
	first := cc.do("PUT", path, v1)
	if first.status != 200 {
		t.Fatalf("create: %s", first)
	}
	rev1 := first.header.Get("ETag")
	if r := cc.do("PUT", path, `{"qps_limit": 5}`); r.status != 428 {
		t.Fatalf("overwrite without If-Match: %s", r)
	}

	// Two editors read rev1 and write at once: one wins, one gets 412.
	var wg sync.WaitGroup
	results := make([]reply, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = cc.do("PUT", path, fmt.Sprintf(`{"connection_limit": 100, "qps_limit": %d}`, 2000+i), "If-Match", rev1)
		}()
	}
	wg.Wait()
	codes := []int{results[0].status, results[1].status}
	if !(codes[0] == 200 && codes[1] == 412 || codes[0] == 412 && codes[1] == 200) {
		t.Fatalf("two writers with If-Match %s: %v / %s / %s", rev1, codes, results[0], results[1])
	}
	winner := results[0]
	if codes[1] == 200 {
		winner = results[1]
	}
	if r := cc.do("PUT", path, `{"qps_limit": 9}`, "If-Match", rev1); r.status != 412 {
		t.Fatalf("write on a stale revision: %s", r)
	}

	// History keeps every version; rollback restores the exact old document.
	hist := cc.do("GET", path+"/history", "")
	var h struct {
		Versions []api.Entry `json:"versions"`
	}
	if err := json.Unmarshal(hist.body, &h); err != nil || len(h.Versions) != 2 {
		t.Fatalf("history: %s", hist)
	}
	if fmt.Sprint(h.Versions[1].Revision) != mustUnquote(t, rev1) || !sameJSON(t, h.Versions[1].Document, []byte(v1)) {
		t.Fatalf("oldest version %+v, want rev %s with %s", h.Versions[1], rev1, v1)
	}
	rb := cc.do("POST", path+"/rollback?to="+mustUnquote(t, rev1), "")
	if rb.status != 200 {
		t.Fatalf("rollback: %s", rb)
	}
	if got := cc.do("GET", path, ""); !sameJSON(t, documentOf(t, got), []byte(v1)) || got.header.Get("ETag") == winner.header.Get("ETag") {
		t.Fatalf("after rollback: %s", got)
	}
	if r := cc.do("POST", path+"/rollback?to=999999", ""); r.status != 404 {
		t.Fatalf("rollback to nothing: %s", r)
	}
	// Every write is audited, newest first, with who and the revisions.
	var audit struct {
		Entries []api.AuditEntry `json:"entries"`
	}
	_ = json.Unmarshal(cc.do("GET", "/v1/audit", "").body, &audit)
	if len(audit.Entries) != 3 || audit.Entries[0].Action != "rollback" || audit.Entries[0].Who != "admin" ||
		audit.Entries[2].Action != "put" || audit.Entries[1].OldRevision == 0 {
		t.Fatalf("audit: %+v", audit.Entries)
	}
	// Delete needs the revision too.
	cur := cc.do("GET", path, "").header.Get("ETag")
	if r := cc.do("DELETE", path, ""); r.status != 428 {
		t.Fatalf("delete without If-Match: %s", r)
	}
	if r := cc.do("DELETE", path, "", "If-Match", cur); r.status != 200 {
		t.Fatalf("delete: %s", r)
	}
	if r := cc.do("GET", path, ""); r.status != 404 {
		t.Fatalf("after delete: %s", r)
	}
}

func TestWritesNeedAWriterToken(t *testing.T) {
	_, _, cc := setup(t, func(c *center.Config) {
		c.Auth.TokensFile = writeTokens(t, `{"tokens": [{"token": "r-token", "name": "viewer", "role": "reader"}]}`)
	})
	path := "/v1/configs/limit/comment-svc"
	for _, tc := range []struct {
		token  string
		status int
	}{{"", 401}, {"r-token", 403}, {"wrong", 401}} {
		c := cc
		c.token = tc.token
		for _, m := range []string{"PUT", "DELETE"} {
			if r := c.do(m, path, `{"qps_limit": 1}`); r.status != tc.status {
				t.Fatalf("%s with token %q: %s, want %d", m, tc.token, r, tc.status)
			}
		}
		if r := c.do("POST", "/v1/pins/comment-svc", `{"kind":"limit","scope":"comment-svc","revision":1}`); r.status != tc.status {
			t.Fatalf("pin with token %q: %s", tc.token, r)
		}
	}
	if r := cc.do("GET", path, ""); r.status != 404 {
		t.Fatalf("refused writes changed something: %s", r)
	}
	// Reads need a credential too, any operator's.
	c := cc
	c.token = ""
	if r := c.do("GET", "/v1/configs?service=s", ""); r.status != 401 {
		t.Fatalf("read without token: %s", r)
	}
	c.token = "r-token"
	if r := c.do("GET", "/v1/configs?service=s", ""); r.status != 200 {
		t.Fatalf("read with a reader token: %s", r)
	}
}

func writeTokens(t *testing.T, doc string) string {
	p := t.TempDir() + "/tokens.json"
	if err := writeFile(p, doc); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// History and audit are bounded: past versions per config by count, audit
// records by count and by age; what is kept is the newest.
func TestHistoryAndAuditAreBounded(t *testing.T) {
	etcd, prefix, cc := setup(t, func(c *center.Config) {
		c.Retention = center.Retention{HistoryKeep: 3, AuditKeep: 4, AuditMaxAge: time.Hour}
	})
	// An audit record two hours old, as an earlier run would have left it.
	old, _ := json.Marshal(api.AuditEntry{AtMs: time.Now().Add(-2 * time.Hour).UnixMilli(), Who: "old", Action: "put"})
	if _, err := etcd.Client(t).Put(context.Background(), api.Keys{Prefix: prefix}.AuditRecord(time.Now().Add(-2*time.Hour), 1), string(old)); err != nil {
		t.Fatal(err)
	}
	path := "/v1/configs/limit/comment-svc"
	etag := ""
	for i := 1; i <= 6; i++ {
		var r reply
		if etag == "" {
			r = cc.do("PUT", path, fmt.Sprintf(`{"qps_limit": %d}`, i))
		} else {
			r = cc.do("PUT", path, fmt.Sprintf(`{"qps_limit": %d}`, i), "If-Match", etag)
		}
		if r.status != 200 {
			t.Fatalf("write %d: %s", i, r)
		}
		etag = r.header.Get("ETag")
	}
	last, _ := strconv.ParseInt(strings.Trim(etag, `"`), 10, 64)
	var h struct {
		Versions []api.Entry `json:"versions"`
	}
	if err := json.Unmarshal(cc.do("GET", path+"/history", "").body, &h); err != nil {
		t.Fatal(err)
	}
	var limits []string
	for _, v := range h.Versions {
		limits = append(limits, string(v.Document))
	}
	if len(h.Versions) != 4 || !strings.Contains(limits[0], "6") || !strings.Contains(limits[3], "3") {
		t.Fatalf("history kept %d versions (the current and 3 past ones wanted): %v", len(h.Versions), limits)
	}
	var audit struct {
		Entries []api.AuditEntry `json:"entries"`
	}
	_ = json.Unmarshal(cc.do("GET", "/v1/audit?limit=100", "").body, &audit)
	if len(audit.Entries) != 4 {
		t.Fatalf("audit kept %d records (4 wanted): %+v", len(audit.Entries), audit.Entries)
	}
	// The newest record names the revision its write made (the ETag) and
	// the one before it, which the record before names as its own.
	if e := audit.Entries; e[0].NewRevision != last || e[0].OldRevision != e[1].NewRevision || e[0].OldRevision == 0 {
		t.Fatalf("audit revisions: newest %d <- %d, the one before %d (the last write made %d)", e[0].NewRevision, e[0].OldRevision, e[1].NewRevision, last)
	}
	for _, e := range audit.Entries {
		if e.Who == "old" {
			t.Fatalf("a record older than the maximum age is kept: %+v", e)
		}
	}
}
