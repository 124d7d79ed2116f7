package center_test

import (
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
)

// --tls-cert and --tls-key serve the API over TLS, and only over TLS.
func TestAPIOverTLS(t *testing.T) {
	ca := testenv.NewCA(t)
	certFile, keyFile := ca.Issue(t, "config-center")
	etcd := testenv.StartEtcd(t)
	cc := centertest.Start(t, etcd, testenv.Prefix(t), func(c *center.Config) { c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile })
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	req, _ := http.NewRequest(http.MethodGet, "https://"+cc.Addr()+"/v1/configs?service=s", nil)
	req.Header.Set("Authorization", "Bearer "+centertest.AdminToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTPS: %d", resp.StatusCode)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + cc.Addr() + "/v1/configs?service=s"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP answered on a TLS port")
	}
}
