package console_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/services/config-center/console"
)

// The assets are served without a credential, each with its content type,
// the strict Content-Security-Policy and nosniff; what is not an asset is a
// 404; a revalidation with the ETag is a 304.
func TestAssets(t *testing.T) {
	s, err := httpx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	console.Register(s.Hertz)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})
	base := "http://" + s.Addr()
	get := func(path string, header ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for path, want := range map[string]string{
		"/ui/":           "text/html; charset=utf-8",
		"/ui/index.html": "text/html; charset=utf-8",
		"/ui/app.js":     "text/javascript; charset=utf-8",
		"/ui/app.css":    "text/css; charset=utf-8",
	} {
		resp, body := get(path)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != want || body == "" {
			t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), want)
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != console.Policy || !strings.Contains(got, "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, got)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
		etag := resp.Header.Get("ETag")
		if again, _ := get(path, "If-None-Match", etag); etag == "" || again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %s: %d, want 304", path, etag, again.StatusCode)
		}
	}
	// No inline script: every script is a file of the console.
	if _, body := get("/ui/"); !strings.Contains(body, `<script src="app.js" defer></script>`) || strings.Count(body, "<script") != 1 {
		t.Errorf("index.html has inline scripts:\n%s", body)
	}
	for _, path := range []string{"/ui/nothing.js", "/ui/../go.mod", "/ui/console.go"} {
		if resp, _ := get(path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	if resp, _ := get("/ui"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
}
