// Package console tests the config-center's web console (docs/console.md)
// in a real browser: headless Chromium, driven with chromedp, against a real
// control plane (etcd, mesh-core, a weight-calculator, the mixer and the
// config-center on free loopback ports) fed with telemetry, as an operator
// uses it. Each page is saved as a screenshot under artifacts/ (or
// $SEXTANT_CONSOLE_SCREENSHOTS); -update-docs copies them to docs/console/.
package console

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

var updateDocs = flag.Bool("update-docs", false, "copy the screenshots to docs/console/")

// readerToken is an operator token with the reader role: it sees everything
// and may write nothing.
const readerToken = "console-test-reader"

// findChromium is the browser the test drives, or "" when there is none.
func findChromium() string {
	if p := os.Getenv("SEXTANT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// The mesh the console shows: front calls comment-svc (three instances, one
// of them failing), pay-svc (two), feed-api and account-svc (one each).
var callees = map[string][]callee{
	"account-svc": {{"10.0.4.1:9000", 0, 5}},
	"comment-svc": {{"10.0.1.1:9000", 0, 12}, {"10.0.1.2:9000", 0, 14}, {"10.0.1.3:9000", 45, 90}},
	"pay-svc":     {{"10.0.2.1:9000", 0, 30}, {"10.0.2.2:9000", 1, 35}},
	"feed-api":    {{"10.0.3.1:9000", 0, 8}},
}

// bulk services, one instance each, fill more than a page of the overview.
const bulk = 130

type callee struct {
	instance string
	errors   int // of 100 requests a window
	latency  float64
}

// report posts one window of telemetry for the whole mesh to the mixer.
func report(mixer string) error {
	now := time.Now().UnixMilli()
	var reports, calls []map[string]any
	for svc, list := range callees {
		for _, c := range list {
			calls = append(calls, map[string]any{"callee_service": svc, "callee_instance": c.instance, "requests": 100,
				"errors": c.errors, "timeouts": 0, "latency_ms_avg": c.latency, "latency_ms_p99": 3 * c.latency})
			reports = append(reports, map[string]any{"reporter": map[string]any{"service": svc, "instance": c.instance},
				"window_ms": 250, "timestamp_ms": now, "server": map[string]any{"requests": 100, "cpu_util": 0.3,
					"queue_time_ms_avg": 1, "queue_time_ms_p99": 2, "inflight": 3, "client_timeouts": 0}})
		}
	}
	for i := range bulk {
		calls = append(calls, map[string]any{"callee_service": fmt.Sprintf("bulk-%03d", i), "callee_instance": fmt.Sprintf("10.1.%d.%d:9000", i/200, i%200+1),
			"requests": 10, "errors": 0, "timeouts": 0, "latency_ms_avg": 3, "latency_ms_p99": 9})
	}
	reports = append(reports, map[string]any{"reporter": map[string]any{"service": "front", "instance": "10.0.9.1:80"},
		"window_ms": 250, "timestamp_ms": now, "calls": calls,
		"dry_run_denials": []any{map[string]any{"callee_service": "pay-svc", "caller_service": "front", "rule": "only-checkout", "count": 7}}})
	status, body, err := call("POST", "http://"+mixer+"/v1/telemetry", "", "", reports)
	if err == nil && status != http.StatusAccepted {
		err = fmt.Errorf("POST /v1/telemetry: %d %s", status, body)
	}
	return err
}

// call makes an API call as the admin (token "") or with token.
func call(method, url, token, ifMatch string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := testenv.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// entry reads a config as the API answers it.
func entry(t *testing.T, cc, path string) map[string]any {
	t.Helper()
	status, body, err := call("GET", "http://"+cc+"/v1/configs/"+path, "", "", nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET %s: %d %s %v", path, status, body, err)
	}
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// literal is s as an XPath string literal.
func literal(s string) string {
	if !strings.Contains(s, "'") {
		return "'" + s + "'"
	}
	return `"` + s + `"` // the texts of this test have no string with both quotes
}

func TestConsole(t *testing.T) {
	bin := findChromium()
	if bin == "" {
		t.Skip("no Chromium found (chromium on PATH, or $SEXTANT_CHROMIUM): `make chromium` installs it from Debian's packages")
	}
	began := time.Now()

	// The control plane.
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	if err := os.WriteFile(tokens, []byte(`{"tokens": [{"token": "`+readerToken+`", "name": "on-call", "role": "reader"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) {})
	calculatortest.Start(t, etcd, prefix, "calc-1", func(c *calculator.Config) { c.MeshCoreAddr = mc.KitexAddr() })
	mx := mixertest.Start(t, etcd, prefix, nil)
	cc := centertest.Start(t, etcd, prefix, func(c *center.Config) { c.Auth.TokensFile = tokens })
	api := "http://" + cc.Addr()
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 1)
	for svc, list := range callees {
		for _, c := range list {
			if s, b, err := call("POST", "http://"+mc.Addr()+"/v1/instances", "", "", map[string]any{"service": svc, "instance": c.instance, "ttl_s": 600}); err != nil || s != http.StatusCreated {
				t.Fatalf("register %s %s: %d %s %v", svc, c.instance, s, b, err)
			}
		}
	}
	// The data planes report a window every 250 ms while the test runs.
	ctx, stopReports := context.WithCancel(context.Background())
	var reporting sync.WaitGroup
	reporting.Add(1)
	go func() {
		defer reporting.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := report(mx.Addr()); err != nil && ctx.Err() == nil {
				t.Logf("report: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { stopReports(); reporting.Wait() })

	// Configs the pages show: a limit (its first version), and access rules in dry_run.
	if s, b, err := call("PUT", api+"/v1/configs/limit/comment-svc", "", "", map[string]any{"qps_limit": 5000}); err != nil || s != http.StatusOK {
		t.Fatalf("PUT limit: %d %s %v", s, b, err)
	}
	first := entry(t, cc.Addr(), "limit/comment-svc")
	firstRev := fmt.Sprint(first["revision"])
	if s, b, err := call("PUT", api+"/v1/configs/access_control/pay-svc", "", "", map[string]any{"rules": []any{
		map[string]any{"name": "only-checkout", "type": "allow", "callers": []string{"checkout"}, "mode": "dry_run"}}}); err != nil || s != http.StatusOK {
		t.Fatalf("PUT access_control: %d %s %v", s, b, err)
	}

	// One data plane of comment-svc watches its configs (and has not said
	// it applied them yet).
	if s, b, err := call("GET", api+"/v1/watch?service=comment-svc&instance=10.0.1.1:9000&wait=0s", "", "", nil); err != nil || s != http.StatusOK {
		t.Fatalf("watch: %d %s %v", s, b, err)
	}

	// The browser.
	shots := os.Getenv("SEXTANT_CONSOLE_SCREENSHOTS")
	if shots == "" {
		shots = "artifacts"
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()), chromedp.Flag("disable-dev-shm-usage", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc) // stops Chromium and waits for it
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	// An uncaught exception and what the page logs about the
	// Content-Security-Policy fail the test.
	var mu sync.Mutex
	var pageErrors []string
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start Chromium %s: %v", bin, err)
	}
	if err := chromedp.Listen(browser, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			pageErrors = append(pageErrors, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
		case *log.EventEntryAdded:
			if ev.Entry.Source == log.EntrySourceSecurity || strings.Contains(ev.Entry.Text, "Content Security Policy") {
				pageErrors = append(pageErrors, "security: "+ev.Entry.Text)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(browser, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, log.Enable, cdp.Empty{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, runtime.Enable, cdp.Empty{})
		return err
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range pageErrors {
			t.Errorf("page: %s", e)
		}
	})

	// do runs steps in the browser, each subtest's within 45 s; on a
	// failure it shows the page.
	do := func(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(browser, 45*time.Second)
		defer cancel()
		for i, st := range steps {
			if err := chromedp.Do(c, st); err != nil {
				// The page as it was, in the log and as a screenshot.
				hc, hcancel := context.WithTimeout(browser, 5*time.Second)
				html, _ := chromedp.Run(hc, chromedp.OuterHTML(chromedp.CSS("#app")))
				if png, err := chromedp.Run(hc, chromedp.FullScreenshot(100)); err == nil {
					_ = os.WriteFile(filepath.Join(shots, "failed-"+strings.ReplaceAll(t.Name(), "/", "-")+".png"), png, 0o644)
				}
				hcancel()
				t.Fatalf("step %d: %v\npage:\n%s", i+1, err, html)
			}
		}
	}
	value := func(t *testing.T, expr string) string {
		t.Helper()
		c, cancel := context.WithTimeout(browser, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(c, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}
	shotViewport := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.CaptureScreenshot()(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}
	css := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.WaitVisible(chromedp.CSS(sel)) }
	click := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.Click(chromedp.CSS(sel)) }
	// textOf waits until the element of that id shows want.
	textOf := func(id, want string) chromedp.Action[chromedp.Void] {
		return chromedp.WaitVisible(chromedp.Search(fmt.Sprintf(`//*[@id=%s][contains(., %s)]`, literal(strings.TrimPrefix(id, "#")), literal(want))))
	}
	// keys presses key n times on the element (a slider moves a step each).
	keys := func(sel, key string, n int) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(chromedp.Focus(chromedp.CSS(sel)), chromedp.KeyEvent(strings.Repeat(key, n)))
	}
	// goTo opens a page of the console (a change of the URL's fragment).
	goTo := func(fragment string) chromedp.Action[chromedp.Void] {
		return chromedp.Evaluate[chromedp.Void](fmt.Sprintf("location.hash = %q; undefined", fragment))
	}
	// edit types doc into the editor (as one input event) and reviews it;
	// editValid waits for the review to pass (Save enabled).
	edit := func(doc string) chromedp.Action[chromedp.Void] {
		b, _ := json.Marshal(doc)
		return chromedp.Steps(
			chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const e = document.getElementById('editor'); e.value = %s; e.dispatchEvent(new Event('input')); })()`, b)),
			click("#review"))
	}
	editValid := func(doc string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(edit(doc), chromedp.WaitEnabled(chromedp.CSS("#save")))
	}
	login := func(token string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(css("#token"), chromedp.SendKeys(chromedp.CSS("#token"), token), click("#login-button"))
	}
	apiDoc := func(t *testing.T) string {
		doc, _ := json.Marshal(entry(t, cc.Addr(), "limit/comment-svc")["document"])
		return string(doc)
	}

	// Each step needs the ones before it: the first failure ends the test.
	step := func(name string, f func(t *testing.T)) {
		if !t.Failed() && !t.Run(name, f) {
			t.Errorf("%s failed: the steps after it did not run", name)
		}
	}

	step("login", func(t *testing.T) {
		// A token the config-center does not know is refused at once.
		do(t, chromedp.Navigate(api+"/ui/"), css("#token"), chromedp.WaitNotVisible(chromedp.CSS("#nav")), login("not-a-token"),
			chromedp.WaitVisible(chromedp.Search(`//form[@id="login-form"]//div[contains(., "401 unauthenticated")]`)),
			shot("login"),
			login(testenv.AdminToken), // the refused token was cleared
			chromedp.WaitVisible(chromedp.Search(`//h1[.="Services"]`)))
	})

	step("overview", func(t *testing.T) {
		// Once the calculator has weighed the failing instance, the
		// overview sorted by trouble shows comment-svc first (account-svc
		// first by name).
		testenv.Eventually(t, 30*time.Second, func() error {
			status, body, err := call("GET", api+"/v1/services?limit=1&sort=trouble", "", "", nil)
			if err != nil || status != http.StatusOK {
				return fmt.Errorf("GET /v1/services: %d %s %v", status, body, err)
			}
			var page struct {
				Services []struct {
					Service      string  `json:"service"`
					ErrorRatio   float64 `json:"error_ratio"`
					RequestsPerS float64 `json:"requests_per_s"`
				} `json:"services"`
			}
			if err := json.Unmarshal(body, &page); err != nil {
				return err
			}
			if len(page.Services) == 0 || page.Services[0].Service != "comment-svc" || page.Services[0].ErrorRatio == 0 || page.Services[0].RequestsPerS == 0 {
				return fmt.Errorf("overview: %s", body)
			}
			return nil
		})
		do(t, click("#refresh"),
			css(`#services tbody tr:first-child[data-service="comment-svc"]`),
			shotViewport("overview"))
		// Paging is the server's: 100 rows a page.
		total := len(callees) + bulk
		do(t, textOf("range", fmt.Sprintf("1–100 of %d services", total)),
			click("#next"),
			textOf("range", fmt.Sprintf("101–%d of %d services", total, total)),
			css(`#services tbody tr[data-service="bulk-129"]`),
			click("#prev"),
			textOf("range", "1–100 of"))
		// Search is the server's: one service matches "pay".
		do(t, chromedp.SendKeys(chromedp.CSS("#search"), "pay"), textOf("range", "of 1 services"))
		if n := value(t, `String(document.querySelectorAll('#services tbody tr').length)`); n != "1" {
			t.Errorf("search pay: %s rows, want 1", n)
		}
		do(t, goTo("#/"), css(`#services tbody tr[data-service="comment-svc"]`))
	})

	step("service", func(t *testing.T) {
		do(t, click(`#services tr[data-service="comment-svc"] a.service-link`),
			css(`#instance-table tr[data-instance="10.0.1.3:9000"]`),
			css(`#instance-table tr[data-instance="10.0.1.1:9000"]`),
			// Three samples at least: the charts draw lines.
			textOf("service-meta", "3 sample(s)"),
			// This control plane writes no time series: the charts say so.
			textOf("chart-source", "no InfluxDB configured"),
			css("#chart-weights polyline"),
			css("#chart-latency polyline"),
			shot("service"))
		// A service no calculator computes is said so.
		do(t, goTo("#/service/no-such-svc"), css("#not-computed"),
			goTo("#/service/comment-svc"), css(`#instance-table tr[data-instance="10.0.1.3:9000"]`))
		do(t, chromedp.WaitVisible(chromedp.Search(`//table[@id="dataplane-table"]//tr[@data-instance="10.0.1.1:9000"]//span[.="STALE"]`)))
		weights := value(t, `[...document.querySelectorAll('#instance-table td.weight')].map(td => td.textContent).join(' ')`)
		if len(strings.Fields(weights)) != 3 {
			t.Errorf("weights shown: %q, want three", weights)
		}
	})

	step("config-invalid", func(t *testing.T) {
		do(t, goTo("#/configs?service=comment-svc"),
			css(`#config-table a.config-link`),
			chromedp.WaitReady(chromedp.CSS(`#new-kind option[value="calculator"]`)),
			shot("configs"),
			click(`#config-table a.config-link`),
			textOf("editor-meta", "revision "+firstRev),
			edit(`{"connection_limit": 1000, "qps_limit": -5}`),
			css("#validation-error"),
			shot("config-invalid"))
		if field := value(t, `document.getElementById('validation-field').textContent`); field != "qps_limit" {
			t.Errorf("validation error names %q, want qps_limit", field)
		}
		if save := value(t, `String(document.getElementById('save').disabled)`); save != "true" {
			t.Errorf("Save is enabled on an invalid document")
		}
		if got := fmt.Sprint(entry(t, cc.Addr(), "limit/comment-svc")["revision"]); got != firstRev {
			t.Errorf("an invalid document was written: revision %s", got)
		}
	})

	step("config-fix-diff-save", func(t *testing.T) {
		do(t, editValid(`{"connection_limit": 1000, "qps_limit": 3000}`),
			css("#diff-lines .add"),
			chromedp.WaitNotPresent(chromedp.CSS("#validation-error")),
			textOf("diff-lines", `"qps_limit": 3000`),
			shot("config-diff"),
			click("#save"),
			textOf("saved", "Saved revision"))
		if doc := apiDoc(t); doc != `{"connection_limit":1000,"qps_limit":3000}` {
			t.Errorf("saved %s", doc)
		}
	})

	step("rollback", func(t *testing.T) {
		button := `#history-table button.rollback[data-revision="` + firstRev + `"]`
		do(t, css(button), click(button),
			textOf("saved", "Rollback to revision "+firstRev+" done"),
			shot("history"))
		if doc := apiDoc(t); doc != `{"qps_limit":5000}` {
			t.Errorf("after the rollback to %s: %s", firstRev, doc)
		}
	})

	step("rollout", func(t *testing.T) {
		do(t, editValid(`{"qps_limit": 4000}`),
			keys("#rollout", kb.ArrowRight, 20),
			textOf("rollout-label", "to 20 %"),
			click("#save"),
			textOf("saved", "rolled out to 20 %"),
			textOf("rollout-state", "20 %"))
		if ro, _ := entry(t, cc.Addr(), "limit/comment-svc")["rollout"].(map[string]any); ro == nil || ro["percent"] != 20.0 {
			t.Fatalf("rollout after the slider at 20: %v", ro)
		}
		// Widen it with the promote slider (it starts at 50).
		do(t, keys("#promote-slider", kb.ArrowRight, 10),
			textOf("promote-label", "60 %"),
			click("#promote"),
			textOf("rollout-state", "60 %"),
			shot("rollout"))
		if ro, _ := entry(t, cc.Addr(), "limit/comment-svc")["rollout"].(map[string]any); ro == nil || ro["percent"] != 60.0 {
			t.Fatalf("rollout after promote to 60: %v", ro)
		}
		do(t, click("#abort"), textOf("saved", "Abort done"), textOf("rollout-state", "No rollout"))
		if e := entry(t, cc.Addr(), "limit/comment-svc"); e["rollout"] != nil || apiDoc(t) != `{"qps_limit":5000}` {
			t.Errorf("after abort: %v", e)
		}
	})

	step("concurrent-edit", func(t *testing.T) {
		// Someone else writes the config while the editor holds it: the
		// save is refused (412) and the page says so and offers a reload.
		e := entry(t, cc.Addr(), "limit/comment-svc")
		if s, b, err := call("PUT", api+"/v1/configs/limit/comment-svc", "", fmt.Sprint(e["revision"]), map[string]any{"qps_limit": 4500}); err != nil || s != http.StatusOK {
			t.Fatalf("PUT behind the console's back: %d %s %v", s, b, err)
		}
		do(t, editValid(`{"qps_limit": 4200}`),
			click("#save"),
			textOf("banner", "412 revision_mismatch"),
			shot("concurrent-edit"),
			click("#reload"),
			textOf("editor-meta", fmt.Sprintf("revision %v ", entry(t, cc.Addr(), "limit/comment-svc")["revision"])))
		if doc := apiDoc(t); doc != `{"qps_limit":4500}` {
			t.Errorf("after the refused save: %s", doc)
		}
		if got := value(t, `document.getElementById('editor').value`); !strings.Contains(got, `"qps_limit": 4500`) {
			t.Errorf("the editor after reloading holds %s", got)
		}
	})

	step("pin", func(t *testing.T) {
		do(t, chromedp.SetValue(chromedp.CSS("#pin-revision"), firstRev), click("#pin"), css("#pin-box button.unpin"))
		status, body, err := call("GET", api+"/v1/pins/comment-svc", "", "", nil)
		if err != nil || status != 200 || !strings.Contains(string(body), `"revision":`+firstRev) {
			t.Errorf("pins of comment-svc: %d %s %v", status, body, err)
		}
		do(t, click("#pin-box button.unpin"), chromedp.WaitNotPresent(chromedp.CSS("#pin-box button.unpin")))
	})

	step("access-dry-run", func(t *testing.T) {
		do(t, goTo("#/access?service=pay-svc"),
			chromedp.WaitVisible(chromedp.Search(`//table[@id="denials"]//td[.="front"]`)),
			// front is allowed by no rule: dry-run denied.
			chromedp.WaitVisible(chromedp.Search(`//table[@id="callers"]//tr[td[.="front"]]//span[.="dry_run_denied"]`)),
			shot("access-dry-run"))
	})

	step("audit", func(t *testing.T) {
		do(t, goTo("#/audit"),
			chromedp.WaitVisible(chromedp.Search(`//table[@id="audit"]//td[.="rollback"]`)),
			chromedp.WaitVisible(chromedp.Search(`//table[@id="audit"]//td[.="abort"]`)),
			shot("audit"))
	})

	step("reader-refused", func(t *testing.T) {
		// A link to a page asks for a token first, then opens that page.
		do(t, click("#logout"), css("#token"),
			goTo("#/config/limit/comment-svc"),
			css("#token"),
			login(readerToken),
			textOf("editor-meta", "revision"),
			// The review's validation is a PUT: the config-center refuses
			// it to a reader, as it would refuse the save.
			edit(`{"qps_limit": 1}`),
			textOf("banner", "Not allowed (403)"),
			shot("reader-refused"))
		if doc := apiDoc(t); doc != `{"qps_limit":4500}` {
			t.Errorf("a reader's save was written: %s", doc)
		}
	})

	if *updateDocs && !t.Failed() {
		names, _ := filepath.Glob(filepath.Join(shots, "*.png"))
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err == nil {
				err = os.WriteFile(filepath.Join("..", "..", "docs", "console", filepath.Base(n)), b, 0o644)
			}
			if err != nil {
				t.Error(err)
			}
		}
	}
	t.Logf("console test: %s, screenshots in %s", time.Since(began).Round(time.Millisecond), shots)
}
