package mixer_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// The mixer is ready while it follows the shard registrations in etcd, and
// says so on /readyz while etcd is away (it routes by the last shards it
// saw); ready again when etcd is back.
func TestReadinessFollowsEtcd(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	mx := mixertest.Start(t, etcd, prefix, nil)
	ready := func() error {
		if r := testenv.Ready(t, mx.Addr()); len(r) > 0 {
			return fmt.Errorf("not ready: %v", r)
		}
		return nil
	}
	testenv.Eventually(t, 30*time.Second, ready)

	etcd.Stop()
	testenv.Eventually(t, 30*time.Second, func() error {
		r := testenv.Ready(t, mx.Addr())
		if len(r) != 1 || !strings.Contains(r[0], "etcd") {
			return fmt.Errorf("/readyz reasons %q while etcd is away, want the shard membership not following etcd", r)
		}
		return nil
	})

	etcd.Restart()
	testenv.Eventually(t, 30*time.Second, ready)
}
