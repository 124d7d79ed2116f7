// Package mixertest starts a telemetry-mixer for a test, as net/http/httptest
// starts an HTTP server: on a free loopback port, over the test's etcd,
// stopped when the test ends.
package mixertest

import (
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
)

// Start starts a telemetry-mixer on a free port, routing by the shards
// registered under prefix, with tweak (may be nil) applied to its config; it
// stops when the test ends.
func Start(t testing.TB, etcd *testenv.Etcd, prefix string, tweak func(*mixer.Config)) *mixer.Mixer {
	t.Helper()
	cfg := mixer.DefaultConfig()
	cfg.ID = "test-mixer"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Etcd = etcd.Config(prefix)
	cfg.Auth.AdminToken = testenv.AdminToken
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
	testenv.StopAtEnd(t, "mixer", m)
	return m
}
