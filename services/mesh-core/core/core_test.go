package core_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// answer is a discovery answer, decoded strictly into the contract's type:
// a field the server writes that api.Discovery does not hold fails the test.
type answer struct{ api.Discovery }

func (a answer) weights() map[string]int32 {
	out := map[string]int32{}
	for _, in := range a.Instances {
		out[in.Instance] = in.Weight
	}
	return out
}

type reply struct {
	status int
	body   []byte
}

func call(t testing.TB, method, url string, body any) reply {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, r)
	req.Header.Set("Content-Type", "application/json")
	resp, err := testenv.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, b}
}

func register(t testing.TB, mc *core.MeshCore, service, instance string, ttl int) {
	t.Helper()
	r := call(t, "POST", "http://"+mc.Addr()+"/v1/instances", map[string]any{
		"service": service, "instance": instance, "addr": instance, "zone": "z1", "static_weight": 100,
		"metadata": map[string]string{"version": "v1"}, "ttl_s": ttl,
	})
	if r.status != http.StatusCreated {
		t.Fatalf("register %s/%s: %d %s", service, instance, r.status, r.body)
	}
}

// poll runs one discovery long poll.
func poll(t testing.TB, mc *core.MeshCore, service string, version int64, wait string) (int, answer) {
	t.Helper()
	r := call(t, "GET", fmt.Sprintf("http://%s/v1/discovery/%s?version=%d&wait=%s", mc.Addr(), service, version, wait), nil)
	var a answer
	if r.status == http.StatusOK {
		if fe := api.Decode(r.body, &a.Discovery); fe != nil {
			t.Fatalf("discovery answer %s: %v", r.body, fe)
		}
	}
	return r.status, a
}

// waitFor polls until cond holds for the answer.
func waitFor(t testing.TB, mc *core.MeshCore, service string, cond func(answer) error) answer {
	t.Helper()
	var last answer
	testenv.Eventually(t, 20*time.Second, func() error {
		status, a := poll(t, mc, service, 0, "0s")
		if status != http.StatusOK {
			return fmt.Errorf("status %d", status)
		}
		last = a
		return cond(a)
	})
	return last
}

func publisher(t testing.TB, mc *core.MeshCore) meshcoresvc.Client {
	t.Helper()
	c, err := meshcoresvc.NewClient("mesh-core", client.WithHostPorts(mc.KitexAddr()), client.WithRPCTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func policy(service string, version int64, weights map[string]int32) *meshcore.Policy {
	p := &meshcore.Policy{Service: service, Version: version, ComputedAtMs: time.Now().UnixMilli(), CalculatorId: "test",
		Overload: &meshcore.Overload{State: "overloaded", AdmitMinPriority: 64}}
	for id, w := range weights {
		p.Weights = append(p.Weights, &meshcore.InstanceWeight{Instance: id, Weight: w, Ejected: w == 0, Reason: "computed"})
	}
	return p
}

// Register, discover, publish through Kitex, see the weights in the next
// answer; a long poll is released by a change.
func TestRegisterPublishDiscover(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	register(t, mc, "comment-svc", "10.0.0.1:9000", 30)
	register(t, mc, "comment-svc", "10.0.0.2:9000", 30)
	a := waitFor(t, mc, "comment-svc", func(a answer) error {
		if len(a.Instances) != 2 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	if w := a.weights(); w["10.0.0.1:9000"] != 100 || a.Overload.State != "normal" || a.PolicyAgeMs != -1 || a.Stale {
		t.Fatalf("before any policy: %+v", a)
	}
	if in := a.Instances[0]; in.Zone != "z1" || in.Metadata["version"] != "v1" || !in.Healthy || in.StaticWeight != 100 {
		t.Fatalf("instance %+v", in)
	}

	// A long poll on the current version waits; a published policy releases it.
	type result struct {
		status int
		a      answer
		at     time.Time
	}
	released := make(chan result, 1)
	go func() {
		status, got := poll(t, mc, "comment-svc", a.Version, "30s")
		released <- result{status, got, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-released:
		t.Fatalf("long poll answered before any change: %d %+v", r.status, r.a)
	default:
	}
	pub := publisher(t, mc)
	resp, err := pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{
		Policy: policy("comment-svc", 10, map[string]int32{"10.0.0.1:9000": 870, "10.0.0.2:9000": 0}),
	})
	changedAt := time.Now()
	if err != nil || resp.StoredVersion != 10 || resp.EtcdRevision == 0 {
		t.Fatalf("publish: %+v %v", resp, err)
	}
	var r result
	select {
	case r = <-released:
	case <-time.After(20 * time.Second):
		t.Fatal("the long poll was not released by the change")
	}
	// How fast is measured by loadtest/discovery; here: released by the change.
	t.Logf("long poll released %s after the publish returned", r.at.Sub(changedAt))
	if r.status != http.StatusOK || r.a.Version == a.Version {
		t.Fatalf("released with %d, version %d (was %d)", r.status, r.a.Version, a.Version)
	}
	if w := r.a.weights(); w["10.0.0.1:9000"] != 870 || w["10.0.0.2:9000"] != 0 || r.a.Overload.AdmitMinPriority != 64 {
		t.Fatalf("weights %v, overload %+v", w, r.a.Overload)
	}
	if r.a.Instances[1].Healthy || r.a.PolicyAgeMs < 0 {
		t.Fatalf("ejected instance healthy or no policy age: %+v", r.a)
	}

	// No change: the poll waits out its wait and answers 304.
	if status, _ := poll(t, mc, "comment-svc", r.a.Version, "300ms"); status != http.StatusNotModified {
		t.Fatalf("unchanged poll: %d", status)
	}

	// A stale version is refused with the stored one; a newer one goes through.
	_, err = pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: policy("comment-svc", 10, map[string]int32{"10.0.0.1:9000": 5})})
	var rej *meshcore.PolicyRejected
	if !errors.As(err, &rej) || rej.Code != core.RejectStaleVersion || rej.CurrentVersion != 10 {
		t.Fatalf("stale publish: %v", err)
	}
	if _, err := pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: policy("comment-svc", 11, map[string]int32{"10.0.0.1:9000": 500})}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, mc, "comment-svc", func(a answer) error {
		// 10.0.0.2 is not in this policy: it gets the median, not its static 100.
		if w := a.weights(); w["10.0.0.1:9000"] != 500 || w["10.0.0.2:9000"] != 500 {
			return fmt.Errorf("weights %v", w)
		}
		return nil
	})
}

func TestPolicyValidation(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	register(t, mc, "svc", "10.0.0.1:9000", 30)
	register(t, mc, "svc", "10.0.0.2:9000", 30)
	waitFor(t, mc, "svc", func(a answer) error {
		if len(a.Instances) != 2 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	pub := publisher(t, mc)
	for _, tc := range []struct {
		name  string
		edit  func(p *meshcore.Policy)
		code  string
		field string
	}{
		{"weight above 1000", func(p *meshcore.Policy) { p.Weights[0].Weight = 1001 }, core.RejectInvalid, "weights[0].weight"},
		{"negative weight", func(p *meshcore.Policy) { p.Weights[0].Weight = -1 }, core.RejectInvalid, "weights[0].weight"},
		{"zero without ejection", func(p *meshcore.Policy) { p.Weights[0].Weight, p.Weights[0].Ejected = 0, false }, core.RejectInvalid, "weights[0].weight"},
		{"all zero", func(p *meshcore.Policy) {
			for _, w := range p.Weights {
				w.Weight, w.Ejected = 0, true
			}
		}, core.RejectInvalid, "weights"},
		{"unknown instance", func(p *meshcore.Policy) { p.Weights[0].Instance = "10.9.9.9:1" }, core.RejectUnknownInstance, "weights[0].instance"},
		{"duplicate instance", func(p *meshcore.Policy) { p.Weights[1].Instance = p.Weights[0].Instance }, core.RejectInvalid, "weights[1].instance"},
		{"bad state", func(p *meshcore.Policy) { p.Overload.State = "panicking" }, core.RejectInvalid, "overload.state"},
		{"priority out of range", func(p *meshcore.Policy) { p.Overload.AdmitMinPriority = 200 }, core.RejectInvalid, "overload.admit_min_priority"},
		{"no overload state", func(p *meshcore.Policy) { p.Overload = &meshcore.Overload{} }, core.RejectInvalid, "overload.state"},
		{"zero version", func(p *meshcore.Policy) { p.Version = 0 }, core.RejectInvalid, "version"},
		{"service with slash", func(p *meshcore.Policy) { p.Service = "a/b" }, core.RejectInvalid, "service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &meshcore.Policy{Service: "svc", Version: 5, ComputedAtMs: time.Now().UnixMilli(),
				Overload: &meshcore.Overload{State: "normal"},
				Weights:  []*meshcore.InstanceWeight{{Instance: "10.0.0.1:9000", Weight: 10}, {Instance: "10.0.0.2:9000", Weight: 20}}}
			tc.edit(p)
			_, err := pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: p})
			var rej *meshcore.PolicyRejected
			if !errors.As(err, &rej) || rej.Code != tc.code || rej.Field != tc.field {
				t.Fatalf("got %v, want %s on %q", err, tc.code, tc.field)
			}
		})
	}
	// Nothing of it was stored.
	if status, a := poll(t, mc, "svc", 0, "0s"); status != 200 || a.PolicyAgeMs != -1 {
		t.Fatalf("after rejected policies: %d %+v", status, a)
	}
}

func TestRegistrationValidationAndLifecycle(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) { c.MaxBodyBytes = 4096 })
	base := "http://" + mc.Addr()
	for _, tc := range []struct {
		name   string
		body   string
		status int
		field  string
	}{
		{"malformed", `{"service":`, 400, ""},
		{"missing service", `{"instance":"10.0.0.1:80"}`, 400, "service"},
		{"slash in service", `{"service":"a/b","instance":"10.0.0.1:80"}`, 400, "service"},
		{"bad addr", `{"service":"s","instance":"i","addr":"nohost"}`, 400, "addr"},
		{"bad port", `{"service":"s","instance":"10.0.0.1:99999"}`, 400, "addr"},
		{"weight too big", `{"service":"s","instance":"10.0.0.1:80","static_weight":5000}`, 400, "static_weight"},
		{"ttl too short", `{"service":"s","instance":"10.0.0.1:80","ttl_s":1}`, 400, "ttl_s"},
		{"unknown field", `{"service":"s","instance":"10.0.0.1:80","color":"red"}`, 400, "color"},
		{"metadata not strings", `{"service":"s","instance":"10.0.0.1:80","metadata":{"a":1}}`, 400, "metadata.a"},
		{"oversized", `{"service":"s","instance":"10.0.0.1:80","metadata":{"a":"` + strings.Repeat("x", 5000) + `"}}`, 413, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", base+"/v1/instances", strings.NewReader(tc.body))
			resp, err := testenv.HTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct {
				Error struct{ Code, Field string } `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != tc.status || e.Error.Field != tc.field || e.Error.Code == "" {
				t.Fatalf("%d %+v, want %d on %q", resp.StatusCode, e.Error, tc.status, tc.field)
			}
		})
	}
	if status, a := poll(t, mc, "s", 0, "0s"); status != 200 || len(a.Instances) != 0 {
		t.Fatalf("refused registrations are visible: %+v", a)
	}

	// Heartbeat keeps a 5 s lease alive; without it the instance goes.
	register(t, mc, "s", "10.0.0.1:80", 5)
	register(t, mc, "s", "10.0.0.2:80", 5)
	waitFor(t, mc, "s", func(a answer) error {
		if len(a.Instances) != 2 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
				call(t, "PUT", base+"/v1/instances/s/10.0.0.1:80/heartbeat", nil)
			}
		}
	}()
	expired := time.Now()
	a := waitFor(t, mc, "s", func(a answer) error {
		if len(a.Instances) != 1 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	if a.Instances[0].Instance != "10.0.0.1:80" || time.Since(expired) < 3*time.Second {
		t.Fatalf("after lease expiry: %+v, %s", a.Instances, time.Since(expired))
	}
	if r := call(t, "PUT", base+"/v1/instances/s/10.0.0.2:80/heartbeat", nil); r.status != 404 {
		t.Fatalf("heartbeat of an expired instance: %d %s", r.status, r.body)
	}
	if r := call(t, "DELETE", base+"/v1/instances/s/10.0.0.1:80", nil); r.status != 204 {
		t.Fatalf("deregister: %d %s", r.status, r.body)
	}
	waitFor(t, mc, "s", func(a answer) error {
		if len(a.Instances) != 0 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	if r := call(t, "DELETE", base+"/v1/instances/s/10.0.0.1:80", nil); r.status != 404 {
		t.Fatalf("deregister twice: %d", r.status)
	}
}

// Two replicas over one etcd give the same version for the same state.
func TestReplicasAgreeOnVersions(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	m1 := coretest.Start(t, etcd, prefix, nil)
	m2 := coretest.Start(t, etcd, prefix, nil)
	register(t, m1, "svc", "10.0.0.1:9000", 30)
	register(t, m2, "svc", "10.0.0.2:9000", 30)
	if _, err := publisher(t, m2).PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{
		Policy: policy("svc", 3, map[string]int32{"10.0.0.1:9000": 300, "10.0.0.2:9000": 700})}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		_, a1 := poll(t, m1, "svc", 0, "0s")
		_, a2 := poll(t, m2, "svc", 0, "0s")
		if len(a1.Instances) != 2 || a1.weights()["10.0.0.2:9000"] != 700 {
			return fmt.Errorf("replica 1: %+v", a1)
		}
		if a1.Version != a2.Version || fmt.Sprint(a1.weights()) != fmt.Sprint(a2.weights()) {
			return fmt.Errorf("versions %d and %d", a1.Version, a2.Version)
		}
		return nil
	})
}

// etcd goes away while pollers wait: answers keep coming from memory, marked
// stale; /readyz stays 200 (the replica stays in its Service) and says it
// serves the last snapshot, the etcd_connected gauge is 0, /healthz green;
// when etcd is back the next change arrives without restarting mesh-core.
func TestFailStaticWhileEtcdIsAway(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	register(t, mc, "svc", "10.0.0.1:9000", 60)
	register(t, mc, "svc", "10.0.0.2:9000", 60)
	if _, err := publisher(t, mc).PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{
		Policy: policy("svc", 1, map[string]int32{"10.0.0.1:9000": 900, "10.0.0.2:9000": 100})}); err != nil {
		t.Fatal(err)
	}
	before := waitFor(t, mc, "svc", func(a answer) error {
		if a.weights()["10.0.0.1:9000"] != 900 {
			return fmt.Errorf("weights %v", a.weights())
		}
		return nil
	})

	waiting := make(chan int, 1)
	go func() {
		status, _ := poll(t, mc, "svc", before.Version, "5s")
		waiting <- status
	}()
	etcd.Stop()
	a := waitFor(t, mc, "svc", func(a answer) error {
		if !a.Stale {
			return errors.New("not marked stale")
		}
		return nil
	})
	if a.Version != before.Version || a.weights()["10.0.0.1:9000"] != 900 {
		t.Fatalf("while etcd is away: %+v", a)
	}
	if r := call(t, "GET", "http://"+mc.Addr()+"/readyz", nil); r.status != 200 ||
		!strings.Contains(string(r.body), `"stale":true`) || !strings.Contains(string(r.body), "serving the last snapshot") {
		t.Fatalf("/readyz while etcd is away: %d %s, want 200 saying it serves the last snapshot", r.status, r.body)
	}
	if r := call(t, "GET", "http://"+mc.Addr()+"/healthz", nil); r.status != 200 {
		t.Fatalf("/healthz while etcd is away: %d", r.status)
	}
	if status := <-waiting; status != http.StatusNotModified {
		t.Fatalf("a poller waiting across the outage got %d", status)
	}
	if testenv.Metric(t, mc.Addr(), "sextant_meshcore_stale") != 1 || testenv.Metric(t, mc.Addr(), "sextant_meshcore_etcd_connected") != 0 {
		t.Fatal("stale gauge not set, or etcd_connected not 0")
	}

	etcd.Restart()
	// A poller waits on the old version; a change after etcd returns reaches it.
	released := make(chan answer, 1)
	go func() {
		_, a := poll(t, mc, "svc", before.Version, "30s")
		released <- a
	}()
	testenv.Eventually(t, 30*time.Second, func() error {
		if r := call(t, "GET", "http://"+mc.Addr()+"/readyz", nil); r.status != 200 || strings.Contains(string(r.body), "stale") {
			return fmt.Errorf("/readyz %d %s", r.status, r.body)
		}
		return nil
	})
	if testenv.Metric(t, mc.Addr(), "sextant_meshcore_etcd_connected") != 1 {
		t.Fatal("etcd_connected not 1 once etcd is back")
	}
	register(t, mc, "svc", "10.0.0.3:9000", 60)
	select {
	case a := <-released:
		if len(a.Instances) != 3 || a.Stale {
			t.Fatalf("after etcd returned: %+v", a)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the change after etcd returned did not reach the poller")
	}
}

// A batch is validated policy by policy, and the valid ones are written in
// one etcd transaction: they share one revision. Bad, stale and duplicate
// policies are answered one by one and keep nothing of theirs.
func TestPublishPoliciesInOneTransaction(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	for _, s := range []string{"a-svc", "b-svc", "c-svc"} {
		register(t, mc, s, "10.0.0.1:9000", 30)
	}
	pub := publisher(t, mc)
	if _, err := pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: policy("c-svc", 50, map[string]int32{"10.0.0.1:9000": 100})}); err != nil {
		t.Fatal(err)
	}
	resp, err := pub.PublishPolicies(context.Background(), &meshcore.PublishPoliciesRequest{Policies: []*meshcore.Policy{
		policy("a-svc", 10, map[string]int32{"10.0.0.1:9000": 700}),
		policy("b-svc", 10, map[string]int32{"10.0.0.1:9000": 300}),
		policy("c-svc", 40, map[string]int32{"10.0.0.1:9000": 200}),  // stale
		policy("b-svc", 11, map[string]int32{"10.0.0.1:9000": 900}),  // twice
		policy("a-svc", 12, map[string]int32{"10.9.9.9:1": 900}),     // unknown instance (and a twice)
		policy("d-svc", 10, map[string]int32{"10.0.0.1:9000": 1001}), // out of range
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Results
	if len(r) != 6 || r[0].Rejected != nil || r[1].Rejected != nil || r[0].EtcdRevision == 0 || r[0].EtcdRevision != r[1].EtcdRevision {
		t.Fatalf("valid policies not stored in one transaction: %+v", r)
	}
	for i, code := range map[int]string{2: core.RejectStaleVersion, 3: core.RejectInvalid, 4: core.RejectUnknownInstance, 5: core.RejectInvalid} {
		if r[i].Rejected == nil || r[i].Rejected.Code != code {
			t.Errorf("policy %d: want %s, got %+v", i, code, r[i])
		}
	}
	if r[2].Rejected.CurrentVersion != 50 {
		t.Errorf("stale: current version %d", r[2].Rejected.CurrentVersion)
	}
	waitFor(t, mc, "a-svc", func(a answer) error {
		if w := a.weights(); w["10.0.0.1:9000"] != 700 {
			return fmt.Errorf("weights %v", w)
		}
		return nil
	})
	waitFor(t, mc, "c-svc", func(a answer) error {
		if w := a.weights(); w["10.0.0.1:9000"] != 100 {
			return fmt.Errorf("the stale policy changed weights: %v", w)
		}
		return nil
	})
	if _, err := pub.PublishPolicies(context.Background(), &meshcore.PublishPoliciesRequest{Policies: make([]*meshcore.Policy, core.MaxPoliciesPerBatch+1)}); err == nil {
		t.Fatal("an oversized batch was taken")
	}
}
