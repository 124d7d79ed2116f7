package core

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// A calculator keeps computing while etcd is away, and its publisher
// retries the newest policy until mesh-core can store it: the first policy
// mesh-core sees after an outage was often computed during it. That policy
// is newer than the last good one it replaces, so it must not arrive
// expired because the outage is in its wall-clock age: static weights were
// served for a moment after a partition of mesh-core from etcd healed, and
// after a quorum loss (TTL 5 s), until the calculator's next policy.
// Whether the mirror delivers the policy before or after mesh-core sees it
// is in touch again must not matter either. Time in touch still counts: a
// policy not refreshed expires after the TTL.
func TestAPolicyComputedDuringAnOutageArrivesFresh(t *testing.T) {
	const ttl = 5 * time.Second
	for _, order := range []string{"in touch, then the policy", "the policy, then in touch", "listed again, then in touch"} {
		t.Run(order, func(t *testing.T) {
			c := NewCache(ttl, 100, slog.New(slog.DiscardHandler))
			base := time.Now()
			cur := base
			c.now = func() time.Time { return cur }
			c.touchedAt = base
			regs, pols := registryMirror{c}, policyMirror{c}
			ids := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
			for i, id := range ids {
				b, _ := json.Marshal(api.Registration{Service: "svc", Instance: id, Addr: id, StaticWeight: 100})
				regs.Apply([]etcdx.Event{{Key: "svc/" + id, Value: b}}, int64(i+1))
			}
			policyAt := func(at time.Time, w0 int32) etcdx.Event {
				p := api.Policy{Service: "svc", Version: at.UnixMilli(), ComputedAtMs: at.UnixMilli(),
					Overload: &api.Overload{State: api.StateNormal},
					Weights:  []api.InstanceWeight{{Instance: ids[0], Weight: w0}, {Instance: ids[1], Weight: 100}, {Instance: ids[2], Weight: 50}}}
				b, _ := json.Marshal(p)
				return etcdx.Event{Key: "svc", Value: b}
			}
			p1 := policyAt(base, 900)
			pols.Apply([]etcdx.Event{p1}, 10)
			if got := c.Get("svc").PolicyAtMs; got != base.UnixMilli() {
				t.Fatalf("policy at %d, want the first policy's %d", got, base.UnixMilli())
			}

			// In touch for 1.5 s, then etcd is away for 20 s, four TTLs.
			cur = base.Add(1500 * time.Millisecond)
			c.SetInTouch(true)
			c.SetInTouch(false)
			for cur.Before(base.Add(21500 * time.Millisecond)) {
				cur = cur.Add(250 * time.Millisecond)
				c.SetInTouch(false)
				if got := c.Get("svc").PolicyAtMs; got != base.UnixMilli() {
					t.Fatalf("%s into the outage: policy at %d, want the last good one", cur.Sub(base), got)
				}
			}
			// The calculator computed a policy 10 s into the outage; it is
			// delivered at the heal.
			computed := base.Add(11500 * time.Millisecond)
			p2 := policyAt(computed, 800)
			switch order {
			case "in touch, then the policy":
				c.SetInTouch(true)
				cur = cur.Add(500 * time.Millisecond)
				pols.Apply([]etcdx.Event{p2}, 11)
			case "the policy, then in touch":
				cur = cur.Add(500 * time.Millisecond)
				pols.Apply([]etcdx.Event{p2}, 11)
				c.SetInTouch(true)
			case "listed again, then in touch":
				cur = cur.Add(500 * time.Millisecond)
				pols.Reset([]etcdx.Event{p2}, 11)
				c.SetInTouch(true)
			}
			c.expirePolicies()
			if got := c.Get("svc").PolicyAtMs; got != computed.UnixMilli() {
				t.Fatalf("after the heal: policy at %d, want the policy computed during the outage (%d); 0 is static weights", got, computed.UnixMilli())
			}
			// It was 1.5 s old in touch (the outage does not count) and ages
			// from there: it still applies 3 s later, and expires by 5.5 s.
			in := c.ages["svc"]
			if in.age > time.Second {
				t.Fatalf("the new policy arrived %s old in touch, want at most 1 s (the outage does not count)", in.age)
			}
			cur = cur.Add(3 * time.Second)
			c.SetInTouch(true)
			c.expirePolicies()
			if got := c.Get("svc").PolicyAtMs; got != computed.UnixMilli() {
				t.Fatalf("3 s after the heal: policy at %d, want it kept", got)
			}
			cur = cur.Add(2500 * time.Millisecond)
			c.SetInTouch(true)
			c.expirePolicies()
			if got := c.Get("svc").PolicyAtMs; got != 0 {
				t.Fatalf("5.5 s after the heal, not refreshed while in touch: policy at %d, want static weights", got)
			}
		})
	}
}

// The time out of touch is summed over the outages that overlap a span,
// and only the part within it counts.
func TestOutOfTouch(t *testing.T) {
	c := NewCache(time.Minute, 10, slog.New(slog.DiscardHandler))
	base := time.Now()
	cur := base
	c.now = func() time.Time { return cur }
	c.touchedAt = base
	at := func(s float64) time.Time { return base.Add(time.Duration(s * float64(time.Second))) }
	set := func(s float64, ok bool) { cur = at(s); c.SetInTouch(ok) }
	set(1, false)
	set(3, true)
	set(5, false)
	set(6, true)
	set(8, false) // lasts
	cur = at(10)
	for _, tc := range []struct {
		from, to float64
		want     time.Duration
	}{
		{0, 10, 5 * time.Second},
		{2, 10, 4 * time.Second},
		{3, 5, 0},
		{4, 9, 2 * time.Second},
		{9, 10, time.Second},
	} {
		if got := c.outOfTouch(at(tc.from), at(tc.to)); got != tc.want {
			t.Errorf("out of touch from %v s to %v s: %s, want %s", tc.from, tc.to, got, tc.want)
		}
	}
}
