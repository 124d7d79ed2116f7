// Package calculatortest starts a weight-calculator shard for a test, as
// net/http/httptest starts an HTTP server: on free loopback ports, registered
// in the test's etcd, stopped when the test ends.
package calculatortest

import (
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// Start starts a weight-calculator shard with id on free ports, registered
// under prefix, with tweak (may be nil) applied to its config; it stops when
// the test ends (Stop is idempotent, so a test may stop it before).
func Start(t testing.TB, etcd *testenv.Etcd, prefix, id string, tweak func(*calculator.Config)) *calculator.Calculator {
	t.Helper()
	cfg := calculator.DefaultConfig()
	cfg.ID = id
	cfg.KitexAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Etcd = etcd.Config(prefix)
	cfg.Auth.AdminToken = testenv.AdminToken
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
	testenv.StopAtEnd(t, "calculator "+id, c)
	return c
}
