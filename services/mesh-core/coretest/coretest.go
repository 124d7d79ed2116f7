// Package coretest starts mesh-core for a test, as net/http/httptest starts
// an HTTP server: on free loopback ports, over the test's etcd, stopped when
// the test ends.
package coretest

import (
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
)

// Start starts mesh-core on free ports over etcd under prefix, with tweak
// (may be nil) applied to its config; it stops when the test ends.
func Start(t testing.TB, etcd *testenv.Etcd, prefix string, tweak func(*core.Config)) *core.MeshCore {
	t.Helper()
	cfg := core.DefaultConfig()
	cfg.HTTPAddr, cfg.KitexAddr, cfg.PollAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Etcd = etcd.Config(prefix)
	cfg.Auth.AdminToken = testenv.AdminToken
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
	testenv.StopAtEnd(t, "mesh-core", mc)
	return mc
}
