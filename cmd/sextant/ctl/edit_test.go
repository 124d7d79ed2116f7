package ctl_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
)

// editor installs a shell script as $EDITOR; it gets the file to edit as $1.
func editor(t *testing.T, script string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "editor.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nset -e\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VISUAL", "")
	t.Setenv("EDITOR", p)
	return dir
}

// edit: an invalid edit is shown with its error and opened again; the
// fixed one is diffed and written; no change writes nothing; a concurrent
// write is reported as such and not overwritten.
func TestConfigEdit(t *testing.T) {
	s := startStack(t)
	dir := t.TempDir()
	must(t, "config", "put", "limit", "shop", "-f", writeFile(t, dir, "v1.json", `{"qps_limit": 10}`))

	// First an invalid value, then, opened again with the error, a valid one.
	state := editor(t, `n=$(cat "$(dirname "$0")/count" 2>/dev/null || echo 0)
echo $((n+1)) > "$(dirname "$0")/count"
if [ "$n" = 0 ]; then echo '{"qps_limit": -1}' > "$1"; else grep -q 'qps_limit' "$1"; echo '{"qps_limit": 42}' > "$1"; fi
`)
	_, errOut := must(t, "config", "edit", "limit", "shop")
	contains(t, "edit", errOut, "limit/shop is not valid", "qps_limit", `-  "qps_limit": 10`, `+  "qps_limit": 42`, "written: revision")
	if n, _ := os.ReadFile(filepath.Join(state, "count")); strings.TrimSpace(string(n)) != "2" {
		t.Errorf("the editor ran %s times, want 2", n)
	}
	if e := entry(t, "limit", "shop"); string(e.Document) != `{"qps_limit":42}` {
		t.Errorf("after edit: %s", e.Document)
	}

	editor(t, "true\n")
	_, errOut = must(t, "config", "edit", "limit", "shop")
	contains(t, "edit without a change", errOut, "no change")

	// Still invalid after the second try: nothing is written.
	editor(t, `echo '{"qps_limit": -1}' > "$1"`+"\n")
	if _, _, err := run(t, "config", "edit", "limit", "shop"); err == nil || !strings.Contains(err.Error(), "still invalid") {
		t.Errorf("an edit that stays invalid: %v", err)
	}

	// Another operator writes while the editor is open.
	sync := editor(t, `touch "$(dirname "$0")/opened"
while [ ! -f "$(dirname "$0")/go" ]; do sleep 0.05; done
echo '{"qps_limit": 7}' > "$1"
`)
	done := make(chan error, 1)
	go func() {
		_, _, err := run(t, "config", "edit", "limit", "shop")
		done <- err
	}()
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(sync, "opened")); err != nil {
			return errors.New("the editor has not opened yet")
		}
		return nil
	})
	_, h, _ := s.api(t, "GET", "/v1/configs/limit/shop", "")
	if code, _, body := s.api(t, "PUT", "/v1/configs/limit/shop", `{"qps_limit": 99}`, "If-Match", h.Get("ETag")); code != 200 {
		t.Fatalf("the concurrent write: %d %s", code, body)
	}
	if err := os.WriteFile(filepath.Join(sync, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "changed since it was read") || !strings.Contains(err.Error(), "412") {
		t.Errorf("an edit over a concurrent write: %v, want a 412 reported as such", err)
	}
	if e := entry(t, "limit", "shop"); string(e.Document) != `{"qps_limit":99}` {
		t.Errorf("the concurrent write was overwritten: %s", e.Document)
	}
}
