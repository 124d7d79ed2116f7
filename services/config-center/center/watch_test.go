package center_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

func (c apiClient) watch(service, instance string, version, applied int64, wait string) (int, api.WatchAnswer) {
	c.t.Helper()
	q := url.Values{"service": {service}, "instance": {instance}, "version": {fmt.Sprint(version)}, "wait": {wait}}
	if applied > 0 {
		q.Set("applied", fmt.Sprint(applied))
	}
	r := c.do("GET", "/v1/watch?"+q.Encode(), "")
	var a api.WatchAnswer
	if r.status == 200 {
		// Strictly: the answer is the contract's type, field for field.
		if fe := api.Decode(r.body, &a); fe != nil {
			c.t.Fatalf("watch answer %s: %v", r.body, fe)
		}
	}
	return r.status, a
}

// limitOf is the qps_limit an instance applies.
func limitOf(t testing.TB, a api.WatchAnswer) (int64, string) {
	for _, e := range a.Configs {
		if e.Kind == "limit" {
			var l struct {
				QPS int64 `json:"qps_limit"`
			}
			_ = json.Unmarshal(e.Document, &l)
			return l.QPS, e.Source
		}
	}
	return 0, ""
}

// Rollout by percentage over 1,000 instances: about 10 % get the new
// document, the same ones stay in at 50 %, promote to 100 % gives it to all,
// and a pin beats any rollout until it is removed.
func TestRolloutPinsAndStatus(t *testing.T) {
	_, _, cc := setup(t, nil)
	path := "/v1/configs/limit/comment-svc"
	v1 := cc.do("PUT", path, `{"qps_limit": 100}`)
	if v1.status != 200 {
		t.Fatalf("v1: %s", v1)
	}
	v2 := cc.do("PUT", path+"?rollout=10", `{"qps_limit": 200}`, "If-Match", v1.header.Get("ETag"))
	if v2.status != 200 {
		t.Fatalf("rollout: %s", v2)
	}
	instances := make([]string, 1000)
	for i := range instances {
		instances[i] = fmt.Sprintf("10.%d.%d.%d:8080", i/65536, (i/256)%256, i%256)
	}
	canary := func(want int) map[string]bool {
		t.Helper()
		in := map[string]bool{}
		testenv.Eventually(t, 10*time.Second, func() error {
			clear(in)
			for _, id := range instances {
				_, a := cc.watch("comment-svc", id, 0, 0, "0s")
				if qps, _ := limitOf(t, a); qps == 200 {
					in[id] = true
				} else if qps != 100 {
					return fmt.Errorf("%s applies qps %d", id, qps)
				}
			}
			if n := len(in); n < want-want/3 || n > want+want/3 {
				return fmt.Errorf("%d of 1000 instances in a %d %% canary", n, want/10)
			}
			return nil
		})
		return in
	}
	at10 := canary(100)
	prom := cc.do("POST", path+"/promote?percent=50", "")
	if prom.status != 200 {
		t.Fatalf("promote: %s", prom)
	}
	at50 := canary(500)
	for id := range at10 {
		if !at50[id] {
			t.Fatalf("%s left the canary when it grew from 10 to 50 %%", id)
		}
	}

	// Pin comment-svc to v1: every instance applies it, canary or not.
	rev1 := mustUnquote(t, v1.header.Get("ETag"))
	if r := cc.do("POST", "/v1/pins/comment-svc", `{"kind": "limit", "scope": "comment-svc", "revision": `+rev1+`}`); r.status != 200 {
		t.Fatalf("pin: %s", r)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for id := range at50 {
			if qps, src := limitOf(t, mustWatch(cc, id)); qps != 100 || src != "pinned" {
				return fmt.Errorf("pinned canary instance %s applies %d (%s)", id, qps, src)
			}
		}
		return nil
	})
	if r := cc.do("POST", path+"/promote?percent=100", ""); r.status != 200 {
		t.Fatalf("promote to 100: %s", r)
	}
	time.Sleep(200 * time.Millisecond)
	if qps, src := limitOf(t, mustWatch(cc, instances[0])); qps != 100 || src != "pinned" {
		t.Fatalf("the pin lost to a promotion: %d (%s)", qps, src)
	}
	if r := cc.do("DELETE", "/v1/pins/comment-svc?kind=limit&scope=comment-svc", ""); r.status != 200 {
		t.Fatalf("unpin: %s", r)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if qps, src := limitOf(t, mustWatch(cc, instances[0])); qps != 200 || src != "current" {
			return fmt.Errorf("after unpin: %d (%s)", qps, src)
		}
		return nil
	})

	// Status: instances report what they applied on their next poll.
	for _, id := range instances[:20] {
		_, a := cc.watch("comment-svc", id, 0, 0, "0s")
		cc.watch("comment-svc", id, a.Version, a.Version, "0s")
	}
	var st api.ConfigStatus
	_ = json.Unmarshal(cc.do("GET", path+"/status", "").body, &st)
	cur := mustUnquote(t, cc.do("GET", path, "").header.Get("ETag"))
	if st.Instances != 20 || st.ByRevision[cur] != 20 {
		t.Fatalf("status %+v, want 20 instances on revision %s", st, cur)
	}
}

func mustWatch(cc apiClient, instance string) api.WatchAnswer {
	_, a := cc.watch("comment-svc", instance, 0, 0, "0s")
	return a
}

// A watcher is released by a change that applies to it, and not by one
// that does not.
func TestWatchReleasedOnlyByRelevantChanges(t *testing.T) {
	_, _, cc := setup(t, nil)
	cc.do("PUT", "/v1/configs/limit/comment-svc", `{"qps_limit": 100}`)
	var a api.WatchAnswer
	testenv.Eventually(t, 10*time.Second, func() error {
		_, a = cc.watch("comment-svc", "10.0.0.1:80", 0, 0, "0s")
		if qps, _ := limitOf(t, a); qps != 100 {
			return fmt.Errorf("not yet: %+v", a)
		}
		return nil
	})
	type result struct {
		status int
		a      api.WatchAnswer
		at     time.Time
	}
	released := make(chan result, 1)
	go func() {
		s, got := cc.watch("comment-svc", "10.0.0.1:80", a.Version, 0, "20s")
		released <- result{s, got, time.Now()}
	}()
	time.Sleep(200 * time.Millisecond)
	// Another service's config: not this watcher's business.
	if r := cc.do("PUT", "/v1/configs/limit/other-svc", `{"qps_limit": 7}`); r.status != 200 {
		t.Fatal(r)
	}
	select {
	case r := <-released:
		t.Fatalf("released by another service's change: %d %+v", r.status, r.a)
	case <-time.After(500 * time.Millisecond):
	}
	cur := cc.do("GET", "/v1/configs/limit/comment-svc", "").header.Get("ETag")
	if r := cc.do("PUT", "/v1/configs/limit/comment-svc", `{"qps_limit": 300}`, "If-Match", cur); r.status != 200 {
		t.Fatal(r)
	}
	changedAt := time.Now()
	select {
	case r := <-released:
		if qps, _ := limitOf(t, r.a); r.status != 200 || qps != 300 {
			t.Fatalf("released with %d %+v", r.status, r.a)
		}
		t.Logf("watch released %s after the write returned", r.at.Sub(changedAt))
	case <-time.After(15 * time.Second):
		t.Fatal("the watcher was not released by its own config's change")
	}
	// Without a change the watch answers 304 after its wait.
	if s, _ := cc.watch("comment-svc", "10.0.0.1:80", 0, 0, "0s"); s != 200 {
		t.Fatalf("fresh watch: %d", s)
	}
}

// Dry-run denials reported in telemetry reach the shard that owns the
// callee; the config-center lists them next to the dry_run rules.
func TestDryRunReport(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	calc := calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	srv := centertest.Start(t, etcd, prefix, nil)
	cc := apiClient{t: t, base: "http://" + srv.Addr(), token: centertest.AdminToken}
	cc.do("PUT", "/v1/configs/access_control/pay-svc", `{"rules": [{"name": "allow-list", "type": "allow", "callers": ["feed-api"], "mode": "dry_run"}]}`)

	kc, err := aggregatorsvc.NewClient("weight-calculator", client.WithHostPorts(calc.KitexAddr()))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	if _, err := kc.Ingest(context.Background(), &aggregator.ReportBatch{Denials: []*aggregator.DryRunDenial{
		{Reporter: &aggregator.Reporter{Service: "pay-svc", Instance: "10.0.0.5:80"}, TimestampMs: now,
			CalleeService: "pay-svc", CallerService: "batch-job", Rule: "allow-list", Count: 4},
		{Reporter: &aggregator.Reporter{Service: "pay-svc", Instance: "10.0.0.6:80"}, TimestampMs: now,
			CalleeService: "pay-svc", CallerService: "batch-job", Rule: "allow-list", Count: 3},
	}}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Rules   []api.AccessRule `json:"dry_run_rules"`
		Denials []struct {
			CallerService string `json:"caller_service"`
			Rule          string `json:"rule"`
			Count         int64  `json:"count"`
			LastSeenMs    int64  `json:"last_seen_ms"`
		} `json:"denials"`
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		r := cc.do("GET", "/v1/access/dry-run?service=pay-svc", "")
		if r.status != 200 {
			return fmt.Errorf("%s", r)
		}
		_ = json.Unmarshal(r.body, &got)
		if len(got.Denials) != 1 || got.Denials[0].Count != 7 || got.Denials[0].CallerService != "batch-job" ||
			got.Denials[0].LastSeenMs == 0 || len(got.Rules) != 1 {
			return fmt.Errorf("report %s", r.body)
		}
		return nil
	})
}

// A change wakes only the watches it concerns: 20 writes for one service
// compute no answer for the watches of another; one write for theirs
// computes each of their answers once.
func TestChangesWakeOnlyTheirWatches(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	srv := centertest.Start(t, etcd, testenv.Prefix(t), nil)
	cc := apiClient{t: t, base: "http://" + srv.Addr(), token: centertest.AdminToken}
	computed := func() float64 {
		return testenv.Metric(t, srv.Addr(), "sextant_configcenter_watch_answers_computed_total")
	}
	// Every mirror has listed etcd once (a listing wakes every watch).
	testenv.Eventually(t, 10*time.Second, func() error {
		if r := testenv.Ready(t, srv.Addr()); len(r) > 0 {
			return fmt.Errorf("not ready: %v", r)
		}
		return nil
	})
	_, first := cc.watch("a-svc", "10.0.0.1:80", 0, 0, "0s")
	const watches = 30
	answered := make(chan int, watches)
	for i := range watches {
		go func() {
			s, _ := cc.watch("a-svc", fmt.Sprintf("10.0.1.%d:80", i), first.Version, 0, "60s")
			answered <- s
		}()
	}
	testenv.WaitMetric(t, srv.Addr(), "sextant_configcenter_watch_answers_computed_total", 1+watches)
	for i := range 20 {
		if r := cc.do("PUT", fmt.Sprintf("/v1/configs/limit/b-svc-%d", i), `{"qps_limit": 10}`); r.status != 200 {
			t.Fatalf("write for another service: %s", r)
		}
	}
	if r := cc.do("PUT", "/v1/configs/limit/a-svc", `{"qps_limit": 10}`); r.status != 200 {
		t.Fatalf("write: %s", r)
	}
	for range watches {
		select {
		case s := <-answered:
			if s != 200 {
				t.Fatalf("a watch answered %d", s)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a watch was not released by its service's change")
		}
	}
	// The b-svc events were applied before a-svc's (one watch, in order), so
	// every answer they would have computed is counted by now.
	if got := computed(); got != 1+2*watches {
		t.Fatalf("%v answers computed, want %d: changes to other services woke these watches", got, 1+2*watches)
	}
}
