package center_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
)

const (
	priorityV1 = `{"default": 64, "rules": [
		{"name": "feed", "priority": 100, "match": {"http": {"method": "GET", "path": "/api/feed/*"}}},
		{"name": "comments-write", "priority": 20, "match": {"method": "PostComment", "headers": {"x-client": "batch"}}}]}`
	priorityV2 = `{"default": 30, "rules": [
		{"name": "feed", "priority": 120, "match": {"http": {"path": "/api/feed/*"}}},
		{"name": "user-posts", "priority": 90, "match": {"http": {"method": "POST", "path": "/api/users/:id/posts"}}}]}`
)

func historyLen(t *testing.T, cc apiClient, path string) int {
	t.Helper()
	r := cc.do("GET", path+"/history", "")
	if r.status == 404 {
		return 0
	}
	var h struct {
		Versions []api.Entry `json:"versions"`
	}
	if err := json.Unmarshal(r.body, &h); err != nil || r.status != 200 {
		t.Fatalf("history: %s", r)
	}
	return len(h.Versions)
}

// Every bad priority_rules document answers 400 naming the field, and
// nothing is stored: neither over a stored document (its revision,
// document and history stay) nor where there is none.
func TestPriorityRulesRefusedWithTheField(t *testing.T) {
	_, _, cc := setup(t, nil)
	stored := "/v1/configs/priority_rules/feed-api"
	put := cc.do("PUT", stored, priorityV1)
	if put.status != 200 {
		t.Fatalf("PUT a good document: %s", put)
	}
	rev := put.header.Get("ETag")
	rule := func(r string) string {
		return `{"rules": [{"name": "ok", "priority": 1, "match": {"method": "Get"}}, ` + r + `]}`
	}
	for _, tc := range []struct {
		name, doc, code, field string
	}{
		{"malformed", `{"rules": [`, "malformed_json", ""},
		{"not an object", `[]`, "invalid_type", ""},
		{"unknown top field", `{"default": 64, "rulez": []}`, "unknown_field", "rulez"},
		{"unknown match field", rule(`{"name": "r", "priority": 1, "match": {"path": "/a"}}`), "unknown_field", "rules[1].match.path"},
		{"unknown http field", rule(`{"name": "r", "priority": 1, "match": {"http": {"host": "a"}}}`), "unknown_field", "rules[1].match.http.host"},
		{"priority above 127", rule(`{"name": "r", "priority": 128, "match": {"method": "M"}}`), "out_of_range", "rules[1].priority"},
		{"negative priority", rule(`{"name": "r", "priority": -1, "match": {"method": "M"}}`), "out_of_range", "rules[1].priority"},
		{"priority not a number", rule(`{"name": "r", "priority": "high", "match": {"method": "M"}}`), "invalid_type", "rules[1].priority"},
		{"priority missing", rule(`{"name": "r", "match": {"method": "M"}}`), "missing_field", "rules[1].priority"},
		{"default above 127", `{"default": 500}`, "out_of_range", "default"},
		{"duplicate names", rule(`{"name": "ok", "priority": 2, "match": {"method": "M"}}`), "invalid_value", "rules[1].name"},
		{"name missing", rule(`{"priority": 2, "match": {"method": "M"}}`), "missing_field", "rules[1].name"},
		{"empty match", rule(`{"name": "r", "priority": 1, "match": {}}`), "missing_field", "rules[1].match"},
		{"empty http match", rule(`{"name": "r", "priority": 1, "match": {"http": {"method": "*"}}}`), "missing_field", "rules[1].match.http"},
		{"pattern without leading slash", rule(`{"name": "r", "priority": 1, "match": {"http": {"path": "api/feed"}}}`), "invalid_value", "rules[1].match.http.path"},
		{"pattern double star", rule(`{"name": "r", "priority": 1, "match": {"http": {"path": "/api/**"}}}`), "invalid_value", "rules[1].match.http.path"},
		{"pattern star inside", rule(`{"name": "r", "priority": 1, "match": {"http": {"path": "/api/*/feed"}}}`), "invalid_value", "rules[1].match.http.path"},
		{"pattern empty param", rule(`{"name": "r", "priority": 1, "match": {"http": {"path": "/users/:/posts"}}}`), "invalid_value", "rules[1].match.http.path"},
		{"pattern trailing slash", rule(`{"name": "r", "priority": 1, "match": {"http": {"path": "/api/feed/"}}}`), "invalid_value", "rules[1].match.http.path"},
		{"lower-case http method", rule(`{"name": "r", "priority": 1, "match": {"http": {"method": "get", "path": "/a"}}}`), "invalid_value", "rules[1].match.http.method"},
		{"http method syntax", rule(`{"name": "r", "priority": 1, "match": {"http": {"method": "GET POST"}}}`), "invalid_value", "rules[1].match.http.method"},
		{"rpc method syntax", rule(`{"name": "r", "priority": 1, "match": {"method": "Post Comment"}}`), "invalid_value", "rules[1].match.method"},
		{"upper-case header", rule(`{"name": "r", "priority": 1, "match": {"headers": {"X-Client": "batch"}}}`), "invalid_value", "rules[1].match.headers.X-Client"},
		{"header without value", rule(`{"name": "r", "priority": 1, "match": {"headers": {"x-client": ""}}}`), "missing_field", "rules[1].match.headers.x-client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Over the stored document, with the right revision.
			r := cc.do("PUT", stored, tc.doc, "If-Match", rev)
			if code, field := r.errorField(); r.status != 400 || code != tc.code || field != tc.field {
				t.Fatalf("%s: want 400 %s on %q", r, tc.code, tc.field)
			}
			var body struct {
				Error struct{ Code, Message, Field string } `json:"error"`
			}
			if err := json.Unmarshal(r.body, &body); err != nil || body.Error.Message == "" {
				t.Fatalf("error body %s", r.body)
			}
			g := cc.do("GET", stored, "")
			if g.status != 200 || g.header.Get("ETag") != rev || !sameJSON(t, documentOf(t, g), []byte(priorityV1)) {
				t.Fatalf("after a refused write: %s (ETag %s, want %s)", g, g.header.Get("ETag"), rev)
			}
			if n := historyLen(t, cc, stored); n != 1 {
				t.Fatalf("%d versions after a refused write", n)
			}
			// Where there is no document: still none.
			fresh := "/v1/configs/priority_rules/comment-svc"
			r = cc.do("PUT", fresh, tc.doc)
			if code, field := r.errorField(); r.status != 400 || code != tc.code || field != tc.field {
				t.Fatalf("new config: %s: want 400 %s on %q", r, tc.code, tc.field)
			}
			if g := cc.do("GET", fresh, ""); g.status != 404 {
				t.Fatalf("after a refused first write: %s", g)
			}
		})
	}
	// Only the good write was audited.
	var audit struct {
		Entries []api.AuditEntry `json:"entries"`
	}
	_ = json.Unmarshal(cc.do("GET", "/v1/audit", "").body, &audit)
	if len(audit.Entries) != 1 || audit.Entries[0].Kind != "priority_rules" {
		t.Fatalf("audit: %+v", audit.Entries)
	}
	// priority_rules is a server kind: one name in its scope.
	if r := cc.do("PUT", "/v1/configs/priority_rules/a/b", priorityV1); r.status != 400 {
		t.Fatalf("client scope: %s", r)
	} else if _, field := r.errorField(); field != "scope" {
		t.Fatalf("client scope: %s", r)
	}
}

// A good document is stored, has history and rollback, reaches the SDK's
// watcher (PriorityRules.Follow gives requests their priority from it) and
// leaves it when deleted.
func TestPriorityRulesStoredAndWatched(t *testing.T) {
	_, _, cc := setup(t, nil)
	path := "/v1/configs/priority_rules/feed-api"
	v1 := cc.do("PUT", path, priorityV1)
	if v1.status != 200 {
		t.Fatalf("PUT v1: %s", v1)
	}
	if g := cc.do("GET", path, ""); g.status != 200 || !sameJSON(t, documentOf(t, g), []byte(priorityV1)) {
		t.Fatalf("GET v1: %s", g)
	}

	host := strings.TrimPrefix(cc.base, "http://")
	w := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: host, Token: centertest.AdminToken, Service: "feed-api", Instance: "10.0.0.1:8080", Wait: 2 * time.Second})
	w.Start()
	defer w.Close()
	rules := sdk.NewPriorityRules()
	rules.Follow(w)

	feed := sdk.PriorityFeatures{HTTPMethod: "GET", Path: "/api/feed/home"}
	batch := sdk.PriorityFeatures{Method: "PostComment", Header: func(k string) string {
		return map[string]string{"x-client": "batch"}[k]
	}}
	posts := sdk.PriorityFeatures{HTTPMethod: "POST", Path: "/api/users/7/posts"}
	expect := func(what string, rev string, want map[*sdk.PriorityFeatures]int32) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() error {
			if got := fmt.Sprint(rules.Revision()); got != mustUnquote(t, rev) {
				return fmt.Errorf("%s: the SDK applies revision %s, want %s", what, got, rev)
			}
			for f, p := range want {
				if got, ok := rules.Priority(*f); !ok || got != p {
					return fmt.Errorf("%s: %+v has priority %d (%v), want %d", what, *f, got, ok, p)
				}
			}
			return nil
		})
	}
	rev1 := v1.header.Get("ETag")
	expect("v1", rev1, map[*sdk.PriorityFeatures]int32{&feed: 100, &batch: 20, &posts: 64})

	v2 := cc.do("PUT", path, priorityV2, "If-Match", rev1)
	if v2.status != 200 {
		t.Fatalf("PUT v2: %s", v2)
	}
	expect("v2", v2.header.Get("ETag"), map[*sdk.PriorityFeatures]int32{&feed: 120, &batch: 30, &posts: 90})
	if n := historyLen(t, cc, path); n != 2 {
		t.Fatalf("%d versions, want 2", n)
	}

	// The watch answer carries the document as stored.
	_, a := cc.watch("feed-api", "10.0.0.2:8080", 0, 0, "0s")
	found := false
	for _, c := range a.Configs {
		if c.Kind == "priority_rules" && c.Scope == "feed-api" {
			found = sameJSON(t, c.Document, []byte(priorityV2)) && fmt.Sprint(c.Revision) == mustUnquote(t, v2.header.Get("ETag"))
		}
	}
	if !found {
		t.Fatalf("watch answer without priority_rules v2: %+v", a)
	}

	// Rollback writes v1 again as a new revision; the SDK follows.
	rb := cc.do("POST", path+"/rollback?to="+mustUnquote(t, rev1), "")
	if rb.status != 200 {
		t.Fatalf("rollback: %s", rb)
	}
	cur := cc.do("GET", path, "").header.Get("ETag")
	expect("rollback", cur, map[*sdk.PriorityFeatures]int32{&feed: 100, &batch: 20, &posts: 64})

	// Deleted: the SDK has no rules left.
	if r := cc.do("DELETE", path, "", "If-Match", cur); r.status != 200 {
		t.Fatalf("delete: %s", r)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if p, ok := rules.Priority(feed); ok {
			return fmt.Errorf("after delete the SDK still gives %d", p)
		}
		return nil
	})
}
