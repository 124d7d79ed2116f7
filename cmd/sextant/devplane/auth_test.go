package devplane

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/bearer"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
)

// operator is a client with the admin token sextant dev printed.
func operator(a Addrs) *http.Client { return bearer.Client(a.AdminToken) }

// dataPlane is a client with a token of service, issued by the config-center
// as `sextant token create --service service` asks it.
func dataPlane(t *testing.T, a Addrs, service string) *http.Client {
	t.Helper()
	body, _ := json.Marshal(api.TokenRequest{Service: service})
	resp, err := operator(a).Post("http://"+a.ConfigCenter+"/v1/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var issued api.TokenIssued
	if err := json.NewDecoder(resp.Body).Decode(&issued); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("token of %s: %d %v", service, resp.StatusCode, err)
	}
	c := bearer.Client(issued.Token)
	// Each service learns the token from etcd a moment later.
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, probe := range []struct{ method, url, body string }{
			{"GET", "http://" + a.MeshCore + "/v1/discovery/" + service + "?wait=0s", ""},
			{"POST", "http://" + a.Mixer + "/v1/telemetry", "{}"},
			{"GET", "http://" + a.ConfigCenter + "/v1/configs?service=" + service, ""},
		} {
			req, _ := http.NewRequest(probe.method, probe.url, strings.NewReader(probe.body))
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return fmt.Errorf("%s does not know the token of %s yet", probe.url, service)
			}
		}
		return nil
	})
	return c
}
