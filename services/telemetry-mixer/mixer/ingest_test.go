package mixer_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

func decodeError(t *testing.T, a answer) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(a.body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("answer %s is not a JSON error (%v)", a, err)
	}
	return e
}

// Every class of bad input, over HTTP to a running mixer with a real shard:
// the right status, a JSON error naming the field, and nothing forwarded.
func TestBadInputIsRefusedAndNothingForwarded(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	calc := calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	mx := mixertest.Start(t, etcd, prefix, func(c *mixer.Config) {
		c.MaxBodyBytes = 64 << 10
		c.Limits.MaxCallsPerReport = 20
	})
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 1)

	good := func() map[string]any {
		var m map[string]any
		_ = json.Unmarshal(mustJSON(t, reports(1, 3, 1)[0]), &m)
		return m
	}
	with := func(edit func(m map[string]any)) []byte {
		m := good()
		edit(m)
		return mustJSON(t, m)
	}
	call0 := func(m map[string]any) map[string]any { return m["calls"].([]any)[0].(map[string]any) }
	// A valid report first, then a bad one: the whole request is refused.
	mixed := mustJSON(t, []any{good(), func() map[string]any {
		m := good()
		call0(m)["requests"] = -1
		return m
	}()})
	manyCalls := with(func(m map[string]any) {
		var cs []any
		for i := 0; i < 21; i++ {
			cs = append(cs, map[string]any{"callee_service": "s", "callee_instance": fmt.Sprint(i), "requests": 1})
		}
		m["calls"] = cs
	})
	cases := []struct {
		name   string
		body   []byte
		status int
		code   string
		field  string
	}{
		{"malformed json", []byte(`{"reporter":`), 400, "malformed_json", ""},
		{"wrong type", with(func(m map[string]any) { m["window_ms"] = "1s" }), 400, "invalid_type", "window_ms"},
		{"NaN as string", with(func(m map[string]any) { m["server"].(map[string]any)["cpu_util"] = "NaN" }), 400, "invalid_type", "server.cpu_util"},
		{"huge number", bytes.Replace(with(func(m map[string]any) { call0(m)["latency_ms_avg"] = 123.5 }), []byte("123.5"), []byte("1e999"), 1), 400, "out_of_range", "calls[0].latency_ms_avg"},
		{"negative count", with(func(m map[string]any) { call0(m)["errors"] = -2 }), 400, "out_of_range", "calls[0].errors"},
		{"missing reporter", with(func(m map[string]any) { delete(m, "reporter") }), 400, "missing_field", "reporter"},
		{"unknown field", with(func(m map[string]any) { m["colour"] = "blue" }), 400, "unknown_field", "colour"},
		{"cpu out of range", with(func(m map[string]any) { m["server"].(map[string]any)["cpu_util"] = 63 }), 400, "out_of_range", "server.cpu_util"},
		{"too many calls", manyCalls, 400, "too_many", "calls"},
		{"one bad report among good", mixed, 400, "out_of_range", "[1].calls[0].requests"},
		{"oversized body", append([]byte(`[`), bytes.Repeat([]byte(` `), 70<<10)...), 413, "body_too_large", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := post(t, mx.Addr(), tc.body)
			if a.status != tc.status {
				t.Fatalf("status %s, want %d", a, tc.status)
			}
			if e := decodeError(t, a); e.Error.Code != tc.code || e.Error.Field != tc.field {
				t.Fatalf("error %+v, want %s on %q", e.Error, tc.code, tc.field)
			}
		})
	}

	t.Run("oversized chunked body", func(t *testing.T) {
		// No Content-Length: the limit is found while reading. A raw
		// connection sends more than the limit, without finishing the body,
		// then reads the answer (an HTTP client would still be writing when
		// the server answers and closes).
		conn, err := net.Dial("tcp", mx.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		chunk := "[" + strings.Repeat(" ", 70<<10)
		fmt.Fprintf(conn, "POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+testenv.AdminToken+"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(chunk), chunk)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		a := answer{status: resp.StatusCode, header: resp.Header, body: body}
		if a.status != 413 || decodeError(t, a).Error.Code != "body_too_large" {
			t.Fatalf("chunked oversized body: %s", a)
		}
	})
	t.Run("wrong content type", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+mx.Addr()+"/v1/telemetry", bytes.NewReader(mustJSON(t, good())))
		req.Header.Set("Content-Type", "text/plain")
		if a := do(t, req); a.status != 415 || decodeError(t, a).Error.Field != "Content-Type" {
			t.Fatalf("text/plain body: %s", a)
		}
	})

	// Nothing of any refused request reached the shard or the queue.
	time.Sleep(200 * time.Millisecond) // several flush intervals
	for _, kind := range []string{"server", "edge", "denial"} {
		if n := testenv.Metric(t, mx.Addr(), fmt.Sprintf(`sextant_mixer_records_forwarded_total{kind=%q}`, kind)); n != 0 {
			t.Fatalf("%v %s records forwarded from refused requests", n, kind)
		}
	}
	var list struct {
		Services []calculator.ServiceSummary `json:"services"`
	}
	getJSON(t, "http://"+calc.AdminAddr()+"/debug/windows", &list)
	if len(list.Services) != 0 {
		t.Fatalf("the shard holds %v from refused requests", list.Services)
	}
	if n := testenv.Metric(t, mx.Addr(), `sextant_mixer_reports_rejected_total{reason="out_of_range"}`); n != 4 {
		t.Fatalf("rejected out_of_range = %v, want 4", n)
	}
	if n := testenv.Metric(t, mx.Addr(), "sextant_mixer_reports_accepted_total"); n != 0 {
		t.Fatalf("accepted = %v", n)
	}

	// The mixer still serves: a valid report goes through.
	tr := newTraffic()
	postAll(t, mx.Addr(), reports(1, 3, 1), 1, tr)
	testenv.Eventually(t, 10*time.Second, func() error { return matches([]*calculator.Calculator{calc}, tr) })
}

// Huge cardinality: reports naming more distinct instances than a shard keeps
// are accepted by the mixer (each request is within limits), the shard keeps
// at most --max-series, and the overflow is counted on both sides.
func TestCardinalityIsBounded(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	calc := calculatortest.Start(t, etcd, prefix, "calc-1", func(c *calculator.Config) { c.MaxSeries = 500 })
	mx := mixertest.Start(t, etcd, prefix, nil)
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 1)

	rs := reports(20, 1, 1)
	for i := range rs {
		rs[i].Server = nil
		for c := 0; c < 99; c++ { // 100 distinct callee instances per report, 2000 in all
			rs[i].Calls = append(rs[i].Calls, rs[i].Calls[0])
			rs[i].Calls[len(rs[i].Calls)-1].CalleeInstance = fmt.Sprintf("10.9.%d.%d:1", i, c)
		}
	}
	postAll(t, mx.Addr(), rs, 5, newTraffic())
	testenv.WaitMetric(t, mx.Addr(), `sextant_mixer_records_forwarded_total{kind="edge"}`, 2000)
	testenv.WaitMetric(t, calc.AdminAddr(), "sextant_calculator_series", 500)
	refused := testenv.Metric(t, calc.AdminAddr(), `sextant_calculator_records_total{kind="edge",outcome="refused_series_limit"}`)
	if refused == 0 {
		t.Fatal("no record refused at the series limit")
	}
	if got := testenv.Metric(t, mx.Addr(), `sextant_mixer_records_dropped_total{reason="refused_by_calculator"}`); got != refused {
		t.Fatalf("mixer counts %v refused, shard %v", got, refused)
	}
}

// A stalled shard (it accepts connections and never answers): the queue fills
// to its bound, ingest answers 429 with Retry-After, memory stays bounded
// however much more is posted, and once a live shard takes over the queue
// drains and ingest accepts again.
func TestBackpressureWhenShardStalls(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	stalled := stallingShard(t)
	reg := registerShardAt(t, etcd, prefix, "calc-stalled", stalled)
	const capacity = 5000
	mx := mixertest.Start(t, etcd, prefix, func(c *mixer.Config) {
		c.Forward.QueueRecords = capacity
		c.Forward.RPCTimeout = time.Minute
	})
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 1)

	body := mustJSON(t, reports(10, 49, 1)) // 500 records per request
	accepted := 0
	var full answer
	for i := 0; i < 100; i++ {
		a := post(t, mx.Addr(), body)
		if a.status == http.StatusAccepted {
			accepted++
			continue
		}
		full = a
		break
	}
	if full.status != http.StatusTooManyRequests {
		t.Fatalf("after %d accepted requests: %s, want 429", accepted, full)
	}
	if full.header.Get("Retry-After") == "" || decodeError(t, full).Error.Code != "queue_full" {
		t.Fatalf("429 without Retry-After or queue_full code: %v %s", full.header, full.body)
	}
	if accepted*500 > capacity || accepted*500 < capacity-500 {
		t.Fatalf("accepted %d requests of 500 records with a queue of %d", accepted, capacity)
	}

	// Posting much more changes nothing: every request is refused, memory flat.
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for i := 0; i < 1000; i++ { // 500,000 records offered (100+ MiB if kept), 100x the queue
		if a := post(t, mx.Addr(), body); a.status != http.StatusTooManyRequests {
			t.Fatalf("request %d while stalled: %s", i, a)
		}
	}
	if q := testenv.Metric(t, mx.Addr(), "sextant_mixer_queue_records"); q > capacity {
		t.Fatalf("queue holds %v records, bound %d", q, capacity)
	}
	// The bound leaves room for the embedded etcd and Kitex in this process.
	if grown := int64(heap()) - int64(before); grown > 32<<20 {
		t.Fatalf("heap grew %d MiB while every request was refused", grown>>20)
	}
	if n := testenv.Metric(t, mx.Addr(), `sextant_mixer_reports_rejected_total{reason="queue_full"}`); n < 1000 {
		t.Fatalf("queue_full rejections = %v", n)
	}

	// Recovery: the stalled shard goes away, a live one registers.
	reg.Close()
	calc := calculatortest.Start(t, etcd, prefix, "calc-live", nil)
	stalled.Close()
	testenv.Eventually(t, 60*time.Second, func() error {
		if q := testenv.Metric(t, mx.Addr(), "sextant_mixer_queue_records"); q != 0 {
			return fmt.Errorf("%v records still queued", q)
		}
		return nil
	})
	if a := post(t, mx.Addr(), body); a.status != http.StatusAccepted {
		t.Fatalf("after recovery: %s", a)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		v, ok := calc.Windows("svc-0")
		if !ok || len(v.Instances) == 0 {
			return fmt.Errorf("nothing reached the live shard")
		}
		return nil
	})
}

// stallingShard accepts connections and never answers, like a wedged process.
func stallingShard(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}
