package security

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	hclient "github.com/cloudwego/hertz/pkg/app/client"
	hserver "github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/server"
	"github.com/go-jose/go-jose/v4"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo/comment"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
	"github.com/sextant-mesh/sextant/sdk/kitexsdk"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// plainPlane is a control plane as `sextant dev` runs it: a config-center
// with a certificate authority (it issues workload certificates) and a
// mesh-core, both serving plain HTTP with bearer tokens.
type plainPlane struct {
	etcd             *testenv.Etcd
	prefix           string
	center, meshCore string // http:// URLs
}

func startPlain(t *testing.T, certTTL time.Duration, tweak func(*center.Config)) *plainPlane {
	t.Helper()
	p := &plainPlane{etcd: testenv.StartEtcd(t), prefix: testenv.Prefix(t)}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(t.TempDir(), "ca-key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := centertest.Start(t, p.etcd, p.prefix, func(c *center.Config) {
		c.TLS.CAKeyFile, c.TLS.PlainHTTP, c.CertTTL = keyFile, true, certTTL
		if tweak != nil {
			tweak(c)
		}
	})
	mc := coretest.Start(t, p.etcd, p.prefix, func(*core.Config) {})
	p.center, p.meshCore = "http://"+cc.Addr(), "http://"+mc.Addr()
	return p
}

// putAccess writes service's access_control as an operator.
func (p *plainPlane) putAccess(t *testing.T, service string, ac api.AccessControl) {
	t.Helper()
	url := p.center + "/v1/configs/access_control/" + service
	body, _ := json.Marshal(ac)
	req, _ := http.NewRequest("PUT", url, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	if cur, err := testenv.HTTP.Get(url); err == nil {
		if etag := cur.Header.Get("ETag"); cur.StatusCode == 200 && etag != "" {
			req.Header.Set("If-Match", etag)
		}
		cur.Body.Close()
	}
	resp, err := testenv.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 && resp.StatusCode != 201 {
		t.Fatalf("PUT %s: %d", url, resp.StatusCode)
	}
}

// advertised waits until d discovers service's one instance advertising
// mode under api.TLSMetadataKey.
func advertised(t *testing.T, d *sdk.Discovery, service, mode string) {
	t.Helper()
	d.Watch(service, nil, nil)
	testenv.Eventually(t, 20*time.Second, func() error {
		snap, ok := d.Get(service)
		if !ok || len(snap.Instances) != 1 {
			return fmt.Errorf("%s: no instance discovered yet", service)
		}
		if got := snap.Instances[0].Metadata[api.TLSMetadataKey]; got != mode {
			return fmt.Errorf("%s advertises tls %q, want %q", service, got, mode)
		}
		return nil
	})
}

// Two services on the SDK's adapters with no TLS-specific code (a token,
// the config-center's address, the same options as without TLS): the
// server suite and the client options obtain their certificates from the
// config-center themselves, orders serves mTLS and plaintext on its port
// and its Registrar advertises it, frontend calls it over mTLS (orders
// refuses a missing identity, so each call that passes carried a verified
// certificate; frontend verified orders' certificate to dial it). legacy,
// a Kitex server without the SDK, is reached in plaintext and the calls are
// reported as plaintext. Then orders' access_control switches to strict:
// its registration advertises strict, plaintext connections are refused,
// and frontend goes on over mTLS.
func TestAutomaticMTLS(t *testing.T) {
	p := startPlain(t, time.Hour, nil)
	ordersToken := testenv.ServiceToken(t, p.etcd, p.prefix, "orders")
	frontendToken := testenv.ServiceToken(t, p.etcd, p.prefix, "frontend")
	legacyToken := testenv.ServiceToken(t, p.etcd, p.prefix, "legacy")
	p.putAccess(t, "orders", api.AccessControl{
		Rules:    []api.AccessRule{{Name: "frontend-only", Type: api.AccessAllow, Callers: []string{"frontend"}, Mode: api.ModeEnforce}},
		Identity: &api.IdentityPolicy{Missing: api.IdentityDeny},
	})

	// orders: the usual server-side pieces.
	watcher := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: p.center, Service: "orders", Instance: "orders-1", Token: ordersToken, Wait: time.Second})
	watcher.Start()
	t.Cleanup(watcher.Close)
	ordersRep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "orders", Instance: "orders-1", Token: ordersToken})
	gate := sdk.NewGate(sdk.GateOptions{Access: watcher.AccessRules, Reporter: ordersRep})
	suite := kitexsdk.NewServerSuite(gate, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := comment.NewServer(&commentServer{name: "orders"}, server.WithListener(ln), server.WithSuite(suite))
	go srv.Run() //nolint:errcheck // stopped below
	t.Cleanup(func() { _ = srv.Stop() })
	ordersAddr := ln.Addr().String()
	reg := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.meshCore, Token: ordersToken,
		Registration: sdk.Registration{Service: "orders", Instance: "orders-1", Addr: ordersAddr}})
	t.Cleanup(reg.Close)

	// legacy: a Kitex server without the SDK, registered by an operator.
	legacyAddr := startComment(t, "legacy")
	legacyReg := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.meshCore, Token: legacyToken,
		Registration: sdk.Registration{Service: "legacy", Instance: "legacy-1", Addr: legacyAddr}})
	t.Cleanup(legacyReg.Close)

	// frontend: the usual client-side pieces.
	fw := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: p.center, Service: "frontend", Instance: "frontend-1", Token: frontendToken, Wait: time.Second})
	fw.Start()
	t.Cleanup(fw.Close)
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: p.meshCore, Token: frontendToken, Wait: time.Second})
	t.Cleanup(d.Close)
	rep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "frontend", Instance: "frontend-1", Token: frontendToken})
	newClient := func(service string) comment.Client {
		c, err := comment.NewClient(service, append(kitexsdk.ClientOptions(service, d, rep, nil), client.WithRPCTimeout(5*time.Second))...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	toOrders, toLegacy := newClient("orders"), newClient("legacy")

	// Wait for the state: orders advertises mTLS once it holds its
	// certificate, frontend holds its own.
	advertised(t, d, "orders", api.TLSPermissive)
	advertised(t, d, "legacy", "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fid, err := d.Workload().Wait(ctx)
	if err != nil {
		t.Fatalf("frontend's workload identity: %v", err)
	}
	if fid.SpiffeID() != "spiffe://sextant.local/ns/default/sa/frontend" {
		t.Fatalf("frontend's identity %s", fid.SpiffeID())
	}
	if reg.Advertised() != api.TLSPermissive || legacyReg.Advertised() != "" {
		t.Fatalf("registrations advertise %q and %q", reg.Advertised(), legacyReg.Advertised())
	}

	call := func(c comment.Client) (string, error) {
		resp, err := c.Get(context.Background(), &demo.GetRequest{Id: "1"})
		if err != nil {
			return "", err
		}
		return resp.Instance, nil
	}
	for range 5 {
		if got, err := call(toOrders); err != nil || got != "orders" {
			t.Fatalf("frontend -> orders: %q, %v", got, err)
		}
		if got, err := call(toLegacy); err != nil || got != "legacy" {
			t.Fatalf("frontend -> legacy: %q, %v", got, err)
		}
	}
	if st := gate.IdentityStats(); st[api.IdentityVerified] != 5 || st[api.IdentityMissing] != 0 {
		t.Errorf("orders saw identities %v, want 5 verified", st)
	}
	if st := suite.Connections(); st.TLS == 0 || st.Plaintext != 0 {
		t.Errorf("orders' connections %+v, want mTLS only", st)
	}
	plaintext, calls := map[string]int64{}, map[string]int64{}
	for _, c := range rep.Flush(time.Now()).Calls {
		plaintext[c.CalleeService] += c.Plaintext
		calls[c.CalleeService] += c.Requests
	}
	if calls["orders"] != 5 || calls["legacy"] != 5 || plaintext["legacy"] != 5 || plaintext["orders"] != 0 {
		t.Errorf("reported calls %v, plaintext %v; want 5 each, legacy's in plaintext", calls, plaintext)
	}

	// A plaintext caller that declares itself frontend is denied: the
	// identity policy refuses a missing identity.
	plain, err := comment.NewClient("orders", append(kitexsdk.ClientOptions("orders", d, nil, nil, kitexsdk.WithoutEncryption()),
		client.WithRPCTimeout(5*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call(plain); !isDenied(err) {
		t.Fatalf("a plaintext caller: %v, want denied", err)
	}
	// orders' reports carry the identities of its callers and how its
	// connections came (the mixer writes them as time series).
	sec := ordersRep.Flush(time.Now()).Security
	if sec == nil || sec.Identities[api.IdentityVerified] != 5 || sec.Identities["missing_denied"] != 1 ||
		sec.Connections["tls"] == 0 || sec.Connections["plaintext"] != 1 {
		t.Errorf("orders' report's security part %+v, want 5 verified, 1 missing denied, mTLS and 1 plaintext connection", sec)
	}

	// Strict: the registration follows, plaintext connections are refused.
	p.putAccess(t, "orders", api.AccessControl{
		Rules:    []api.AccessRule{{Name: "frontend-only", Type: api.AccessAllow, Callers: []string{"frontend"}, Mode: api.ModeEnforce}},
		Identity: &api.IdentityPolicy{Missing: api.IdentityDeny}, TLS: api.TLSStrict,
	})
	advertised(t, d, "orders", api.TLSStrict)
	conn, err := net.Dial("tcp", ordersAddr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte{0, 0, 0, 0})
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Errorf("strict: a plaintext connection was read from (%d bytes)", n)
	}
	conn.Close()
	if st := suite.Connections(); st.PlaintextRefused != 1 {
		t.Errorf("orders' connections %+v, want a plaintext one refused", st)
	}
	if sec := ordersRep.Flush(time.Now()).Security; sec == nil || sec.Connections["plaintext_refused"] != 1 {
		t.Errorf("orders' report's security part %+v, want a plaintext connection refused", sec)
	}
	if got, err := call(toOrders); err != nil || got != "orders" {
		t.Fatalf("frontend -> orders in strict mode: %q, %v", got, err)
	}
}

func isDenied(err error) bool {
	var bse interface{ BizStatusCode() int32 }
	return errors.As(err, &bse) && bse.BizStatusCode() == kitexsdk.DeniedCode
}

// A workload proving who it is with a projected service-account token
// reads the token file again at every renewal: kubelet rewrites it as it
// rotates it. The file first holds a token of namespace shop, then one of
// namespace shop-b; the renewal after the rewrite gets a certificate of
// the new token's identity.
func TestServiceAccountTokenFileReread(t *testing.T) {
	iss := startIssuer(t)
	p := startPlain(t, time.Hour, func(c *center.Config) {
		c.OIDC.Issuer, c.OIDC.JWKSURL, c.OIDC.Audience, c.OIDC.CAFile = iss.url, iss.jwks, "sextant", iss.caFile
	})
	file := filepath.Join(t.TempDir(), "token")
	write := func(ns string) {
		tok := sign(t, validToken(ns, "orders"), jose.RS256, iss.rsa, "rsa-1")
		// As kubelet does: a new file renamed over the old one.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write("shop")
	t.Setenv(sdk.TokenEnv, "")
	t.Setenv(sdk.ServiceAccountTokenEnv, file)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// The token file from the environment, short-lived certificates.
	id, err := sdk.NewIdentity(ctx, sdk.IdentityOptions{ConfigCenter: p.center, TTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(id.Close)
	if id.SpiffeID() != "spiffe://sextant.local/ns/shop/sa/orders" {
		t.Fatalf("first certificate %s", id.SpiffeID())
	}
	first := id.Certificate().Leaf.SerialNumber
	// A renewal with the same file: a new certificate, the same identity.
	testenv.Eventually(t, 10*time.Second, func() error {
		if c := id.Certificate(); c == nil || c.Leaf.SerialNumber.Cmp(first) == 0 {
			return errors.New("not renewed yet")
		}
		return nil
	})
	if id.SpiffeID() != "spiffe://sextant.local/ns/shop/sa/orders" {
		t.Fatalf("renewed certificate %s", id.SpiffeID())
	}
	write("shop-b")
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := id.SpiffeID(); got != "spiffe://sextant.local/ns/shop-b/sa/orders" {
			return fmt.Errorf("identity %s: the rewritten token file not read yet", got)
		}
		return nil
	})
}

// The Hertz adapter with no TLS-specific code: with a token and the
// config-center's address in the environment, hertzsdk.ServerOptions serve
// mTLS and plaintext on the server's port with the workload's certificate,
// the Registrar advertises it, and Admission admits a caller over mTLS as
// its certificate's service. A Hertz client made with
// hertzsdk.ClientOptions (the same workload: the environment holds one
// token) dials it mTLS through Balance, and a plain Hertz server in
// plaintext, reported so.
func TestAutomaticMTLSHertz(t *testing.T) {
	p := startPlain(t, time.Hour, nil)
	ordersToken := testenv.ServiceToken(t, p.etcd, p.prefix, "orders")
	frontendToken := testenv.ServiceToken(t, p.etcd, p.prefix, "frontend")
	p.putAccess(t, "orders", api.AccessControl{
		Rules:    []api.AccessRule{{Name: "frontend-only", Type: api.AccessAllow, Callers: []string{"frontend", "orders"}, Mode: api.ModeEnforce}},
		Identity: &api.IdentityPolicy{Missing: api.IdentityDeny},
	})
	t.Setenv(sdk.TokenEnv, ordersToken)
	t.Setenv(sdk.ConfigCenterEnv, p.center)
	legacyToken := testenv.ServiceToken(t, p.etcd, p.prefix, "legacy")

	watcher := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: p.center, Service: "orders", Instance: "orders-1", Wait: time.Second})
	watcher.Start()
	t.Cleanup(watcher.Close)
	gate := sdk.NewGate(sdk.GateOptions{Access: watcher.AccessRules})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := hserver.New(append(hertzsdk.ServerOptions(), hserver.WithListener(ln), hserver.WithExitWaitTime(100*time.Millisecond))...)
	h.Use(hertzsdk.Admission(gate, nil))
	h.GET("/order", func(_ context.Context, c *app.RequestContext) { c.String(200, "orders") })
	go h.Run() //nolint:errcheck // stopped by Shutdown below
	t.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	addr := ln.Addr().String()
	reg := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.meshCore, Registration: sdk.Registration{Service: "orders", Instance: "orders-1", Addr: addr}})
	t.Cleanup(reg.Close)
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: p.meshCore, Token: frontendToken, Wait: time.Second})
	t.Cleanup(d.Close)
	advertised(t, d, "orders", api.TLSPermissive)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	fid, err := sdk.NewIdentity(ctx, sdk.IdentityOptions{ConfigCenter: p.center, Token: frontendToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fid.Close)
	enc := hertzsdk.NewEncryption(fid, "orders")
	c, err := hclient.NewClient(enc.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	c.Use(hertzsdk.CallReporter("frontend", "orders", nil), hertzsdk.Balance("orders", d, nil, nil), enc.Middleware())
	for range 3 {
		status, body, err := c.Get(context.Background(), nil, "http://orders/order")
		if err != nil || status != 200 || string(body) != "orders" {
			t.Fatalf("frontend -> orders over mTLS: %d %q %v", status, body, err)
		}
	}
	if enc.TLSCalls() != 3 {
		t.Errorf("%d calls over mTLS, want 3", enc.TLSCalls())
	}
	// A plaintext caller declaring frontend: a missing identity, denied.
	resp, err := http.Get("http://" + addr + "/order")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("a plaintext caller: %d, want 403", resp.StatusCode)
	}
	if st := gate.IdentityStats(); st[api.IdentityVerified] != 3 || st["missing_denied"] != 1 {
		t.Errorf("identities %v, want 3 verified, 1 missing denied", st)
	}

	// A Hertz client on hertzsdk.ClientOptions: mTLS to orders, which
	// advertises it, with the workload's own certificate; plaintext to
	// legacy, a plain Hertz server.
	legacyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	legacy := hserver.New(hserver.WithListener(legacyLn), hserver.WithExitWaitTime(100*time.Millisecond))
	legacy.GET("/order", func(_ context.Context, c *app.RequestContext) { c.String(200, "legacy") })
	go legacy.Run() //nolint:errcheck // stopped by Shutdown below
	t.Cleanup(func() { _ = legacy.Shutdown(context.Background()) })
	legacyReg := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.meshCore, Token: legacyToken,
		Registration: sdk.Registration{Service: "legacy", Instance: "legacy-1", Addr: legacyLn.Addr().String()}})
	t.Cleanup(legacyReg.Close)
	advertised(t, d, "legacy", "")
	if _, err := sdk.WorkloadOf("").Wait(ctx); err != nil {
		t.Fatal(err)
	}
	rep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "orders", Instance: "orders-2"})
	clients := map[string]*hclient.Client{}
	for _, callee := range []string{"orders", "legacy"} { // a client per callee, as CallReporter wants
		c, err := hclient.NewClient(hertzsdk.ClientOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		c.Use(hertzsdk.CallReporter("orders", callee, rep), hertzsdk.Balance(callee, d, nil, nil))
		clients[callee] = c
	}
	for range 3 {
		for _, callee := range []string{"orders", "legacy"} {
			status, body, err := clients[callee].Get(context.Background(), nil, "http://"+callee+"/order")
			if err != nil || status != 200 || string(body) != callee {
				t.Fatalf("orders -> %s on ClientOptions: %d %q %v", callee, status, body, err)
			}
		}
	}
	if st := gate.IdentityStats(); st[api.IdentityVerified] != 6 {
		t.Errorf("identities %v, want 6 verified: the automatic client's calls came over mTLS", st)
	}
	plaintext, calls := map[string]int64{}, map[string]int64{}
	for _, c := range rep.Flush(time.Now()).Calls {
		plaintext[c.CalleeService] += c.Plaintext
		calls[c.CalleeService] += c.Requests
	}
	if calls["orders"] != 3 || calls["legacy"] != 3 || plaintext["legacy"] != 3 || plaintext["orders"] != 0 {
		t.Errorf("reported calls %v, plaintext %v; want 3 each, legacy's in plaintext", calls, plaintext)
	}
}

// The automatic mTLS between two Kitex services with certificates of a few
// seconds: both ends renew theirs under a steady load, and no call fails
// (orders refuses a missing identity, so every call carried a certificate).
func TestAutomaticMTLSRotationUnderLoad(t *testing.T) {
	const ttl = 3 * time.Second
	p := startPlain(t, ttl, nil)
	ordersToken := testenv.ServiceToken(t, p.etcd, p.prefix, "orders")
	frontendToken := testenv.ServiceToken(t, p.etcd, p.prefix, "frontend")
	p.putAccess(t, "orders", api.AccessControl{
		Rules:    []api.AccessRule{{Name: "frontend-only", Type: api.AccessAllow, Callers: []string{"frontend"}, Mode: api.ModeEnforce}},
		Identity: &api.IdentityPolicy{Missing: api.IdentityDeny},
	})
	watcher := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: p.center, Service: "orders", Instance: "orders-1", Token: ordersToken, Wait: time.Second})
	watcher.Start()
	t.Cleanup(watcher.Close)
	gate := sdk.NewGate(sdk.GateOptions{Access: watcher.AccessRules,
		Reporter: sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "orders", Instance: "orders-1", Token: ordersToken})})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := comment.NewServer(&commentServer{name: "orders"}, server.WithListener(ln), server.WithSuite(kitexsdk.NewServerSuite(gate, nil)))
	go srv.Run() //nolint:errcheck // stopped below
	t.Cleanup(func() { _ = srv.Stop() })
	reg := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.meshCore, Token: ordersToken,
		Registration: sdk.Registration{Service: "orders", Instance: "orders-1", Addr: ln.Addr().String()}})
	t.Cleanup(reg.Close)

	fw := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: p.center, Service: "frontend", Instance: "frontend-1", Token: frontendToken, Wait: time.Second})
	t.Cleanup(fw.Close)
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: p.meshCore, Token: frontendToken, Wait: time.Second})
	t.Cleanup(d.Close)
	c, err := comment.NewClient("orders", append(kitexsdk.ClientOptions("orders", d, nil, nil), client.WithRPCTimeout(5*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	advertised(t, d, "orders", api.TLSPermissive)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fid, err := d.Workload().Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}

	var (
		ok, failed atomic.Int64
		serials    sync.Map
		firstErr   atomic.Value
		wg         sync.WaitGroup
	)
	stop := time.Now().Add(4 * ttl)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if cert := fid.Certificate(); cert != nil {
					serials.Store(cert.Leaf.SerialNumber.String(), true)
				}
				if _, err := c.Get(context.Background(), &demo.GetRequest{Id: "1"}); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	n := 0
	serials.Range(func(any, any) bool { n++; return true })
	t.Logf("%d calls, %d certificates of frontend, identities %v", ok.Load(), n, gate.IdentityStats())
	if failed.Load() > 0 {
		t.Fatalf("%d of %d calls failed; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if n < 4 {
		t.Fatalf("%d certificates over %s of certificates of %s: not renewed", n, 4*ttl, ttl)
	}
	if st := gate.IdentityStats(); st[api.IdentityVerified] != ok.Load() {
		t.Errorf("identities %v, want %d verified", st, ok.Load())
	}
}
