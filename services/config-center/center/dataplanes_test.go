package center_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"

	"github.com/sextant-mesh/sextant/services/config-center/center"
)

// /v1/dataplanes tells, per watching instance, whether it runs the configs
// in force: SYNCED once it reports applying them, STALE while it was sent
// them and has not, NOT SENT after a change it has not polled for.
func TestDataPlaneStatus(t *testing.T) {
	_, _, cc := setup(t, nil)
	path := "/v1/configs/limit/shop"
	if r := cc.do("PUT", path, `{"qps_limit": 100}`); r.status != 200 {
		t.Fatalf("put: %s", r)
	}
	states := func(query string) map[string]string {
		r := cc.do("GET", "/v1/dataplanes"+query, "")
		var got struct {
			DataPlanes []center.DataPlane `json:"dataplanes"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &got) != nil {
			t.Fatalf("dataplanes: %s", r)
		}
		out := map[string]string{}
		for _, d := range got.DataPlanes {
			out[d.Service+" "+d.Instance] = d.State
		}
		return out
	}
	// The config-center's view follows etcd: watch once it holds the config.
	var a api.WatchAnswer
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, a = cc.watch("shop", "10.0.0.1:80", 0, 0, "0s"); len(a.Configs) == 0 {
			return errors.New("the view does not hold the config yet")
		}
		return nil
	})
	cc.watch("shop", "10.0.0.1:80", a.Version, a.Version, "0s") // reports applying it
	cc.watch("shop", "10.0.0.2:80", 0, 0, "0s")                 // answered, never reports
	cc.watch("cart", "10.0.1.1:80", 0, 0, "0s")
	want := map[string]string{"shop 10.0.0.1:80": center.StateSynced, "shop 10.0.0.2:80": center.StateStale}
	if got := states("?service=shop"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("before the change: %v, want %v", got, want)
	}
	if got := states(""); len(got) != 3 {
		t.Errorf("every service: %v, want 3 instances", got)
	}

	cur := cc.do("GET", path, "")
	if r := cc.do("PUT", path, `{"qps_limit": 50}`, "If-Match", cur.header.Get("ETag")); r.status != 200 {
		t.Fatalf("change: %s", r)
	}
	want = map[string]string{"shop 10.0.0.1:80": center.StateNotSent, "shop 10.0.0.2:80": center.StateNotSent}
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := states("?service=shop"); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("after the change: %v, want %v", got, want)
		}
		return nil
	})
	if r := cc.do("GET", "/v1/dataplanes?service=a%20b", ""); r.status != 400 {
		t.Errorf("a bad service name: %s, want 400", r)
	}
}
