package xds

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

func entryValue(t *testing.T, e api.Entry) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func timeoutMs(g *Governance) int {
	if g == nil || g.Timeouts["*"] == nil {
		return 0
	}
	return g.Timeouts["*"].RPCTimeoutMS
}

// A node applies what an SDK instance of its id applies: during a rollout
// the new document in the canary, the previous one outside, its service's
// pin over both, nothing once deleted; the changed (server, caller) pairs
// are told, once each.
func TestGovernanceFollowsRolloutAndPins(t *testing.T) {
	var told [][2]string
	g := newGovernanceStore(func(server, caller string) { told = append(told, [2]string{server, caller}) })
	cfg, pins := g.ConfigMirror(), g.PinMirror()
	key := api.ConfigPath("echo", api.KindRPCTimeout, "caller")
	v1 := json.RawMessage(`{"*": {"rpc_timeout_ms": 100}}`)
	v2 := json.RawMessage(`{"*": {"rpc_timeout_ms": 200}}`)
	cfg.Reset([]etcdx.Event{
		{Key: key, Value: entryValue(t, api.Entry{Kind: api.KindRPCTimeout, Scope: "caller/echo", Revision: 5, Document: v1})},
		{Key: api.ConfigPath("echo", api.KindLimit, ""), Value: []byte(`{}`)},
		{Key: api.ConfigPath("echo", api.KindPriorityRules, ""), Value: entryValue(t, api.Entry{Document: json.RawMessage(`{"default": 20}`)})},
	}, 1)
	if got := timeoutMs(g.get("echo", "caller")); got != 100 {
		t.Fatalf("timeout %d, want 100", got)
	}
	if p := g.defaultPriority("echo"); p != 20 {
		t.Errorf("default priority %d, want 20", p)
	}
	if g.get("echo", "other") != nil {
		t.Error("another caller got caller's governance")
	}
	cfg.Apply([]etcdx.Event{{Key: key, Value: entryValue(t, api.Entry{Document: v2, Rollout: &api.Rollout{Percent: 10, Previous: v1, PreviousRevision: 5}})}}, 2)
	if got := timeoutMs(g.get("echo", "caller")); got != 100 {
		t.Errorf("during a rollout: timeout %d, want the previous 100", got)
	}
	inside, outside := "", ""
	for i := 0; inside == "" || outside == ""; i++ {
		id := fmt.Sprintf("10.0.0.%d:80", i)
		if api.RolloutBucket(id) < 10 {
			inside = id
		} else {
			outside = id
		}
	}
	if c := g.classOf("caller", inside); c != "echo/rpc_timeout" || timeoutMs(g.view("echo", "caller", c)) != 200 {
		t.Errorf("a node in the 10 %% canary: class %q, timeout %d, want the new 200", c, timeoutMs(g.view("echo", "caller", c)))
	}
	if c := g.classOf("caller", outside); c != "" || timeoutMs(g.view("echo", "caller", c)) != 100 {
		t.Errorf("a node outside the canary: class %q, timeout %d, want the previous 100", c, timeoutMs(g.view("echo", "caller", c)))
	}
	if c := g.classOf("other", inside); c != "" {
		t.Errorf("another caller's node is in class %q", c)
	}
	cfg.Apply([]etcdx.Event{{Key: key, Value: entryValue(t, api.Entry{Document: v2})}}, 3)
	if got := timeoutMs(g.get("echo", "caller")); got != 200 {
		t.Errorf("promoted: timeout %d, want 200", got)
	}
	pinned, _ := json.Marshal([]api.Pin{{Kind: api.KindRPCTimeout, Scope: "caller/echo", Revision: 5, Document: v1}})
	pins.Apply([]etcdx.Event{{Key: "caller", Value: pinned}}, 4)
	if got := timeoutMs(g.get("echo", "caller")); got != 100 {
		t.Errorf("pinned: timeout %d, want 100", got)
	}
	cfg.Apply([]etcdx.Event{{Key: key, Value: entryValue(t, api.Entry{Document: v2, Rollout: &api.Rollout{Percent: 10, Previous: v1, PreviousRevision: 5}})}}, 5)
	if c := g.classOf("caller", inside); c != "" {
		t.Errorf("pinned during a rollout: a canary node in class %q, want none (the pin wins)", c)
	}
	cfg.Apply([]etcdx.Event{{Key: key, Value: entryValue(t, api.Entry{Document: v2})}}, 6)
	pins.Apply([]etcdx.Event{{Key: "caller", Deleted: true}}, 5)
	cfg.Apply([]etcdx.Event{{Key: key, Deleted: true}}, 6)
	if g.get("echo", "caller") != nil {
		t.Error("deleted config still applies")
	}
	if len(told) != 6 {
		t.Errorf("told %d changes, want 6 (put, rollout, promote, pin, unpin, delete): %v", len(told), told)
	}
}

// Without TLS the ADS port is loopback only.
func TestPlaintextIsLoopbackOnly(t *testing.T) {
	if s, err := New("0.0.0.0:0", nil, Options{}); err == nil {
		s.ln.Close()
		t.Fatal("plaintext ADS on 0.0.0.0 was allowed")
	}
	s, err := New("127.0.0.1:0", nil, Options{})
	if err != nil {
		t.Fatalf("plaintext ADS on loopback: %v", err)
	}
	s.ln.Close()
}
