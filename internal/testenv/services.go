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

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// StartCalculator starts a weight-calculator shard with id on free ports,
// registered under prefix; it stops when the test ends (Stop is idempotent).
func StartCalculator(t testing.TB, etcd *Etcd, prefix, id string, tweak func(*calculator.Config)) *calculator.Calculator {
	t.Helper()
	cfg := calculator.DefaultConfig()
	cfg.ID = id
	cfg.KitexAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.EtcdEndpoints, cfg.EtcdPrefix = etcd.Endpoint, prefix
	cfg.LeaseTTL = 3 * time.Second
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := calculator.New(cfg, logx.Discard())
	if err != nil {
		t.Fatalf("calculator %s: %v", id, err)
	}
	if err := c.Start(); err != nil {
		t.Fatalf("calculator %s: %v", id, err)
	}
	t.Cleanup(func() { stop(t, c) })
	return c
}

// StartMixer starts a telemetry-mixer on a free port, routing by the shards
// registered under prefix; it stops when the test ends.
func StartMixer(t testing.TB, etcd *Etcd, prefix string, tweak func(*mixer.Config)) *mixer.Mixer {
	t.Helper()
	cfg := mixer.DefaultConfig()
	cfg.ID = "test-mixer"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.EtcdEndpoints, cfg.EtcdPrefix = etcd.Endpoint, prefix
	cfg.Forward.FlushInterval = 20 * time.Millisecond
	cfg.Forward.ShutdownGrace = time.Second
	if tweak != nil {
		tweak(&cfg)
	}
	m, err := mixer.New(cfg, logx.Discard())
	if err != nil {
		t.Fatalf("mixer: %v", err)
	}
	if err := m.Start(); err != nil {
		t.Fatalf("mixer: %v", err)
	}
	t.Cleanup(func() { stop(t, m) })
	return m
}

// StartMeshCore starts mesh-core on free ports over etcd under prefix; it
// stops when the test ends.
func StartMeshCore(t testing.TB, etcd *Etcd, prefix string, tweak func(*core.Config)) *core.MeshCore {
	t.Helper()
	cfg := core.DefaultConfig()
	cfg.HTTPAddr, cfg.KitexAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.EtcdEndpoints, cfg.EtcdPrefix = etcd.Endpoint, prefix
	cfg.HealthProbe = 200 * time.Millisecond
	cfg.ShutdownGrace = time.Second
	if tweak != nil {
		tweak(&cfg)
	}
	mc, err := core.New(cfg, logx.Discard())
	if err != nil {
		t.Fatalf("mesh-core: %v", err)
	}
	if err := mc.Start(); err != nil {
		t.Fatalf("mesh-core: %v", err)
	}
	t.Cleanup(func() { stop(t, mc) })
	return mc
}

// AdminToken is the writer token of config-centers started by StartConfigCenter.
const AdminToken = "test-admin-token"

// StartConfigCenter starts a config-center on a free port over etcd under
// prefix, with AdminToken as its writer token; it stops when the test ends.
func StartConfigCenter(t testing.TB, etcd *Etcd, prefix string, tweak func(*center.Config)) *center.Center {
	t.Helper()
	cfg := center.DefaultConfig()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.EtcdEndpoints, cfg.EtcdPrefix = etcd.Endpoint, prefix
	cfg.KitexPrefix = "/" + strings.Trim(prefix, "/") + "-kitex"
	cfg.AdminToken = AdminToken
	if tweak != nil {
		tweak(&cfg)
	}
	cc, err := center.New(cfg, logx.Discard())
	if err != nil {
		t.Fatalf("config-center: %v", err)
	}
	if err := cc.Start(); err != nil {
		t.Fatalf("config-center: %v", err)
	}
	t.Cleanup(func() { stop(t, cc) })
	return cc
}

type stopper interface{ Stop(context.Context) error }

func stop(t testing.TB, s stopper) {
	// Idle keep-alive connections of the test's client would hold a graceful
	// HTTP shutdown until its exit wait time.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Logf("stop: %v", err)
	}
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
