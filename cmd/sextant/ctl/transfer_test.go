package ctl_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/center"
)

// One valid document of every kind the config-center serves.
var everyKind = map[string]struct{ scope, doc string }{
	"rpc_timeout":    {"feed-api/comment-svc", `{"*": {"rpc_timeout_ms": 800, "conn_timeout_ms": 50}, "GetComment": {"rpc_timeout_ms": 300}}`},
	"retry":          {"feed-api/comment-svc", `{"*": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 2, "max_duration_ms": 1000, "cb_policy": {"error_rate": 0.1}}, "backoff_policy": {"backoff_type": "fixed", "cfg_items": {"fix_ms": 20}}}}}`},
	"circuit_break":  {"feed-api/comment-svc", `{"GetComment": {"enable": true, "err_rate": 0.3, "min_sample": 100}}`},
	"degradation":    {"feed-api/comment-svc", `{"enable": true, "percentage": 30}`},
	"limit":          {"comment-svc", `{"connection_limit": 1000, "qps_limit": 5000}`},
	"access_control": {"pay-svc", `{"rules": [{"name": "allow-list", "type": "allow", "callers": ["feed-api"], "mode": "dry_run"}], "identity": {"missing": "dry_run"}, "tls": "strict"}`},
	"unit_routing":   {"comment-svc", `{"rules": [{"name": "vip", "match": {"headers": {"x-tier": "vip"}}, "unit": "c2", "mode": "enforce"}]}`},
	"overload":       {"comment-svc", `{"queue_time_ms": 50, "cpu": 0.9, "user_id_key": "x-uid"}`},
	"priority_rules": {"feed-api", `{"default": 64, "rules": [{"name": "feed", "priority": 100, "match": {"http": {"method": "GET", "path": "/feed/*"}}}]}`},
	"calculator":     {"comment-svc", `{"max_ejection_percent": 20, "blackout_ms": 30000}`},
}

// export writes every kind as files; import writes them back, skipping
// what is unchanged, and a directory exported again is the same byte for
// byte: a round trip keeps every document's meaning.
func TestExportImport(t *testing.T) {
	startStack(t)
	if len(everyKind) != len(center.Kinds) {
		t.Fatalf("the test covers %d kinds, the config-center serves %d", len(everyKind), len(center.Kinds))
	}
	src := t.TempDir()
	for kind, c := range everyKind {
		must(t, "config", "put", kind, c.scope, "-f", writeFile(t, src, kind+".json", c.doc))
	}
	a, b := t.TempDir(), t.TempDir()
	testenv.Eventually(t, 10*time.Second, func() error { // the view follows etcd
		out, _ := must(t, "export", a)
		if !strings.Contains(out, fmt.Sprintf("exported %d configs", len(everyKind))) {
			return fmt.Errorf("export: %s", out)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(a, "rpc_timeout", "feed-api", "comment-svc.json")); err != nil {
		t.Errorf("a client-scoped config's file: %v", err)
	}
	out, _ := must(t, "import", a)
	contains(t, "import of what is there", out, fmt.Sprintf("0 created, 0 updated, %d unchanged", len(everyKind)))

	for kind, c := range everyKind {
		must(t, "config", "delete", kind, c.scope)
	}
	out, _ = must(t, "import", a)
	contains(t, "import into an empty config-center", out, fmt.Sprintf("%d created", len(everyKind)))
	testenv.Eventually(t, 10*time.Second, func() error {
		must(t, "export", b)
		return sameTree(a, b)
	})

	// A bad file stops the import before anything is written.
	limit := filepath.Join(a, "limit", "comment-svc.json")
	writeFile(t, filepath.Dir(limit), "comment-svc.json", `{"qps_limit": 1}`)
	writeFile(t, filepath.Join(a, "degradation", "feed-api"), "comment-svc.json", `{"enable": true, "percentage": 150}`)
	if _, _, err := run(t, "import", a); err == nil || !strings.Contains(err.Error(), "percentage") || !strings.Contains(err.Error(), "nothing imported") {
		t.Errorf("import with an invalid file: %v", err)
	}
	if e := entry(t, "limit", "comment-svc"); string(e.Document) != `{"connection_limit":1000,"qps_limit":5000}` {
		t.Errorf("a refused import wrote limit: %s", e.Document)
	}
}

// sameTree compares two exported directories file by file.
func sameTree(a, b string) error {
	var diffs []string
	count := 0
	err := filepath.WalkDir(a, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		count++
		rel, _ := filepath.Rel(a, path)
		x, _ := os.ReadFile(path)
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(x, y) {
			diffs = append(diffs, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(diffs) > 0 || count != len(everyKind) {
		return fmt.Errorf("%d files; differ after the round trip: %v", count, diffs)
	}
	return nil
}
