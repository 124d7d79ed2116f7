package sdk_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// mesh-core's GET /v1/dataplanes says which version of each service every
// data plane that names itself holds, against the version in force: SDK
// data planes on either port follow every change (SYNCED); one that stopped
// polling is STALE after a change.
func TestDataPlanesDiscoveryStatus(t *testing.T) {
	const svc = "comment-svc"
	etcd, prefix := testenv.StartEtcd(t), testenv.Prefix(t)
	pollAddr := testenv.FreeAddr(t)
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) { c.PollAddr = pollAddr })
	token := testenv.ServiceToken(t, etcd, prefix, svc)
	register := func(i int) {
		addr := fmt.Sprintf("10.0.0.%d:9000", i)
		r := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: mc.Addr(), Token: token, Registration: sdk.Registration{Service: svc, Instance: addr, Addr: addr}})
		t.Cleanup(r.Close)
	}
	register(1)
	callerToken := testenv.ServiceToken(t, etcd, prefix, "caller")
	for name, addr := range map[string]string{"dp-poll-port": pollAddr, "dp-http-port": mc.Addr()} {
		d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: addr, Token: callerToken, Wait: 5 * time.Second, Client: name})
		t.Cleanup(d.Close)
		d.Watch(svc, nil, nil)
	}
	get := func(path string) (int, []byte) {
		req, _ := http.NewRequest("GET", "http://"+mc.Addr()+path, nil)
		req.Header.Set("Authorization", "Bearer "+callerToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	states := func() map[string]string {
		code, body := get("/v1/dataplanes?service=" + svc)
		var got struct {
			DataPlanes []core.DataPlanePoll `json:"dataplanes"`
		}
		if code != 200 || json.Unmarshal(body, &got) != nil {
			t.Fatalf("dataplanes: %d %s", code, body)
		}
		out := map[string]string{}
		for _, p := range got.DataPlanes {
			out[p.Client] = p.State
		}
		return out
	}
	// A data plane that polls once, then no more.
	testenv.Eventually(t, 10*time.Second, func() error {
		if code, body := get("/v1/discovery/" + svc + "?wait=0s&client=dp-gone"); code != 200 {
			return fmt.Errorf("poll: %d %s", code, body)
		}
		want := "map[dp-gone:SYNCED dp-http-port:SYNCED dp-poll-port:SYNCED]"
		if got := fmt.Sprint(states()); got != want {
			return fmt.Errorf("before the change: %s, want %s", got, want)
		}
		return nil
	})
	register(2)
	testenv.Eventually(t, 10*time.Second, func() error {
		want := "map[dp-gone:STALE dp-http-port:SYNCED dp-poll-port:SYNCED]"
		if got := fmt.Sprint(states()); got != want {
			return fmt.Errorf("after the change: %s, want %s", got, want)
		}
		return nil
	})
	if code, body := get("/v1/discovery/" + svc + "?wait=0s&client=bad%20name"); code != 400 {
		t.Errorf("a client name with a space: %d %s, want 400", code, body)
	}
}
