package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Stopper is a started service.
type Stopper interface{ Stop(context.Context) error }

// StopAtEnd stops s when the test ends (a service's Stop is idempotent, so a
// test may stop it before), logging an error rather than failing on it.
func StopAtEnd(t testing.TB, name string, s Stopper) {
	t.Cleanup(func() {
		// Idle keep-alive connections of the test's client would hold a
		// graceful HTTP shutdown until its exit wait time.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Logf("stop %s: %v", name, err)
		}
	})
}

// Metric reads one sample from a Prometheus /metrics page: name with its
// labels exactly as exposed, e.g. `sextant_mixer_records_dropped_total{reason="no_shard"}`.
// A series not exposed yet reads as 0.
func Metric(t testing.TB, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// WaitMetric waits until a metric reaches want.
func WaitMetric(t testing.TB, addr, series string, want float64) {
	t.Helper()
	Eventually(t, 30*time.Second, func() error {
		if got := Metric(t, addr, series); got != want {
			return fmt.Errorf("%s = %v, want %v", series, got, want)
		}
		return nil
	})
}

// Ready returns why the service at addr is not ready (its /readyz reasons);
// empty when it is.
func Ready(t testing.TB, addr string) []string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return []string{err.Error()}
	}
	defer resp.Body.Close()
	var body struct {
		Reasons []string `json:"reasons"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusOK && len(body.Reasons) == 0 {
		return []string{resp.Status}
	}
	return body.Reasons
}
