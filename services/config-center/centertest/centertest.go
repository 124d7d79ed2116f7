// Package centertest starts a config-center for a test, as net/http/httptest
// starts an HTTP server: on a free loopback port, over the test's etcd,
// stopped when the test ends.
package centertest

import (
	"strings"
	"testing"

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/center"
)

// AdminToken is the writer token of config-centers started by Start.
const AdminToken = testenv.AdminToken

// Start starts a config-center on a free port over etcd under prefix, with
// AdminToken as its writer token and tweak (may be nil) applied to its
// config; it stops when the test ends.
func Start(t testing.TB, etcd *testenv.Etcd, prefix string, tweak func(*center.Config)) *center.Center {
	t.Helper()
	cfg := center.DefaultConfig()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Etcd = etcd.Config(prefix)
	cfg.KitexPrefix = "/" + strings.Trim(prefix, "/") + "-kitex"
	cfg.Auth.AdminToken = AdminToken
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
	testenv.StopAtEnd(t, "config-center", cc)
	return cc
}
