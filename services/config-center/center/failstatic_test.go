package center_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
)

// The config-center is not ready before it ever synced with etcd. Once it
// has, it stays ready while etcd is away: watches serve the last known
// configs (the API's reads and writes, which go to etcd, fail), /readyz says
// so (200, stale) and so does
// sextant_configcenter_etcd_connected; /healthz is unaffected.
func TestReadyWithTheLastConfigsWhileEtcdIsAway(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	etcd.Stop()
	srv := centertest.Start(t, etcd, prefix, nil)
	cc := apiClient{t: t, base: "http://" + srv.Addr(), token: centertest.AdminToken}
	time.Sleep(time.Second)
	if r := cc.do("GET", "/readyz", ""); r.status != 503 {
		t.Fatalf("/readyz before etcd ever answered: %s", r)
	}
	etcd.Restart()
	testenv.Eventually(t, 30*time.Second, func() error {
		if r := cc.do("GET", "/readyz", ""); r.status != 200 || strings.Contains(string(r.body), "stale") {
			return fmt.Errorf("/readyz %s", r)
		}
		return nil
	})
	testenv.WaitMetric(t, srv.Addr(), "sextant_configcenter_etcd_connected", 1)
	doc := `{"connection_limit": 100, "qps_limit": 1000}`
	if r := cc.do("PUT", "/v1/configs/limit/comment-svc", doc); r.status != 200 {
		t.Fatalf("PUT: %s", r)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if status, a := cc.watch("comment-svc", "10.0.0.1:80", 0, 0, "0s"); status != 200 {
			return fmt.Errorf("watch %d", status)
		} else if qps, _ := limitOf(t, a); qps != 1000 {
			return fmt.Errorf("watch answers qps_limit %d", qps)
		}
		return nil
	})

	etcd.Stop()
	testenv.WaitMetric(t, srv.Addr(), "sextant_configcenter_etcd_connected", 0)
	if r := cc.do("GET", "/readyz", ""); r.status != 200 || !strings.Contains(string(r.body), `"stale":true`) ||
		!strings.Contains(string(r.body), "last known configs") {
		t.Fatalf("/readyz while etcd is away: %s, want 200 serving the last known configs", r)
	}
	if r := cc.do("GET", "/healthz", ""); r.status != 200 {
		t.Fatalf("/healthz while etcd is away: %s", r)
	}
	if status, a := cc.watch("comment-svc", "10.0.0.1:80", 0, 0, "0s"); status != 200 {
		t.Fatalf("watch while etcd is away: %d", status)
	} else if qps, _ := limitOf(t, a); qps != 1000 {
		t.Fatalf("watch while etcd is away answers qps_limit %d, want the last known 1000", qps)
	}

	etcd.Restart()
	testenv.WaitMetric(t, srv.Addr(), "sextant_configcenter_etcd_connected", 1)
	if r := cc.do("GET", "/readyz", ""); r.status != 200 || strings.Contains(string(r.body), "stale") {
		t.Fatalf("/readyz once etcd is back: %s", r)
	}
}
