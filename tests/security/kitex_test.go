package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/kerrors"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/pki"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// kitexPlane is tlsPlane with a calculator and a mixer, every service
// started with the CA key file only: the Kitex hops are mTLS.
type kitexPlane struct {
	*tlsPlane
	calc  *calculator.Calculator
	mixer string // https:// URL
}

func startKitexTLS(t *testing.T) *kitexPlane {
	t.Helper()
	p := &kitexPlane{tlsPlane: startTLS(t, time.Hour)}
	p.calc = calculatortest.Start(t, p.etcd, p.prefix, "calc-1", func(c *calculator.Config) {
		c.TLS.CAKeyFile, c.MeshCoreAddr = p.keyFile, p.mc.KitexAddr()
	})
	mx := mixertest.Start(t, p.etcd, p.prefix, func(c *mixer.Config) { c.TLS.CAKeyFile = p.keyFile })
	p.mixer = "https://" + mx.Addr()
	return p
}

// metric reads one series from a service's /metrics over TLS (0 when absent).
func (p *tlsPlane) metric(t *testing.T, url, series string) float64 {
	t.Helper()
	a := do(t, p.operator, "GET", url+"/metrics", "", "")
	for _, line := range strings.Split(string(a.body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// Telemetry posted to a mixer over TLS reaches the calculator over mTLS,
// whose policy reaches mesh-core over mTLS: discovery hands out the weights.
func TestKitexHopsOverMTLS(t *testing.T) {
	p := startKitexTLS(t)
	testenv.Eventually(t, 10*time.Second, func() error { // the mixer knows the shard
		if n := p.metric(t, p.mixer, "sextant_mixer_shards"); n != 1 {
			return fmt.Errorf("mixer sees %v shards", n)
		}
		return nil
	})
	instances := []string{"10.0.0.1:9000", "10.0.0.2:9000"}
	for _, in := range instances {
		body := fmt.Sprintf(`{"service":"comment-svc","instance":%q,"addr":%q,"ttl_s":60}`, in, in)
		if a := do(t, p.operator, "POST", p.meshCore+"/v1/instances", testenv.AdminToken, body); a.status != 201 {
			t.Fatalf("register: %s", a)
		}
	}
	report := func() answer {
		now := time.Now().UnixMilli()
		var reports []string
		var calls []string
		for i, in := range instances {
			calls = append(calls, fmt.Sprintf(`{"callee_service":"comment-svc","callee_instance":%q,"requests":100,"errors":%d,"latency_ms_avg":%d,"latency_ms_p99":30}`,
				in, 20*i, 10+40*i))
			reports = append(reports, fmt.Sprintf(`{"reporter":{"service":"comment-svc","instance":%q},"window_ms":200,"timestamp_ms":%d,
				"server":{"requests":100,"cpu_util":%.1f,"queue_time_ms_avg":1,"queue_time_ms_p99":2,"inflight":3,"client_timeouts":0}}`, in, now, 0.2+0.5*float64(i)))
		}
		reports = append(reports, fmt.Sprintf(`{"reporter":{"service":"front","instance":"10.9.0.1:80"},"window_ms":200,"timestamp_ms":%d,"calls":[%s]}`,
			now, strings.Join(calls, ",")))
		return do(t, p.operator, "POST", p.mixer+"/v1/telemetry", testenv.AdminToken, "["+strings.Join(reports, ",")+"]")
	}
	policyKey := api.Keys{Prefix: p.prefix}.Policy("comment-svc")
	testenv.Eventually(t, 60*time.Second, func() error {
		if a := report(); a.status != 202 {
			return fmt.Errorf("ingest: %s", a)
		}
		time.Sleep(200 * time.Millisecond)
		if _, ok := p.dump(t)[policyKey]; !ok {
			return errors.New("no policy in etcd yet")
		}
		var d struct {
			Instances []struct {
				Instance string `json:"instance"`
				Weight   int32  `json:"weight"`
			} `json:"instances"`
		}
		a := do(t, p.operator, "GET", p.meshCore+"/v1/discovery/comment-svc", testenv.AdminToken, "")
		if err := json.Unmarshal(a.body, &d); err != nil || len(d.Instances) != 2 {
			return fmt.Errorf("discovery: %s", a)
		}
		return nil
	})
	for _, m := range []struct{ url, series string }{
		{p.meshCore, `sextant_meshcore_kitex_refused_total{reason="wrong_caller"}`},
		{"https://" + p.calc.AdminAddr(), `sextant_calculator_kitex_refused_total{reason="wrong_caller"}`},
		{"https://" + p.calc.AdminAddr(), `sextant_calculator_kitex_refused_total{reason="handshake"}`},
	} {
		if n := p.metric(t, m.url, m.series); n != 0 {
			t.Errorf("%s = %v, want 0", m.series, n)
		}
	}
}

// leaf is a certificate of id issued by a, with its key, as tls wants it.
func leaf(t *testing.T, a *pki.Authority, id pki.ID) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := a.Issue(&key.PublicKey, pki.Leaf{ID: id, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// kitexTLS dials with TLS, presenting cert (none when nil), trusting any server.
func kitexTLS(cert *tls.Certificate) []client.Option {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return kitexx.TLSClientOptions(cfg)
}

func controlPlane(service string) pki.ID {
	return pki.ID{TrustDomain: mtls.DefaultTrustDomain, Namespace: mtls.ServiceNamespace, Service: service}
}

// The hijack of issue 15 over Kitex: PublishPolicy with admit_min_priority
// 127, and a batch of weights for Ingest, from a caller without a
// certificate, with one of another CA, and with valid certificates of the
// wrong service, is refused with a Kitex error; etcd does not change. The
// refusals are counted. A client that expects another server refuses to talk.
func TestKitexRefusesOtherCallers(t *testing.T) {
	p := startKitexTLS(t)
	a := p.authority(t)
	foreignRoot, err := pki.NewRoot(mtls.DefaultTrustDomain, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := pki.NewAuthority([]pki.Root{foreignRoot})
	if err != nil {
		t.Fatal(err)
	}
	// A registered instance, so that the hijack would be a valid policy.
	body := `{"service":"payments","instance":"10.0.0.1:9000","addr":"10.0.0.1:9000","ttl_s":60}`
	if ans := do(t, p.operator, "POST", p.meshCore+"/v1/instances", testenv.AdminToken, body); ans.status != 201 {
		t.Fatalf("register: %s", ans)
	}
	hijack := &meshcore.PublishPolicyRequest{Policy: &meshcore.Policy{Service: "payments", Version: 1 << 40,
		Weights:  []*meshcore.InstanceWeight{{Instance: "10.0.0.1:9000", Weight: 1000}},
		Overload: &meshcore.Overload{State: "shedding", AdmitMinPriority: 127}}}
	batch := &aggregator.ReportBatch{}

	callers := []struct {
		name   string
		opts   []client.Option
		reason string // counted as, "" for a transport failure counted as handshake
		acl    bool   // refused by identity, with kerrors.ErrACL
	}{
		{"plaintext", nil, "handshake", false},
		{"TLS without a certificate", kitexTLS(nil), "no_certificate", false},
		{"a certificate of another CA naming the right service", kitexTLS(leaf(t, foreign, controlPlane("weight-calculator"))), "untrusted", false},
		{"a data plane's valid certificate", kitexTLS(leaf(t, a, pki.ID{Namespace: "default", Service: "payments"})), "wrong_caller", true},
		{"a data plane's certificate named like the caller in another namespace",
			kitexTLS(leaf(t, a, pki.ID{Namespace: "default", Service: "weight-calculator"})), "wrong_caller", true},
	}
	before := p.dump(t)
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			opts := append([]client.Option{client.WithHostPorts(p.mc.KitexAddr()), client.WithRPCTimeout(5 * time.Second)}, c.opts...)
			mc, err := meshcoresvc.NewClient("mesh-core", opts...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = mc.PublishPolicy(context.Background(), hijack)
			if err == nil {
				t.Fatal("PublishPolicy accepted")
			}
			if c.acl && (!errors.Is(err, kerrors.ErrACL) && !strings.Contains(err.Error(), "request forbidden")) {
				t.Fatalf("PublishPolicy: %v, want a refusal naming the identity", err)
			}
			if c.acl && !strings.Contains(err.Error(), "may not call") {
				t.Fatalf("PublishPolicy: %v, want the reason", err)
			}
			t.Logf("PublishPolicy: %v", err)
			if _, err := mc.PublishPolicies(context.Background(), &meshcore.PublishPoliciesRequest{Policies: []*meshcore.Policy{hijack.Policy}}); err == nil {
				t.Fatal("PublishPolicies accepted")
			}
			// The calculator refuses the same callers.
			ag, err := aggregatorsvc.NewClient("weight-calculator", append([]client.Option{client.WithHostPorts(p.calc.KitexAddr()),
				client.WithRPCTimeout(5 * time.Second)}, c.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ag.Ingest(context.Background(), batch); err == nil {
				t.Fatal("Ingest accepted")
			}
		})
	}
	// mesh-core's certificate may not send batches to a calculator either.
	ag, err := aggregatorsvc.NewClient("weight-calculator", append([]client.Option{client.WithHostPorts(p.calc.KitexAddr())},
		kitexTLS(leaf(t, a, controlPlane("mesh-core")))...)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ag.Ingest(context.Background(), batch); err == nil || !strings.Contains(err.Error(), "may not call") {
		t.Fatalf("Ingest with mesh-core's certificate: %v", err)
	}
	after := p.dump(t)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("etcd changed:\nbefore %v\nafter  %v", before, after)
	}
	want := map[string]float64{"handshake": 1, "no_certificate": 1, "untrusted": 1, "wrong_caller": 2}
	testenv.Eventually(t, 5*time.Second, func() error {
		for reason, n := range want {
			// Each caller is refused twice at mesh-core (PublishPolicy and
			// PublishPolicies); a refused handshake may be tried again by
			// the client on a new connection, so at least that.
			series := fmt.Sprintf(`sextant_meshcore_kitex_refused_total{reason=%q}`, reason)
			if got := p.metric(t, p.meshCore, series); got < 2*n {
				return fmt.Errorf("%s = %v, want at least %v", series, got, 2*n)
			}
		}
		return nil
	})

	// The calculator's own Security, dialing mesh-core: it passes when it
	// expects mesh-core, and refuses the server when it expects another.
	sec, err := mtls.New(mtls.Config{CAKeyFile: p.keyFile}, p.etcd.Client(t), api.Keys{Prefix: p.prefix}, "weight-calculator", "127.0.0.1:0", nil, logx.Discard())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		server string
		ok     bool
	}{{"mesh-core", true}, {"weight-calculator", false}} {
		mc, err := meshcoresvc.NewClient("mesh-core", append([]client.Option{client.WithHostPorts(p.mc.KitexAddr()),
			client.WithRPCTimeout(5 * time.Second)}, sec.KitexClientOptions(c.server)...)...)
		if err != nil {
			t.Fatal(err)
		}
		// A valid policy of a service with no instance: stored when the
		// call passes.
		_, err = mc.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: &meshcore.Policy{
			Service: "empty-svc", Version: 1, Overload: &meshcore.Overload{State: "normal"}}})
		if c.ok && err != nil {
			t.Fatalf("the calculator's certificate, expecting mesh-core: %v", err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), "not spiffe://sextant.local/ns/sextant/sa/weight-calculator")) {
			t.Fatalf("expecting another server: %v, want the server refused", err)
		}
	}
}
