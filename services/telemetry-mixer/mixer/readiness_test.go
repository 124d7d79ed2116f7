package mixer_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// readyz is the mixer's /readyz answer.
type readyz struct {
	status int
	Stale  bool     `json:"stale"`
	Detail []string `json:"detail"`
}

func getReadyz(t *testing.T, addr string) readyz {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := readyz{status: resp.StatusCode}
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return r
}

// The mixer is not ready before it ever listed the shards from etcd. Once it
// has, it stays ready while etcd is away (it routes by the last shards it
// saw), saying so on /readyz and in sextant_mixer_etcd_connected; when etcd
// is back the detail goes away.
func TestReadinessFollowsEtcd(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	etcd.Stop()
	mx := mixertest.Start(t, etcd, prefix, nil)
	time.Sleep(time.Second)
	if r := testenv.Ready(t, mx.Addr()); len(r) != 1 || !strings.Contains(r[0], "not listed") {
		t.Fatalf("/readyz reasons %q before etcd ever answered, want the shards not listed yet", r)
	}
	etcd.Restart()
	ready := func() error {
		if r := getReadyz(t, mx.Addr()); r.status != 200 || r.Stale {
			return fmt.Errorf("not ready and live: %+v", r)
		}
		return nil
	}
	testenv.Eventually(t, 30*time.Second, ready)
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_etcd_connected", 1)

	etcd.Stop()
	testenv.Eventually(t, 30*time.Second, func() error {
		r := getReadyz(t, mx.Addr())
		if r.status != 200 || !r.Stale || len(r.Detail) != 1 || !strings.Contains(r.Detail[0], "last shards seen") {
			return fmt.Errorf("/readyz %+v while etcd is away, want 200 routing by the last shards seen", r)
		}
		return nil
	})
	if testenv.Metric(t, mx.Addr(), "sextant_mixer_etcd_connected") != 0 {
		t.Fatal("etcd_connected not 0 while etcd is away")
	}
	resp, err := http.Get("http://" + mx.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz while etcd is away: %d", resp.StatusCode)
	}

	etcd.Restart()
	testenv.Eventually(t, 30*time.Second, ready)
}
