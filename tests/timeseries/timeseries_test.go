// Package timeseries checks the time series of the whole control plane: every
// service writing to a real influxd (bin/influxd), every documented
// measurement and every dashboard panel's query.
package timeseries

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"

	"github.com/sextant-mesh/sextant/internal/influxdev"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/internal/tsdb"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

func series(influx *influxdev.Server, queue int) tsdb.Config {
	c := tsdb.DefaultConfig()
	c.URL, c.Database, c.RetentionPolicy = influx.URL(), influxdev.Database, influxdev.RetentionPolicy
	c.FlushInterval, c.BatchSize, c.ExportEvery = 100*time.Millisecond, 200, time.Second
	c.Queue = queue
	return c
}

// influxQL runs a query and returns the rows of its first series as maps.
func influxQL(t testing.TB, influx *influxdev.Server, q string) []map[string]any {
	t.Helper()
	resp, err := testenv.HTTP.Get(influx.URL() + "/query?" + url.Values{"db": {influxdev.Database}, "q": {q}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Results []struct {
			Series []struct {
				Columns []string `json:"columns"`
				Values  [][]any  `json:"values"`
			} `json:"series"`
			Error string `json:"error"`
		} `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	for _, r := range body.Results {
		if r.Error != "" {
			t.Fatalf("%s: %s", q, r.Error)
		}
		for _, s := range r.Series {
			for _, v := range s.Values {
				row := map[string]any{}
				for i, c := range s.Columns {
					row[c] = v[i]
				}
				rows = append(rows, row)
			}
		}
	}
	return rows
}

func post(t testing.TB, url string, body any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := testenv.HTTP.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The services against a real influxd: every documented measurement appears
// with its tags and values, every dashboard panel's query returns series;
// with influxd stopped ingest goes on and the drop counter rises; when it
// returns, writes resume.
func TestServicesWriteTheDocumentedSeries(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) { c.TSDB = series(influx, 10_000) })
	calculatortest.Start(t, etcd, prefix, "calc-1", func(c *calculator.Config) {
		c.TSDB, c.MeshCoreAddr = series(influx, 10_000), mc.KitexAddr()
	})
	mx := mixertest.Start(t, etcd, prefix, func(c *mixer.Config) { c.TSDB = series(influx, 50) })
	cc := centertest.Start(t, etcd, prefix, func(c *center.Config) { c.TSDB = series(influx, 10_000) })
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 1)

	instances := []string{"10.0.0.1:9000", "10.0.0.2:9000"}
	for _, in := range instances {
		if s := post(t, "http://"+mc.Addr()+"/v1/instances", map[string]any{"service": "comment-svc", "instance": in, "ttl_s": 60}); s != 201 {
			t.Fatalf("register: %d", s)
		}
	}
	report := func() int {
		now := time.Now().UnixMilli()
		var reports []map[string]any
		var calls []map[string]any
		for i, in := range instances {
			calls = append(calls, map[string]any{"callee_service": "comment-svc", "callee_instance": in, "requests": 100,
				"errors": i, "timeouts": 0, "latency_ms_avg": 10 + 40*float64(i), "latency_ms_p99": 30})
			reports = append(reports, map[string]any{"reporter": map[string]any{"service": "comment-svc", "instance": in},
				"window_ms": 200, "timestamp_ms": now, "server": map[string]any{"requests": 100, "cpu_util": 0.2 + 0.5*float64(i),
					"queue_time_ms_avg": 1, "queue_time_ms_p99": 2, "inflight": 3, "client_timeouts": 0,
					"requests_by_priority": map[string]int{"64": 100}},
				"security": map[string]any{"identities": map[string]int{"verified": 100}, "connections": map[string]int{"tls": 1}}})
		}
		reports = append(reports, map[string]any{"reporter": map[string]any{"service": "front", "instance": "10.9.0.1:80"},
			"window_ms": 200, "timestamp_ms": now, "calls": calls,
			"dry_run_denials": []any{map[string]any{"callee_service": "pay-svc", "caller_service": "front", "rule": "allow-list", "count": 2}},
			"security": map[string]any{"identities": map[string]int{"verified": 7, "missing_denied": 1},
				"connections": map[string]int{"tls": 3, "plaintext_refused": 1}},
			"unit_routes": []any{map[string]any{"callee_service": "comment-svc", "rule": "gold", "unit": "c2", "outcome": "observed", "count": 5}}})
		return post(t, "http://"+mx.Addr()+"/v1/telemetry", reports)
	}
	// Report until the calculator has published weights for both instances.
	testenv.Eventually(t, 60*time.Second, func() error {
		if s := report(); s != 202 {
			return fmt.Errorf("ingest %d", s)
		}
		time.Sleep(200 * time.Millisecond)
		if len(influxQL(t, influx, `SELECT * FROM "weight" WHERE "service"='comment-svc'`)) < 2 {
			return fmt.Errorf("no weights written yet")
		}
		return nil
	})
	// The console's charts read the same series back through the
	// config-center (GET /v1/services/{s}/history).
	testenv.Eventually(t, 30*time.Second, func() error {
		resp, err := testenv.HTTP.Get("http://" + cc.Addr() + "/v1/services/comment-svc/history?minutes=5")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var h center.ServiceHistory
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("history: %d %v", resp.StatusCode, err)
		}
		for _, in := range instances {
			if p := h.Instances[in]; len(p) == 0 || p[0][0] < float64(time.Now().Add(-5*time.Minute).UnixMilli()) || p[0][1] <= 0 || p[0][1] > 1000 {
				return fmt.Errorf("history of %s: %v (step %d ms)", in, p, h.StepMs)
			}
		}
		if len(h.Shed) == 0 {
			return fmt.Errorf("no shed share in the history")
		}
		return nil
	})
	// A config change, and a poller released by a change (push latency).
	api := "http://" + cc.Addr() + "/v1/configs/limit/comment-svc"
	req, _ := http.NewRequest("PUT", api, strings.NewReader(`{"qps_limit": 100}`))
	req.Header.Set("Authorization", "Bearer "+centertest.AdminToken)
	if resp, err := testenv.HTTP.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("config write: %v %v", resp, err)
	}
	var cur struct {
		Version int64 `json:"version"`
	}
	resp, err := testenv.HTTP.Get("http://" + mc.Addr() + "/v1/discovery/new-svc")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&cur)
	resp.Body.Close()
	released := make(chan struct{})
	go func() {
		defer close(released)
		resp, err := testenv.HTTP.Get(fmt.Sprintf("http://%s/v1/discovery/new-svc?version=%d&wait=20s", mc.Addr(), cur.Version))
		if err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	post(t, "http://"+mc.Addr()+"/v1/instances", map[string]any{"service": "new-svc", "instance": "10.0.1.1:1", "ttl_s": 60})
	<-released

	checks := []struct {
		query string
		check func(row map[string]any) bool
	}{
		{`SELECT * FROM "server" WHERE "service"='comment-svc'`, func(r map[string]any) bool {
			return r["instance"] != nil && r["requests"] == 100.0 && r["cpu_util"] != nil && r["queue_time_ms_avg"] == 1.0
		}},
		{`SELECT * FROM "call" WHERE "callee_service"='comment-svc'`, func(r map[string]any) bool {
			// summed per callee instance and window by the calculator
			req, _ := r["requests"].(float64)
			recs, _ := r["records"].(float64)
			return r["callee_instance"] != nil && recs >= 1 && req == 100*recs && r["source"] == "weight-calculator"
		}},
		{`SELECT * FROM "dry_run_denial"`, func(r map[string]any) bool {
			return r["callee_service"] == "pay-svc" && r["caller_service"] == "front" && r["rule"] == "allow-list" && r["count"] == 2.0
		}},
		{`SELECT * FROM "identities" WHERE "service"='front'`, func(r map[string]any) bool {
			return r["instance"] == "10.9.0.1:80" && r["verified"] == 7.0 && r["missing_denied"] == 1.0
		}},
		{`SELECT * FROM "connections" WHERE "service"='front'`, func(r map[string]any) bool {
			return r["instance"] == "10.9.0.1:80" && r["tls"] == 3.0 && r["plaintext_refused"] == 1.0
		}},
		{`SELECT * FROM "unit_route"`, func(r map[string]any) bool {
			return r["callee_service"] == "comment-svc" && r["caller_service"] == "front" && r["rule"] == "gold" && r["unit"] == "c2" &&
				r["outcome"] == "observed" && r["count"] == 5.0
		}},
		{`SELECT * FROM "weight" WHERE "service"='comment-svc'`, func(r map[string]any) bool {
			w, ok := r["weight"].(float64)
			return ok && w >= 0 && w <= 1000 && r["instance"] != nil && r["reason"] != nil
		}},
		{`SELECT * FROM "overload" WHERE "service"='comment-svc'`, func(r map[string]any) bool {
			return r["state"] == "normal" && r["state_code"] == 0.0 && r["admit_min_priority"] == 0.0
		}},
		{`SELECT * FROM "config_change"`, func(r map[string]any) bool {
			return r["kind"] == "limit" && r["action"] == "put" && r["who"] == "admin" && r["new_revision"].(float64) > 0
		}},
		{`SELECT * FROM "sextant_mixer"`, func(r map[string]any) bool {
			v, _ := r["reports_accepted_total"].(float64)
			return v > 0 && r["records_forwarded_total"] != nil && r["queue_records"] != nil
		}},
		{`SELECT * FROM "sextant_calculator"`, func(r map[string]any) bool {
			v, _ := r["publish_total"].(float64)
			return v > 0 && r["series"] != nil
		}},
		{`SELECT * FROM "sextant_meshcore"`, func(r map[string]any) bool {
			v, _ := r["push_seconds_count"].(float64)
			return v > 0 && r["pollers_waiting"] != nil && r["stale"] == 0.0
		}},
	}
	for _, c := range checks {
		testenv.Eventually(t, 30*time.Second, func() error {
			rows := influxQL(t, influx, c.query)
			for _, r := range rows {
				if c.check(r) {
					return nil
				}
			}
			return fmt.Errorf("%s: no row as documented among %d: %v", c.query, len(rows), first(rows))
		})
	}

	t.Run("dashboards", func(t *testing.T) { runDashboards(t, influx) })

	// influxd away: ingest answers as before, the drop counter rises.
	influx.Stop()
	for i := 0; i < 40; i++ {
		if s := report(); s != 202 {
			t.Fatalf("ingest with influxd stopped: %d", s)
		}
	}
	// Points that cannot reach InfluxDB are counted: dropped (the queue was
	// full, or InfluxDB failed a batch three times) or failed writes.
	testenv.Eventually(t, 30*time.Second, func() error {
		dropped := testenv.Metric(t, mx.Addr(), "sextant_mixer_tsdb_dropped_total")
		failed := testenv.Metric(t, mx.Addr(), "sextant_mixer_tsdb_write_errors_total")
		if dropped+failed == 0 {
			return fmt.Errorf("nothing counted with influxd stopped")
		}
		t.Logf("influxd stopped: %v points dropped, %v writes failed", dropped, failed)
		return nil
	})
	// Back: writes resume.
	if err := influx.Restart(); err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	testenv.Eventually(t, 60*time.Second, func() error {
		report()
		rows := influxQL(t, influx, fmt.Sprintf(`SELECT count("requests") FROM "server" WHERE time > %d`, since.UnixNano()))
		if len(rows) == 0 || rows[0]["count"] == 0.0 {
			return fmt.Errorf("no writes since influxd returned")
		}
		return nil
	})
}

func first(rows []map[string]any) any {
	if len(rows) == 0 {
		return nil
	}
	return rows[0]
}

// grafana variables in the dashboards' Flux, replaced as Grafana would.
var grafanaVars = strings.NewReplacer(
	"v.timeRangeStart", "-1h", "v.timeRangeStop", "now()", "v.windowPeriod", "1s",
	"${service}", "comment-svc", "$service", "comment-svc")

// runDashboards runs every panel's query of deploy/dashboards against influxd.
func runDashboards(t *testing.T, influx *influxdev.Server) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "dashboards", "*.json"))
	if len(files) == 0 {
		t.Fatal("no dashboards in deploy/dashboards")
	}
	client := influxdb2.NewClient(influx.URL(), ":")
	defer client.Close()
	q := client.QueryAPI("")
	panels := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Title  string `json:"title"`
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Query string `json:"query"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				panels++
				flux := grafanaVars.Replace(tg.Query)
				if regexp.MustCompile(`\$\{?\w+`).MatchString(flux) {
					t.Fatalf("%s / %s: a variable the test does not know: %s", d.Title, p.Title, flux)
				}
				testenv.Eventually(t, 30*time.Second, func() error {
					res, err := q.Query(context.Background(), flux)
					if err != nil {
						return fmt.Errorf("%s / %s: %v", d.Title, p.Title, err)
					}
					n := 0
					for res.Next() {
						n++
					}
					if res.Err() != nil {
						return fmt.Errorf("%s / %s: %v", d.Title, p.Title, res.Err())
					}
					if n == 0 {
						return fmt.Errorf("%s / %s: no series", d.Title, p.Title)
					}
					return nil
				})
			}
		}
	}
	t.Logf("%d panel queries returned series", panels)
}
