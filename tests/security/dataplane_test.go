package security

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/pki"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo/comment"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/kitexsdk"
)

// commentServer answers with its name.
type commentServer struct{ name string }

func (s *commentServer) Get(context.Context, *demo.GetRequest) (*demo.GetResponse, error) {
	return &demo.GetResponse{Instance: s.name}, nil
}

// startComment serves a comment service on a free port with opts.
func startComment(t *testing.T, name string, opts ...server.Option) string {
	t.Helper()
	ln, err := kitexx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := kitexx.NewServer(name, ln, func(o ...server.Option) server.Server {
		return comment.NewServer(&commentServer{name: name}, o...)
	}, opts...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return ln.Addr().String()
}

// register registers service's instance at addr with mesh-core over c.
func (p *tlsPlane) register(t *testing.T, c *sdk.Identity, service, addr string, metadata map[string]string) {
	t.Helper()
	body := fmt.Sprintf(`{"service":%q,"instance":%q,"addr":%q,"metadata":%s}`, service, addr, addr, jsonOf(t, metadata))
	if a := do(t, c.HTTPClient(), "POST", p.meshCore+"/v1/instances", "", body); a.status != 201 {
		t.Fatalf("registration of %s: %s", service, a)
	}
}

func jsonOf(t *testing.T, m map[string]string) string {
	if m == nil {
		return "{}"
	}
	s := "{"
	for k, v := range m {
		if len(s) > 1 {
			s += ","
		}
		s += fmt.Sprintf("%q:%q", k, v)
	}
	return s + "}"
}

// Encryption between data planes, over real sockets with certificates the
// config-center issues: orders serves mTLS and plaintext on one port and
// lets frontend in only; legacy is a plain Kitex server without the SDK.
// frontend's client, with one Encryption, reaches orders over mTLS (it
// advertises tls in its registration) and legacy in plaintext, counted. A
// caller whose certificate is of another service is denied although it
// declares itself frontend; a plaintext caller declaring frontend passes
// while the identity policy allows a missing identity, and is denied once
// it does not; in strict mode its connection is refused.
func TestDataPlaneEncryption(t *testing.T) {
	p := startTLS(t, time.Hour)
	ordersID := p.identity(t, "orders", 0)
	frontendID := p.identity(t, "frontend", 0)
	intruderID := p.identity(t, "intruder", 0)
	legacyID := p.identity(t, "legacy", 0)

	var rules atomic.Pointer[sdk.AccessRules]
	rules.Store(&sdk.AccessRules{Rules: []api.AccessRule{{Name: "frontend-only", Type: api.AccessAllow, Callers: []string{"frontend"}, Mode: api.ModeEnforce}}})
	ordersRep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "orders", Instance: "orders-1"})
	gate := sdk.NewGate(sdk.GateOptions{Access: rules.Load, Reporter: ordersRep})
	ln, err := kitexx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	suite := kitexsdk.NewServerSuite(gate, nil).WithTLS(ln, ordersID, func() string { return rules.Load().TLSMode() })
	srv := kitexx.NewServer("orders", ln, func(o ...server.Option) server.Server {
		return comment.NewServer(&commentServer{name: "orders"}, o...)
	}, server.WithSuite(suite))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	ordersAddr := ln.Addr().String()
	legacyAddr := startComment(t, "legacy")

	p.register(t, ordersID, "orders", ordersAddr, map[string]string{api.TLSMetadataKey: api.TLSPermissive})
	p.register(t, legacyID, "legacy", legacyAddr, nil)

	// client is a Kitex client of service on the SDK, with caller's
	// identity, declaring itself declared.
	frontendRep := sdk.NewReporter(sdk.ReporterOptions{Mixer: "127.0.0.1:1", Service: "frontend", Instance: "frontend-1"})
	client := func(id *sdk.Identity, enc *kitexsdk.Encryption, service, declared string, extra ...client.Option) comment.Client {
		t.Helper()
		d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: p.meshCore, HTTPClient: id.HTTPClient(), Wait: time.Second})
		t.Cleanup(d.Close)
		d.Watch(service, nil, nil)
		testenv.Eventually(t, 10*time.Second, func() error {
			if snap, ok := d.Get(service); !ok || len(snap.Instances) == 0 {
				return fmt.Errorf("no instance of %s discovered yet", service)
			}
			return nil
		})
		var opts []kitexsdk.Option
		if enc != nil {
			opts = append(opts, kitexsdk.WithEncryption(enc))
		}
		var rep *sdk.Reporter
		if declared == "frontend" && id == frontendID {
			rep = frontendRep
		}
		o := append(kitexsdk.ClientOptions(service, d, rep, nil, opts...), client.WithRPCTimeout(5*time.Second),
			client.WithClientBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: declared}))
		o = append(o, extra...)
		c, err := comment.NewClient(service, o...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	call := func(c comment.Client) (string, error) {
		resp, err := c.Get(context.Background(), &demo.GetRequest{Id: "1"})
		if err != nil {
			return "", err
		}
		return resp.Instance, nil
	}
	denied := func(err error) bool {
		bse, ok := kerrors.FromBizStatusError(err)
		return ok && bse.BizStatusCode() == kitexsdk.DeniedCode
	}

	enc := kitexsdk.NewEncryption(frontendID)
	toOrders := client(frontendID, enc, "orders", "frontend")
	toLegacy := client(frontendID, enc, "legacy", "frontend")
	for range 5 {
		if got, err := call(toOrders); err != nil || got != "orders" {
			t.Fatalf("frontend -> orders over mTLS: %q, %v", got, err)
		}
		if got, err := call(toLegacy); err != nil || got != "legacy" {
			t.Fatalf("frontend -> legacy in plaintext: %q, %v", got, err)
		}
	}
	if tlsCalls, plain := enc.TLSCalls(), enc.PlaintextCalls(); tlsCalls["orders"] != 5 || plain["legacy"] != 5 || plain["orders"] != 0 {
		t.Errorf("calls over mTLS %v, in plaintext %v; want orders 5 over mTLS, legacy 5 in plaintext", tlsCalls, plain)
	}
	// The reporter sends the plaintext calls with the call edges.
	plaintext := map[string]int64{}
	for _, c := range frontendRep.Flush(time.Now()).Calls {
		plaintext[c.CalleeService] += c.Plaintext
	}
	if plaintext["legacy"] != 5 || plaintext["orders"] != 0 {
		t.Errorf("reported plaintext calls %v, want legacy 5, orders 0", plaintext)
	}
	if st := suite.Connections(); st.TLS == 0 || st.Plaintext != 0 {
		t.Errorf("orders' connections %+v, want mTLS only so far", st)
	}
	if st := gate.IdentityStats(); st[api.IdentityVerified] != 5 {
		t.Errorf("identities %v, want 5 verified", st)
	}

	// A caller with a certificate of its own that declares itself frontend
	// is denied by its real identity.
	forged := client(intruderID, kitexsdk.NewEncryption(intruderID), "orders", "frontend")
	if _, err := call(forged); !denied(err) {
		t.Fatalf("intruder declaring frontend: %v, want denied", err)
	}

	// A plaintext caller (no Encryption) declaring frontend: no identity,
	// allowed by default with its declared name.
	plain := client(frontendID, nil, "orders", "frontend")
	if got, err := call(plain); err != nil || got != "orders" {
		t.Fatalf("plaintext frontend with a missing identity allowed: %q, %v", got, err)
	}
	// missing: deny.
	rules.Store(&sdk.AccessRules{Rules: rules.Load().Rules, Identity: &api.IdentityPolicy{Missing: api.IdentityDeny}})
	if _, err := call(plain); !denied(err) {
		t.Fatalf("plaintext caller with missing: deny: %v, want denied", err)
	}
	if got, err := call(toOrders); err != nil || got != "orders" {
		t.Fatalf("frontend over mTLS with missing: deny: %q, %v", got, err)
	}
	if st := gate.IdentityStats(); st[api.IdentityMissing] != 1 || st["missing_denied"] != 1 {
		t.Errorf("identities %v, want missing 1 and missing_denied 1", st)
	}

	// A certificate of another CA (invalid) and an expired one of this CA:
	// denied by default; invalid: dry_run serves it with its declared name
	// and reports a dry-run denial of rule identity-invalid.
	other, err := pki.NewRoot("sextant.local", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherCA, _ := pki.NewAuthority([]pki.Root{other})
	root := p.authority(t).Roots()[0]
	back, _ := pki.NewAuthority([]pki.Root{{Cert: root.Cert, Key: root.Key}})
	presenting := func(cert *tls.Certificate) comment.Client {
		return client(frontendID, nil, "orders", "frontend", kitexx.TLSClientOptions(&tls.Config{
			MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		})...)
	}
	invalid := presenting(leafOf(t, otherCA, "frontend", time.Now()))
	expired := presenting(leafOf(t, back, "frontend", time.Now().Add(-2*time.Hour)))
	if _, err := call(invalid); !denied(err) {
		t.Fatalf("a certificate of another CA: %v, want denied", err)
	}
	if _, err := call(expired); !denied(err) {
		t.Fatalf("an expired certificate: %v, want denied", err)
	}
	rules.Store(&sdk.AccessRules{Rules: rules.Load().Rules, Identity: &api.IdentityPolicy{Invalid: api.IdentityDryRun}})
	if got, err := call(invalid); err != nil || got != "orders" {
		t.Fatalf("a certificate of another CA with invalid: dry_run: %q, %v", got, err)
	}
	if st := gate.IdentityStats(); st["invalid_denied"] != 1 || st["expired_denied"] != 1 || st["invalid_dry_run"] != 1 {
		t.Errorf("identities %v, want invalid_denied, expired_denied and invalid_dry_run 1", st)
	}
	var dryRun []api.DryRunDenial
	for _, d := range ordersRep.Flush(time.Now()).DryRunDenials {
		if d.Rule == "identity-invalid" {
			dryRun = append(dryRun, d)
		}
	}
	if len(dryRun) != 1 || dryRun[0].CallerService != "frontend" || dryRun[0].Count != 1 {
		t.Errorf("dry-run denials of identity-invalid %+v, want one of frontend", dryRun)
	}

	// Strict: a new plaintext connection is refused; mTLS goes on.
	rules.Store(&sdk.AccessRules{Rules: rules.Load().Rules, TLS: api.TLSStrict})
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
		t.Errorf("orders' connections %+v, want one plaintext refused", st)
	}
	if got, err := call(toOrders); err != nil || got != "orders" {
		t.Fatalf("frontend over mTLS in strict mode: %q, %v", got, err)
	}
}
