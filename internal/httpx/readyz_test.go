package httpx_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/httpx"
)

// /readyz: 503 with the reasons while not ready; 200 while ready, with the
// detail of a stale state; /healthz is 200 in every case.
func TestReadyzSaysStaleWhileReady(t *testing.T) {
	// Set by the test, read by the server's goroutines.
	var mu sync.Mutex
	var reasons, stale []string
	srv := listen(t)
	httpx.HealthRoutesStale(srv,
		func() []string { mu.Lock(); defer mu.Unlock(); return reasons },
		func() []string { mu.Lock(); defer mu.Unlock(); return stale })
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	get := func(path string) (int, map[string]any) {
		t.Helper()
		var resp *http.Response
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if resp, err = http.Get("http://" + srv.Addr() + path); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body := map[string]any{}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	for _, tc := range []struct {
		name           string
		reasons, stale []string
		status         int
		want           string // the status field
	}{
		{"live", nil, nil, 200, "ready"},
		{"stale", nil, []string{"etcd unreachable"}, 200, "ready"},
		{"not ready", []string{"never synced"}, []string{"etcd unreachable"}, 503, "degraded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			reasons, stale = tc.reasons, tc.stale
			mu.Unlock()
			status, body := get("/readyz")
			if status != tc.status || body["status"] != tc.want {
				t.Fatalf("/readyz %d %v", status, body)
			}
			if isStale := body["stale"] == true; isStale != (tc.stale != nil && tc.reasons == nil) {
				t.Fatalf("/readyz stale=%v: %v", isStale, body)
			}
			if status, _ := get("/healthz"); status != 200 {
				t.Fatalf("/healthz %d", status)
			}
		})
	}
}
