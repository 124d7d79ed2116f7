package mixer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

const dropped = `sextant_mixer_records_dropped_total`

func droppedTotal(t testing.TB, addr string) float64 {
	var sum float64
	for _, reason := range []string{"no_shard", "retries_exhausted", "rejected_by_calculator", "refused_by_calculator", "shutdown"} {
		sum += testenv.Metric(t, addr, fmt.Sprintf(`%s{reason=%q}`, dropped, reason))
	}
	return sum
}

// Two shards and one mixer: every service's records end up on exactly the
// shard that owns it, and the totals match what was posted. Then one shard
// stops while reports keep coming: its services move to the other shard and
// nothing is lost.
func TestShardsOwnTheirServices(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	c1 := calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	c2 := calculatortest.Start(t, etcd, prefix, "calc-2", nil)
	shards := []*calculator.Calculator{c1, c2}
	mx := mixertest.Start(t, etcd, prefix, nil)
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 2)

	tr := newTraffic()
	postAll(t, mx.Addr(), reports(60, 12, 1), 20, tr)
	testenv.WaitMetric(t, mx.Addr(), `sextant_mixer_records_forwarded_total{kind="edge"}`, float64(60*12))
	testenv.WaitMetric(t, mx.Addr(), `sextant_mixer_records_forwarded_total{kind="server"}`, 60)

	owners := ownersOf([]string{"calc-1", "calc-2"}, tr.services())
	held := map[string]int{}
	for _, svc := range tr.services() {
		got, holders := totals(shards, svc)
		if len(holders) != 1 || holders[0] != owners[svc] {
			t.Fatalf("%s is held by %v, owner is %s", svc, holders, owners[svc])
		}
		held[holders[0]]++
		if got.EdgeRecords != tr.edges[svc] || got.EdgeRequests != tr.edgeRequests[svc] || got.ServerRecords != tr.servers[svc] {
			t.Fatalf("%s: held %+v, posted %d edges, %d requests, %d server parts",
				svc, got, tr.edges[svc], tr.edgeRequests[svc], tr.servers[svc])
		}
	}
	if held["calc-1"] == 0 || held["calc-2"] == 0 {
		t.Fatalf("services per shard %v: both shards should own some of 15 services", held)
	}
	// The shard's own debug view agrees on ownership, once its view of the
	// shard set has caught up.
	for _, svc := range tr.services() {
		owner := c1
		if owners[svc] == "calc-2" {
			owner = c2
		}
		testenv.Eventually(t, 10*time.Second, func() error {
			var view struct {
				Owner string `json:"owner"`
				Owned bool   `json:"owned"`
			}
			getJSON(t, "http://"+owner.AdminAddr()+"/debug/windows?service="+svc, &view)
			if !view.Owned || view.Owner != owners[svc] {
				return fmt.Errorf("%s on %s: /debug/windows says owner %q, owned %v", svc, owners[svc], view.Owner, view.Owned)
			}
			return nil
		})
	}

	// calc-2 stops while reports keep arriving.
	var wg sync.WaitGroup
	posting := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-posting:
				return
			default:
			}
			postAll(t, mx.Addr(), reports(10, 12, 100+i), 10, tr)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	if err := c2.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 1)
	time.Sleep(200 * time.Millisecond)
	close(posting)
	wg.Wait()
	afterStop := newTraffic()
	postAll(t, mx.Addr(), reports(30, 12, 999), 10, afterStop)
	for _, r := range reports(30, 12, 999) {
		tr.add(r)
	}

	testenv.Eventually(t, 30*time.Second, func() error { return matches(shards, tr) })
	if d := droppedTotal(t, mx.Addr()); d != 0 {
		t.Fatalf("%v records dropped, none were lost", d)
	}
	// After the stop, every service is on calc-1 alone.
	for _, svc := range afterStop.services() {
		if _, holders := totals([]*calculator.Calculator{c2}, svc); len(holders) != 0 && owners[svc] != "calc-2" {
			t.Fatalf("%s reached the stopped shard", svc)
		}
		if _, ok := c1.Windows(svc); !ok {
			t.Fatalf("%s did not move to calc-1", svc)
		}
	}
}

// A shard that is registered but not answering (its process died, its lease
// not expired yet): the records of its services are retried for --retry-for,
// then dropped and counted. Exactly those are missing; the rest arrive.
func TestUndeliverableRecordsAreCountedAsDropped(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	c1 := calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	dead := registerDeadShard(t, etcd, prefix, "calc-dead", 30*time.Second)
	defer dead.Close()
	mx := mixertest.Start(t, etcd, prefix, func(c *mixer.Config) {
		c.Forward.RetryFor = 1500 * time.Millisecond
		c.Forward.RetryBase = 50 * time.Millisecond
		c.Forward.RetryMax = 200 * time.Millisecond
	})
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 2)

	tr := newTraffic()
	postAll(t, mx.Addr(), reports(40, 10, 1), 10, tr)
	owners := ownersOf([]string{"calc-1", "calc-dead"}, tr.services())
	var lost int64
	for svc, owner := range owners {
		if owner == "calc-dead" {
			lost += tr.edges[svc] + tr.servers[svc]
		}
	}
	if lost == 0 || lost == int64(tr.records) {
		t.Fatalf("test needs services on both shards; owners %v", owners)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if q := testenv.Metric(t, mx.Addr(), "sextant_mixer_queue_records"); q != 0 {
			return fmt.Errorf("%v records still held", q)
		}
		return nil
	})
	if got := testenv.Metric(t, mx.Addr(), dropped+`{reason="retries_exhausted"}`); got != float64(lost) {
		t.Fatalf("dropped %v, but %d records belonged to the dead shard", got, lost)
	}
	if testenv.Metric(t, mx.Addr(), "sextant_mixer_records_retried_total") == 0 {
		t.Fatal("no retries counted before dropping")
	}
	for svc, owner := range owners {
		got, _ := totals([]*calculator.Calculator{c1}, svc)
		want := tr.edges[svc]
		if owner == "calc-dead" {
			want = 0
		}
		if got.EdgeRecords != want {
			t.Fatalf("%s (owner %s): calc-1 holds %d edges, want %d", svc, owner, got.EdgeRecords, want)
		}
	}
}

// The same dead shard, but its lease expires before the mixer gives up: its
// services move to the live shard and nothing is lost.
func TestRecordsMoveWhenDeadShardLeaseExpires(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	c1 := calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	cli := etcd.Client(t)
	dead := registerDeadShardWith(t, cli, prefix, "calc-dead", 2*time.Second)
	mx := mixertest.Start(t, etcd, prefix, nil) // retries for 30 s
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 2)

	tr := newTraffic()
	postAll(t, mx.Addr(), reports(40, 10, 1), 10, tr)
	// The dead shard's process is gone: nothing keeps its lease alive.
	cli.Close()
	defer dead.Close()
	testenv.Eventually(t, 30*time.Second, func() error { return matches([]*calculator.Calculator{c1}, tr) })
	if d := droppedTotal(t, mx.Addr()); d != 0 {
		t.Fatalf("%v records dropped", d)
	}
	if testenv.Metric(t, mx.Addr(), "sextant_mixer_records_retried_total") == 0 {
		t.Fatal("the dead shard's records were delivered without a retry")
	}
}

// registerDeadShard registers a shard at an address where nothing listens.
func registerDeadShard(t *testing.T, etcd *testenv.Etcd, prefix, id string, ttl time.Duration) *shard.Registration {
	return registerDeadShardWith(t, etcd.Client(t), prefix, id, ttl)
}

func registerDeadShardWith(t *testing.T, cli *clientv3.Client, prefix, id string, ttl time.Duration) *shard.Registration {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // connection refused from now on
	return registerShard(t, cli, prefix, id, addr, ttl)
}

// registerShardAt registers ln as a shard; whatever ln does is what the mixer gets.
func registerShardAt(t *testing.T, etcd *testenv.Etcd, prefix, id string, ln net.Listener) *shard.Registration {
	return registerShard(t, etcd.Client(t), prefix, id, ln.Addr().String(), 10*time.Second)
}

func registerShard(t *testing.T, cli *clientv3.Client, prefix, id, addr string, ttl time.Duration) *shard.Registration {
	t.Helper()
	r, err := shard.Register(cli, prefix, shard.Shard{ID: id, Addr: addr}, ttl, logx.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !r.Registered() {
			return fmt.Errorf("%s not registered", id)
		}
		return nil
	})
	return r
}

func ownersOf(ids []string, services []string) map[string]string {
	var shards []shard.Shard
	for i, id := range ids {
		shards = append(shards, shard.Shard{ID: id, Addr: fmt.Sprintf("127.0.0.1:%d", 1000+i)})
	}
	view := shard.NewView(shards)
	out := map[string]string{}
	for _, s := range services {
		o, _ := view.Owner(s)
		out[s] = o.ID
	}
	return out
}

func getJSON(t testing.TB, url string, v any) {
	t.Helper()
	resp, err := testenv.HTTP.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
