package shard_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cloudwego/kitex/pkg/discovery"

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/testenv"
)

func instances(ids ...string) []discovery.Instance {
	var out []discovery.Instance
	for i, id := range ids {
		out = append(out, discovery.NewInstance("tcp", fmt.Sprintf("127.0.0.1:%d", 9000+i), 10, map[string]string{shard.IDTag: id}))
	}
	return out
}

func owners(ins []discovery.Instance, keys []string) map[string]string {
	p := shard.NewRendezvous(shard.KeyFromContext).GetPicker(discovery.Result{Instances: ins})
	out := map[string]string{}
	for _, k := range keys {
		got := p.Next(shard.WithKey(context.Background(), k), nil)
		id, _ := got.Tag(shard.IDTag)
		out[k] = id
	}
	return out
}

func services(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("svc-%d", i))
	}
	return out
}

// The owner of a service must not depend on the process or on the order
// instances are listed in: a mixer and a calculator compute it separately.
func TestRendezvousIsDeterministic(t *testing.T) {
	keys := services(200)
	a := owners(instances("c1", "c2", "c3"), keys)
	b := owners(instances("c3", "c1", "c2"), keys)
	for _, k := range keys {
		if a[k] != b[k] {
			t.Fatalf("%s: owner %s with one order, %s with another", k, a[k], b[k])
		}
	}
	// Golden owners: every process computes these, and a change here would
	// move services between shards on an upgrade.
	golden := map[string]string{"comment-svc": "c1", "feed-api": "c2", "pay-svc": "c3", "svc-0": "c3", "svc-1": "c2", "svc-2": "c3"}
	got := owners(instances("c2", "c3", "c1"), []string{"comment-svc", "feed-api", "pay-svc", "svc-0", "svc-1", "svc-2"})
	if fmt.Sprint(got) != fmt.Sprint(golden) {
		t.Fatalf("owners %v, want the golden %v", got, golden)
	}
}

func TestRendezvousSpreadsAndMovesOnlyWhatItMust(t *testing.T) {
	keys := services(3000)
	before := owners(instances("c1", "c2", "c3"), keys)
	count := map[string]int{}
	for _, o := range before {
		count[o]++
	}
	for _, id := range []string{"c1", "c2", "c3"} {
		if count[id] < 800 || count[id] > 1200 { // 1000 expected each
			t.Fatalf("uneven spread over 3 shards: %v", count)
		}
	}
	// c2 leaves: only c2's services move, and they spread over c1 and c3.
	after := owners(instances("c1", "c3"), keys)
	for _, k := range keys {
		if before[k] != "c2" && after[k] != before[k] {
			t.Fatalf("%s moved from %s to %s although its owner stayed", k, before[k], after[k])
		}
		if after[k] == "c2" {
			t.Fatalf("%s still owned by the departed shard", k)
		}
	}
	// A fourth shard takes about a quarter, only from the others.
	grown := owners(instances("c1", "c2", "c3", "c4"), keys)
	moved := 0
	for _, k := range keys {
		if grown[k] != before[k] {
			if grown[k] != "c4" {
				t.Fatalf("%s moved to %s, not to the new shard", k, grown[k])
			}
			moved++
		}
	}
	if moved < 600 || moved > 900 {
		t.Fatalf("%d of 3000 services moved to the new shard, want about 750", moved)
	}
}

func TestRendezvousWithNoInstances(t *testing.T) {
	p := shard.NewRendezvous(shard.KeyFromContext).GetPicker(discovery.Result{})
	if got := p.Next(shard.WithKey(context.Background(), "svc"), nil); got != nil {
		t.Fatalf("picked %v from nothing", got)
	}
}

// Registration and membership against a real etcd: shards appear, leave on
// Close at once, and a shard whose process died leaves when its lease expires.
func TestMembershipFollowsRegistrations(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	cli := etcd.Client(t)
	prefix := testenv.Prefix(t)
	log := logx.Discard()

	m := shard.NewMembership(cli, prefix, log)
	go m.Run(testenv.Context(t))

	r1, err := shard.Register(etcd.Client(t), prefix, shard.Shard{ID: "c1", Addr: "127.0.0.1:9001"}, 5*time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	died := etcd.Client(t)
	r2, err := shard.Register(died, prefix, shard.Shard{ID: "c2", Addr: "127.0.0.1:9002"}, 2*time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	waitShards(t, m, "c1", "c2")
	if !r1.Registered() || !m.Synced() {
		t.Fatalf("registered %v, synced %v", r1.Registered(), m.Synced())
	}

	// Every service has an owner, and the view agrees with a fresh computation.
	for _, svc := range services(50) {
		if o, ok := m.View().Owner(svc); !ok || (o.ID != "c1" && o.ID != "c2") {
			t.Fatalf("owner of %s: %+v %v", svc, o, ok)
		}
	}

	// c2's process dies: its client goes away without revoking; the lease expires.
	defer r2.Close()
	died.Close()
	waitShards(t, m, "c1")

	r1.Close()
	waitShards(t, m)
	if _, ok := m.View().Owner("svc-1"); ok {
		t.Fatal("an owner with no shards registered")
	}
}

func waitShards(t *testing.T, m *shard.Membership, want ...string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() error {
		var got []string
		for _, s := range m.View().Shards {
			got = append(got, s.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("shards %v, want %v", got, want)
		}
		return nil
	})
}
