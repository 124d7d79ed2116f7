package devplane

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/sextant-mesh/sextant/api"
)

// bearer is a client that sends one credential with every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set(api.AuthorizationHeader, api.BearerPrefix+b.token)
	return http.DefaultTransport.RoundTrip(req)
}

// operator is a client with the admin token sextant dev printed.
func operator(a Addrs) *http.Client { return &http.Client{Transport: bearer{a.AdminToken}} }

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
	return &http.Client{Transport: bearer{issued.Token}}
}
