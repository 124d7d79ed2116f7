package security

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	hclient "github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/network/standard"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
)

// The Hertz adapter on one port for mTLS and plaintext: a caller over mTLS
// is admitted as its certificate's service, whatever x-sextant-caller
// says; a plaintext caller is admitted by its declared name while the
// identity policy allows a missing identity. Hertz clients on the SDK call
// it over mTLS, and a plain Hertz server in plaintext, counted.
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

	// Hertz clients on the SDK: orders advertises mTLS and is called over
	// https; legacy, a plain Hertz server, in plaintext; both counted, the
	// plaintext calls reported.
	legacyID := p.identity(t, "legacy", 0)
	legacyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	legacy := server.New(server.WithListener(legacyLn), server.WithTransport(standard.NewTransporter), server.WithExitWaitTime(100*time.Millisecond))
	legacy.GET("/order", func(_ context.Context, c *app.RequestContext) { c.String(200, "legacy") })
	go legacy.Run() //nolint:errcheck // stopped by Shutdown below
	t.Cleanup(func() { _ = legacy.Shutdown(context.Background()) })
	p.register(t, ordersID, "orders", addr, map[string]string{api.TLSMetadataKey: api.TLSPermissive})
	p.register(t, legacyID, "legacy", legacyLn.Addr().String(), nil)

	rep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "frontend", Instance: "frontend-1"})
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: p.meshCore, HTTPClient: frontendID.HTTPClient(), Wait: time.Second})
	t.Cleanup(d.Close)
	hertzClient := func(callee string) (*hclient.Client, *hertzsdk.Encryption) {
		t.Helper()
		d.Watch(callee, nil, nil)
		testenv.Eventually(t, 10*time.Second, func() error {
			if snap, ok := d.Get(callee); !ok || len(snap.Instances) == 0 {
				return errors.New("no instance discovered yet")
			}
			return nil
		})
		enc := hertzsdk.NewEncryption(frontendID, callee)
		c, err := hclient.NewClient(enc.ClientOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		c.Use(hertzsdk.CallReporter("frontend", callee, rep), hertzsdk.Balance(callee, d, nil, nil), enc.Middleware())
		return c, enc
	}
	for _, callee := range []string{"orders", "legacy"} {
		c, enc := hertzClient(callee)
		for range 3 {
			status, body, err := c.Get(context.Background(), nil, "http://"+callee+"/order")
			if err != nil || status != 200 || string(body) != callee {
				t.Fatalf("frontend -> %s: %d %q %v", callee, status, body, err)
			}
		}
		if want := map[string][2]int64{"orders": {3, 0}, "legacy": {0, 3}}[callee]; enc.TLSCalls() != want[0] || enc.PlaintextCalls() != want[1] {
			t.Errorf("%s: %d calls over mTLS, %d in plaintext; want %v", callee, enc.TLSCalls(), enc.PlaintextCalls(), want)
		}
	}
	plaintext := map[string]int64{}
	for _, c := range rep.Flush(time.Now()).Calls {
		plaintext[c.CalleeService] += c.Plaintext
	}
	if plaintext["legacy"] != 3 || plaintext["orders"] != 0 {
		t.Errorf("reported plaintext calls %v, want legacy 3", plaintext)
	}
	if st := gate.IdentityStats(); st[api.IdentityVerified] != 5 {
		t.Errorf("identities %v, want 5 verified", st)
	}
}
