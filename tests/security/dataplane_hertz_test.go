package security

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
)

// The Hertz adapter on one port for mTLS and plaintext: a caller over mTLS
// is admitted as its certificate's service, whatever x-sextant-caller
// says; a plaintext caller is admitted by its declared name while the
// identity policy allows a missing identity.
func TestDataPlaneEncryptionHertz(t *testing.T) {
	p := startTLS(t, time.Hour)
	ordersID := p.identity(t, "orders", 0)
	frontendID := p.identity(t, "frontend", 0)
	intruderID := p.identity(t, "intruder", 0)

	rules := &sdk.AccessRules{Rules: []api.AccessRule{{Name: "frontend-only", Type: api.AccessAllow, Callers: []string{"frontend"}, Mode: api.ModeEnforce}}}
	gate := sdk.NewGate(sdk.GateOptions{Access: func() *sdk.AccessRules { return rules }})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := sdk.NewTLSListener(raw, ordersID, nil)
	h := server.New(append(hertzsdk.TLSServerOptions(ln), server.WithExitWaitTime(100*time.Millisecond))...)
	h.Use(hertzsdk.VerifiedAdmission(gate, nil, ordersID))
	h.GET("/order", func(_ context.Context, c *app.RequestContext) { c.String(200, "orders") })
	go h.Run() //nolint:errcheck // stopped by Shutdown below
	t.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	addr := raw.Addr().String()

	get := func(c *http.Client, scheme string) (int, error) {
		req, _ := http.NewRequest("GET", scheme+"://"+addr+"/order", nil)
		req.Header.Set(sdk.CallerKey, "frontend")
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	presenting := func(id *sdk.Identity) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return id.Certificate(), nil },
		}}}
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	var status int
	for _, tc := range []struct {
		name   string
		c      *http.Client
		scheme string
		want   int
	}{
		{"frontend over mTLS", presenting(frontendID), "https", 200},
		{"intruder over mTLS declaring frontend", presenting(intruderID), "https", 403},
		{"plaintext declaring frontend", plain, "http", 200},
	} {
		// The server may still be starting.
		deadline := time.Now().Add(5 * time.Second)
		for status, err = get(tc.c, tc.scheme); err != nil && time.Now().Before(deadline); status, err = get(tc.c, tc.scheme) {
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil || status != tc.want {
			t.Errorf("%s: %d, %v; want %d", tc.name, status, err, tc.want)
		}
	}
	st := gate.IdentityStats()
	if st[api.IdentityVerified] != 2 || st[api.IdentityMissing] != 1 {
		t.Errorf("identities %v, want 2 verified, 1 missing", st)
	}
	if c := ln.Connections(); c.TLS != 2 || c.Plaintext != 1 {
		t.Errorf("connections %+v, want 2 over mTLS, 1 plaintext", c)
	}
}
