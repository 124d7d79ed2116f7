package ctl_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/cmd/sextant/ctl"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
)

// stack is a real etcd and config-center that the commands talk to, with
// the environment a user would set (and a context file of its own).
type stack struct {
	etcd   *testenv.Etcd
	prefix string
	center string
}

func startStack(t *testing.T) *stack {
	etcd, prefix := testenv.StartEtcd(t), testenv.Prefix(t)
	cc := centertest.Start(t, etcd, prefix, nil)
	t.Setenv("SEXTANT_CONFIG", filepath.Join(t.TempDir(), "config"))
	t.Setenv("SEXTANT_CONFIG_CENTER", cc.Addr())
	t.Setenv("SEXTANT_ADMIN_TOKEN", centertest.AdminToken)
	t.Setenv("SEXTANT_TOKEN", "")
	return &stack{etcd: etcd, prefix: prefix, center: cc.Addr()}
}

// run runs one sextant command; it fails the test on an unknown command.
func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	known, err := ctl.Run(args[0], args[1:], &out, &errOut)
	if !known {
		t.Fatalf("unknown command %q", args[0])
	}
	return out.String(), errOut.String(), err
}

// must runs a command that must succeed.
func must(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	out, errOut, err := run(t, args...)
	if err != nil {
		t.Fatalf("sextant %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out, errOut
}

func contains(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, text)
		}
	}
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// api calls the config-center directly, as another operator would.
func (s *stack) api(t *testing.T, method, path, body string, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, "http://"+s.center+path, rd)
	req.Header.Set("Authorization", "Bearer "+centertest.AdminToken)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func entry(t *testing.T, kind, scope string) api.Entry {
	t.Helper()
	out, _ := must(t, "config", "get", kind, scope, "-o", "json")
	var e api.Entry
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("config get -o json: %v\n%s", err, out)
	}
	var doc bytes.Buffer
	if err := json.Compact(&doc, e.Document); err != nil {
		t.Fatal(err)
	}
	e.Document = doc.Bytes()
	return e
}

// Every config command, in the order an operator uses them, against a
// real config-center.
func TestConfigCommands(t *testing.T) {
	startStack(t)
	dir := t.TempDir()
	v1 := writeFile(t, dir, "v1.json", `{"qps_limit": 100}`)
	v2 := writeFile(t, dir, "v2.json", `{"qps_limit": 50}`)
	v3 := writeFile(t, dir, "v3.json", `{"qps_limit": 30, "connection_limit": 10}`)

	_, errOut := must(t, "config", "put", "limit", "shop", "-f", v1)
	contains(t, "put v1", errOut, `+  "qps_limit": 100`, "limit/shop written: revision")
	r1 := entry(t, "limit", "shop").Revision
	out, _ := must(t, "config", "get", "limit", "shop")
	contains(t, "get", out, "# limit/shop revision", `"qps_limit": 100`)

	_, errOut = must(t, "config", "put", "limit", "shop", "-f", v2)
	contains(t, "put v2", errOut, `-  "qps_limit": 100`, `+  "qps_limit": 50`)
	// The list is the config-center's view, which follows etcd a moment
	// after a write.
	testenv.Eventually(t, 10*time.Second, func() error {
		if out, _ := must(t, "config", "list"); !strings.Contains(out, "limit  shop") {
			return fmt.Errorf("list:\n%s", out)
		}
		return nil
	})
	out, _ = must(t, "config", "list", "--service", "shop", "-o", "yaml")
	contains(t, "list -o yaml", out, "kind: limit", "scope: shop")

	out, _ = must(t, "config", "diff", "limit", "shop", "-f", v3)
	contains(t, "diff -f", out, `+  "connection_limit": 10`, `-  "qps_limit": 50`)
	out, _ = must(t, "config", "diff", "limit", "shop", "--revision", fmt.Sprint(r1))
	contains(t, "diff --revision", out, `+  "qps_limit": 100`)
	out, _ = must(t, "config", "history", "limit", "shop")
	contains(t, "history", out, "REVISION", fmt.Sprint(r1), "current")

	must(t, "config", "rollback", "limit", "shop", "--to", fmt.Sprint(r1))
	if e := entry(t, "limit", "shop"); string(e.Document) != `{"qps_limit":100}` {
		t.Errorf("after the rollback: %s", e.Document)
	}

	must(t, "config", "rollout", "limit", "shop", "-f", v3, "--percent", "20")
	if e := entry(t, "limit", "shop"); e.Rollout == nil || e.Rollout.Percent != 20 {
		t.Errorf("rollout at 20 %%: %+v", e)
	}
	must(t, "config", "promote", "limit", "shop", "--percent", "100")
	if e := entry(t, "limit", "shop"); e.Rollout != nil || !strings.Contains(string(e.Document), `"connection_limit":10`) {
		t.Errorf("promoted: %+v", e)
	}
	must(t, "config", "rollout", "limit", "shop", "-f", v2, "--percent", "10")
	must(t, "config", "abort", "limit", "shop")
	if e := entry(t, "limit", "shop"); e.Rollout != nil || !strings.Contains(string(e.Document), `"connection_limit":10`) {
		t.Errorf("aborted: %+v", e)
	}

	must(t, "config", "pin", "shop", "limit", "shop", "--revision", fmt.Sprint(r1))
	out, _ = must(t, "config", "pins", "shop")
	contains(t, "pins", out, "limit", fmt.Sprint(r1))
	must(t, "config", "unpin", "shop", "limit", "shop")
	if out, _ = must(t, "config", "pins", "shop"); strings.Contains(out, fmt.Sprint(r1)) {
		t.Errorf("pins after unpin:\n%s", out)
	}
	out, _ = must(t, "config", "status", "limit", "shop")
	contains(t, "status", out, "REVISION", "INSTANCES")
	out, _ = must(t, "config", "kinds")
	contains(t, "kinds", out, "calculator", "rpc_timeout", "CALLER/CALLEE")

	// Refusals come back with the field, and change nothing.
	bad := writeFile(t, dir, "bad.json", `{"qps_limit": -1}`)
	_, _, err := run(t, "config", "put", "limit", "shop", "-f", bad)
	if err == nil || !strings.Contains(err.Error(), "qps_limit") || ctl.StatusOf(err) != 400 {
		t.Errorf("an invalid document: %v, want a 400 naming qps_limit", err)
	}
	if _, _, err := run(t, "config", "get", "limit"); err == nil {
		t.Error("get with one argument: no error")
	}
	if _, _, err := run(t, "config", "get", "limit", "shop", "-o", "xml"); err == nil || !strings.Contains(err.Error(), "xml") {
		t.Errorf("-o xml: %v", err)
	}

	must(t, "config", "delete", "limit", "shop")
	if _, _, err := run(t, "config", "get", "limit", "shop"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("get after delete: %v", err)
	}
	t.Setenv("SEXTANT_ADMIN_TOKEN", "")
	if _, _, err := run(t, "config", "list"); err == nil || !strings.Contains(err.Error(), "no credential") {
		t.Errorf("without a credential: %v", err)
	}
}

// Contexts hold the connection: with no environment, the current context's
// config-center and token are used.
func TestContexts(t *testing.T) {
	s := startStack(t)
	t.Setenv("SEXTANT_CONFIG_CENTER", "")
	t.Setenv("SEXTANT_ADMIN_TOKEN", "")
	must(t, "context", "set", "dev", "--config-center", s.center, "--token", centertest.AdminToken)
	must(t, "context", "set", "other", "--config-center", "127.0.0.1:1", "--token", "nope")
	out, _ := must(t, "context", "list")
	contains(t, "context list", out, "*", "dev", "other")
	if out, _ = must(t, "context", "current"); strings.TrimSpace(out) != "dev" {
		t.Errorf("current: %q", out)
	}
	must(t, "config", "list") // through dev
	if _, _, err := run(t, "config", "list", "--context", "other"); err == nil {
		t.Error("a context with an unreachable config-center answered")
	}
	info, err := os.Stat(ctl.ContextPath())
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("context file: %v, mode %v (it holds tokens: want 0600)", err, info.Mode())
	}
}
