// Package security tries every HTTP API of every service with credentials
// that must not pass, against the real services over a real etcd, and checks
// that each is refused with a JSON error and that nothing changed in etcd.
package security

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

const victim = "payments"

// plane is the four services over one etcd.
type plane struct {
	etcd                                      *testenv.Etcd
	prefix                                    string
	meshCore, poll, mixer, calculator, center string
}

func start(t *testing.T) *plane {
	etcd, prefix := testenv.StartEtcd(t), testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	calc := calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	mx := mixertest.Start(t, etcd, prefix, nil)
	cc := centertest.Start(t, etcd, prefix, nil)
	return &plane{etcd: etcd, prefix: prefix, meshCore: mc.Addr(), poll: mc.PollAddr(), mixer: mx.Addr(),
		calculator: calc.AdminAddr(), center: cc.Addr()}
}

type answer struct {
	status int
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, a.body) }

// call sends one request with the credential cred ("" for none).
func call(t *testing.T, method, url, cred, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if cred != "" {
		req.Header.Set(api.AuthorizationHeader, api.BearerPrefix+cred)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, b}
}

// issue asks the config-center for a token of service, as an operator.
func (p *plane) issue(t *testing.T, service, ttl string) api.TokenIssued {
	t.Helper()
	body, _ := json.Marshal(api.TokenRequest{Service: service, TTL: ttl})
	a := call(t, "POST", "http://"+p.center+"/v1/tokens", testenv.AdminToken, string(body))
	var issued api.TokenIssued
	if a.status != 201 || json.Unmarshal(a.body, &issued) != nil {
		t.Fatalf("token of %s: %s", service, a)
	}
	return issued
}

// expired writes a token of service whose lifetime has passed.
func (p *plane) expired(t *testing.T, service string) string {
	record, token := authn.NewToken(authn.DataPlane(service, "test"), time.Minute, time.Now().Add(-time.Hour))
	b, _ := json.Marshal(record)
	if _, err := p.etcd.Client(t).Put(context.Background(), api.Keys{Prefix: p.prefix}.Token(record.ID), string(b)); err != nil {
		t.Fatal(err)
	}
	return token
}

// dump is every key under the prefix with its value and revision.
func (p *plane) dump(t *testing.T) map[string]string {
	resp, err := p.etcd.Client(t).Get(context.Background(), p.prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = fmt.Sprintf("%d %s", kv.ModRevision, kv.Value)
	}
	return out
}

// endpoint is one API call, and what an identity that is not allowed gets.
type endpoint struct {
	name, method, url, body string
	// dataPlaneOK: a data plane of another service may call it (reads).
	dataPlaneOK bool
}

func (p *plane) endpoints() []endpoint {
	reg := fmt.Sprintf(`{"service":%q,"instance":"6.6.6.6:1","addr":"6.6.6.6:1","static_weight":1000}`, victim)
	report := fmt.Sprintf(`{"reporter":{"service":%q,"instance":"6.6.6.6:1"},"window_ms":1000,"timestamp_ms":%d,
		"server":{"requests":100,"cpu_util":1,"queue_time_ms_avg":500,"queue_time_ms_p99":900,"inflight":1,"client_timeouts":0}}`,
		victim, time.Now().UnixMilli())
	mesh, mixer, calc, cc := "http://"+p.meshCore, "http://"+p.mixer, "http://"+p.calculator, "http://"+p.center
	return []endpoint{
		{"register", "POST", mesh + "/v1/instances", reg, false},
		{"heartbeat", "PUT", mesh + "/v1/instances/" + victim + "/10.0.0.1:80/heartbeat", "", false},
		{"deregister", "DELETE", mesh + "/v1/instances/" + victim + "/10.0.0.1:80", "", false},
		{"discovery", "GET", mesh + "/v1/discovery/" + victim + "?wait=0s", "", true},
		{"discovery of several", "GET", mesh + "/v1/discovery?services=" + victim + "&wait=0s", "", true},
		{"poll port", "GET", "http://" + p.poll + "/v1/discovery/" + victim + "?wait=0s", "", true},
		{"data planes' discovery status", "GET", mesh + "/v1/dataplanes?service=" + victim, "", true},
		{"exports to peers", "GET", mesh + "/v1/exports?wait=0s", "", true},
		{"telemetry", "POST", mixer + "/v1/telemetry", report, false},
		{"calculator windows", "GET", calc + "/debug/windows?service=" + victim, "", false},
		{"calculator policy", "GET", calc + "/debug/policy?service=" + victim, "", false},
		{"calculator dry-run", "GET", calc + "/v1/dry-run?service=" + victim, "", true},
		{"configs of a service", "GET", cc + "/v1/configs?service=" + victim, "", true},
		{"every config", "GET", cc + "/v1/configs", "", true},
		{"config validation", "PUT", cc + "/v1/configs/limit/" + victim + "?validate=true", `{"qps_limit": 1}`, false},
		{"services overview", "GET", cc + "/v1/services", "", true},
		{"a service's instances", "GET", cc + "/v1/services/" + victim, "", true},
		{"a service's history", "GET", cc + "/v1/services/" + victim + "/history", "", true},
		{"data planes' config status", "GET", cc + "/v1/dataplanes?service=" + victim, "", true},
		{"calculator services", "GET", calc + "/v1/services", "", true},
		{"calculator service", "GET", calc + "/v1/services/" + victim, "", true},
		{"config read", "GET", cc + "/v1/configs/limit/" + victim, "", true},
		{"config write", "PUT", cc + "/v1/configs/limit/" + victim, `{"qps_limit": 1}`, false},
		{"config delete", "DELETE", cc + "/v1/configs/limit/" + victim, "", false},
		{"config rollback", "POST", cc + "/v1/configs/limit/" + victim + "?action=rollback", "", false},
		{"pins read", "GET", cc + "/v1/pins/" + victim, "", true},
		{"pin", "POST", cc + "/v1/pins/" + victim, `{"kind":"limit","scope":"` + victim + `","revision":1}`, false},
		{"unpin", "DELETE", cc + "/v1/pins/" + victim + "?kind=limit&scope=" + victim, "", false},
		{"audit", "GET", cc + "/v1/audit", "", false},
		{"watch", "GET", cc + "/v1/watch?service=" + victim + "&instance=6.6.6.6:1&wait=0s", "", true},
		{"dry-run report", "GET", cc + "/v1/access/dry-run?service=" + victim, "", true},
		{"unit routing report", "GET", cc + "/v1/units/report?service=" + victim, "", true},
		{"token create", "POST", cc + "/v1/tokens", `{"service":"` + victim + `"}`, false},
		{"token list", "GET", cc + "/v1/tokens", "", false},
		{"token revoke", "DELETE", cc + "/v1/tokens/0000000000000000", "", false},
		{"certificate issue", "POST", cc + "/v1/certificates", `{"csr":"x","service":"` + victim + `"}`, false},
	}
}

// Every API refuses a request without a credential, with a wrong one, an
// expired, a revoked or a malformed token (401), and a data plane of another
// service where only the owner or an operator may act (403); each answer is
// a JSON error naming the Authorization field, and etcd is as it was.
func TestEveryAPIRefusesWhoMayNot(t *testing.T) {
	p := start(t)
	attacker := p.issue(t, "attacker", "").Token
	revoked := p.issue(t, victim, "")
	if a := call(t, "DELETE", "http://"+p.center+"/v1/tokens/"+revoked.ID, testenv.AdminToken, ""); a.status != 204 {
		t.Fatalf("revoke: %s", a)
	}
	expired := p.expired(t, victim)
	// The services verify from their mirrors of etcd: wait until each
	// knows the three tokens (the attacker's passes its authentication, the
	// expired one is known as expired, the revoked one is gone).
	probes := []struct{ method, url, body string }{
		{"GET", "http://" + p.meshCore + "/v1/discovery/" + victim + "?wait=0s", ""},
		{"GET", "http://" + p.calculator + "/v1/dry-run?service=" + victim, ""},
		{"GET", "http://" + p.center + "/v1/configs?service=" + victim, ""},
		{"POST", "http://" + p.mixer + "/v1/telemetry", "{}"},
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, pr := range probes {
			if a := call(t, pr.method, pr.url, revoked.Token, pr.body); a.status != 401 {
				return fmt.Errorf("%s with the revoked token: %s", pr.url, a)
			}
			if a := call(t, pr.method, pr.url, expired, pr.body); !bytes.Contains(a.body, []byte(api.CodeExpired)) {
				return fmt.Errorf("%s with the expired token: %s", pr.url, a)
			}
			if a := call(t, pr.method, pr.url, attacker, pr.body); a.status == 401 {
				return fmt.Errorf("%s with the attacker's own token: %s", pr.url, a)
			}
		}
		return nil
	})
	before := p.dump(t)

	refusals := []struct {
		name, cred string
		status     int
		code       string
	}{
		{"no credential", "", 401, api.CodeUnauthenticated},
		{"a wrong credential", "not-a-token", 401, api.CodeUnauthenticated},
		{"a malformed data-plane token", api.TokenPrefix + "x", 401, api.CodeUnauthenticated},
		{"a forged data-plane token", api.TokenPrefix + revoked.ID + ".0000", 401, api.CodeUnauthenticated},
		{"a revoked token", revoked.Token, 401, api.CodeUnauthenticated},
		{"an expired token", expired, 401, api.CodeExpired},
		{"another service's token", attacker, 403, api.CodeForbidden},
	}
	for _, ep := range p.endpoints() {
		for _, r := range refusals {
			if r.status == 403 && ep.dataPlaneOK {
				continue
			}
			a := call(t, ep.method, ep.url, r.cred, ep.body)
			var eb api.ErrorBody
			if a.status != r.status || json.Unmarshal(a.body, &eb) != nil || eb.Error == nil ||
				eb.Error.Code != r.code || eb.Error.Field != api.AuthorizationHeader {
				t.Errorf("%s with %s: %s, want %d %s", ep.name, r.name, a, r.status, r.code)
			}
		}
	}
	if after := p.dump(t); !equal(before, after) {
		t.Errorf("refused requests changed etcd:\nbefore %v\nafter  %v", before, after)
	}

	// The service's own token may register; so the refusals above are not
	// of a mesh-core that refuses everything.
	own := p.issue(t, victim, "").Token
	testenv.Eventually(t, 10*time.Second, func() error {
		body := fmt.Sprintf(`{"service":%q,"instance":"10.0.0.1:80","addr":"10.0.0.1:80"}`, victim)
		if a := call(t, "POST", "http://"+p.meshCore+"/v1/instances", own, body); a.status != 201 {
			return fmt.Errorf("the owner's registration: %s", a)
		}
		return nil
	})
}

// The hijack of the issue: registering an address into another service with
// a high static weight. Refused without a credential and with another
// service's token; discovery never hands the address out.
func TestHijackIsRefused(t *testing.T) {
	p := start(t)
	attacker := p.issue(t, "attacker", "").Token
	body := fmt.Sprintf(`{"service":%q,"instance":"6.6.6.6:1","addr":"6.6.6.6:1","static_weight":1000}`, victim)
	testenv.Eventually(t, 10*time.Second, func() error {
		if a := call(t, "POST", "http://"+p.meshCore+"/v1/instances", attacker, body); a.status != 403 {
			return fmt.Errorf("with another service's token: %s", a)
		}
		return nil
	})
	if a := call(t, "POST", "http://"+p.meshCore+"/v1/instances", "", body); a.status != 401 {
		t.Fatalf("without a credential: %s", a)
	}
	a := call(t, "GET", "http://"+p.meshCore+"/v1/discovery/"+victim+"?wait=0s", attacker, "")
	if bytes.Contains(a.body, []byte("6.6.6.6")) {
		t.Fatalf("discovery hands out the hijacker's address: %s", a)
	}
	// A report for the victim from the attacker is refused and not stored.
	report := fmt.Sprintf(`{"reporter":{"service":%q,"instance":"6.6.6.6:1"},"window_ms":1000,"timestamp_ms":%d}`, victim, time.Now().UnixMilli())
	testenv.Eventually(t, 10*time.Second, func() error { // the mixer learns the token from etcd
		if a := call(t, "POST", "http://"+p.mixer+"/v1/telemetry", attacker, report); a.status != 403 {
			return fmt.Errorf("a report for another service: %s", a)
		}
		return nil
	})
	if got := testenv.Metric(t, p.mixer, "sextant_mixer_reports_accepted_total"); got != 0 {
		t.Fatalf("%v reports accepted", got)
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Operators bound to services: a writer of payments changes payments'
// configs, pins, tokens and instances and nothing else, and issues no
// operator's token; a reader of payments writes nothing.
func TestOperatorsBoundToServices(t *testing.T) {
	p := start(t)
	issueOperator := func(name, role string, services ...string) string {
		body, _ := json.Marshal(api.TokenRequest{Operator: name, Role: role, Services: services})
		a := call(t, "POST", "http://"+p.center+"/v1/tokens", testenv.AdminToken, string(body))
		var issued api.TokenIssued
		if a.status != 201 || json.Unmarshal(a.body, &issued) != nil {
			t.Fatalf("token of %s: %s", name, a)
		}
		return issued.Token
	}
	alice := issueOperator("alice", api.RoleWriter, victim)
	bob := issueOperator("bob", api.RoleReader, victim)
	cc := "http://" + p.center
	for _, tc := range []struct {
		name, cred, method, url, body string
		status                        int
	}{
		{"alice writes payments' config", alice, "PUT", cc + "/v1/configs/limit/" + victim, `{"qps_limit": 5}`, 200},
		{"alice writes orders' config", alice, "PUT", cc + "/v1/configs/limit/orders", `{"qps_limit": 5}`, 403},
		{"alice writes a config whose server is orders", alice, "PUT", cc + "/v1/configs/rpc_timeout/" + victim + "/orders", `{"*": {"rpc_timeout_ms": 100}}`, 403},
		{"alice pins orders", alice, "POST", cc + "/v1/pins/orders", `{"kind":"limit","scope":"orders","revision":1}`, 403},
		{"alice issues a token of payments", alice, "POST", cc + "/v1/tokens", `{"service":"` + victim + `"}`, 201},
		{"alice issues a token of orders", alice, "POST", cc + "/v1/tokens", `{"service":"orders"}`, 403},
		{"alice issues an operator's token", alice, "POST", cc + "/v1/tokens", `{"operator":"mallory","role":"writer","services":["*"]}`, 403},
		{"alice registers into payments", alice, "POST", "http://" + p.meshCore + "/v1/instances", `{"service":"` + victim + `","instance":"10.0.0.1:80"}`, 201},
		{"alice registers into orders", alice, "POST", "http://" + p.meshCore + "/v1/instances", `{"service":"orders","instance":"10.0.0.1:80"}`, 403},
		{"bob reads payments' config", bob, "GET", cc + "/v1/configs/limit/" + victim, "", 200},
		{"bob writes payments' config", bob, "PUT", cc + "/v1/configs/limit/" + victim, `{"qps_limit": 6}`, 403},
	} {
		testenv.Eventually(t, 10*time.Second, func() error { // the services learn the tokens from etcd
			if a := call(t, tc.method, tc.url, tc.cred, tc.body); a.status != tc.status {
				return fmt.Errorf("%s: %s, want %d", tc.name, a, tc.status)
			}
			return nil
		})
	}
	// The audit names who changed what.
	a := call(t, "GET", cc+"/v1/audit", testenv.AdminToken, "")
	if !bytes.Contains(a.body, []byte(`"who":"alice"`)) {
		t.Errorf("the audit does not name alice: %s", a)
	}
}

// The control plane's namespace is its own: no token is issued in it, and
// no certificate of it is issued on a request, so no data plane or owner
// can pass the Kitex hops' check of a Sextant service's identity.
func TestControlPlaneNamespaceIsReserved(t *testing.T) {
	p := start(t)
	body := `{"service":"weight-calculator","namespace":"` + api.ControlPlaneNamespace + `"}`
	a := call(t, "POST", "http://"+p.center+"/v1/tokens", testenv.AdminToken, body)
	var eb api.ErrorBody
	if a.status != 400 || json.Unmarshal(a.body, &eb) != nil || eb.Error == nil || eb.Error.Field != "namespace" {
		t.Fatalf("a token in the control plane's namespace: %s", a)
	}
}
