package natssdk_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/sextant-mesh/sextant/api/unitrouting"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/natssdk"
)

// startNATS runs an embedded NATS server on a free loopback port.
func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server is not ready")
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// The unit rules of the consuming service route each tenant's messages to
// its unit's subject: enforced tenants to orders.<unit>, observed and
// unmatched ones to orders (counted), a denied tenant's refused.
func TestTenantsMessagesGoToTheirUnitsSubject(t *testing.T) {
	nc := startNATS(t)
	subs := map[string]*nats.Subscription{}
	for _, s := range []string{"orders", "orders.c1", "orders.c2"} {
		sub, err := nc.SubscribeSync(s)
		if err != nil {
			t.Fatal(err)
		}
		subs[s] = sub
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	router := sdk.NewUnitRouter("order-api", nil)
	if err := router.Update("order-worker", []byte(`{"rules": [
	  {"name": "banned", "match": {"keys": ["t-banned"]}, "unit": "c1", "mode": "enforce", "deny": true},
	  {"name": "vip", "match": {"keys": ["t-vip1", "t-vip2"]}, "unit": "c2", "mode": "enforce"},
	  {"name": "eu", "match": {"headers": {"x-region": "eu"}}, "unit": "c1", "mode": "enforce"},
	  {"name": "trial", "match": {"keys": ["t-trial"]}, "unit": "c2", "mode": "observe"}]}`)); err != nil {
		t.Fatal(err)
	}
	pub := &sdk.UnitPublisher{Router: router, Service: "order-worker", Subject: "orders", Broker: natssdk.Publisher{Conn: nc}}

	want := map[string][]string{} // subject -> message bodies, in order
	send := func(header map[string]string, body string, subject string) {
		t.Helper()
		got, err := pub.Publish(header, []byte(body))
		if err != nil || got != subject {
			t.Fatalf("%s: published to %q (%v), want %q", body, got, err, subject)
		}
		want[subject] = append(want[subject], body)
	}
	for i := range 5 {
		send(map[string]string{"x-tenant-id": "t-vip1"}, fmt.Sprintf("vip1-%d", i), "orders.c2")
		send(map[string]string{"x-tenant-id": "t-vip2"}, fmt.Sprintf("vip2-%d", i), "orders.c2")
		send(map[string]string{"x-tenant-id": "t-9", "x-region": "eu"}, fmt.Sprintf("eu-%d", i), "orders.c1")
		send(map[string]string{"x-tenant-id": "t-trial"}, fmt.Sprintf("trial-%d", i), "orders")
		send(nil, fmt.Sprintf("anon-%d", i), "orders")
		if _, err := pub.Publish(map[string]string{"x-tenant-id": "t-banned"}, []byte("no")); !errors.Is(err, sdk.ErrUnitDenied) {
			t.Fatalf("banned tenant: %v, want ErrUnitDenied", err)
		}
	}
	for subject, bodies := range want {
		for _, body := range bodies {
			m, err := subs[subject].NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("%s: waiting for %s: %v", subject, body, err)
			}
			if string(m.Data) != body {
				t.Fatalf("%s: got %s, want %s", subject, m.Data, body)
			}
			if f := natssdk.Features(m); body[:2] == "vi" && f.Header("x-tenant-id") == "" {
				t.Fatalf("%s lost its headers", body)
			}
		}
	}
	// Nothing else arrived anywhere (every message was published before
	// the flush that returns below, and NATS keeps a subscription's order).
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for s, sub := range subs {
		if n, _, _ := sub.Pending(); n != 0 {
			t.Errorf("%s has %d unexpected messages", s, n)
		}
	}
	for _, c := range []struct {
		rule, unit, outcome string
		want                int64
	}{
		{"vip", "c2", unitrouting.Routed, 10}, {"eu", "c1", unitrouting.Routed, 5},
		{"trial", "c2", unitrouting.Observed, 5}, {"banned", "c1", unitrouting.Denied, 5},
	} {
		if n := router.Count(sdk.UnitCount{Callee: "order-worker", Rule: c.rule, Unit: c.unit, Outcome: c.outcome}); n != c.want {
			t.Errorf("%s %s: %d, want %d", c.rule, c.outcome, n, c.want)
		}
	}
}
