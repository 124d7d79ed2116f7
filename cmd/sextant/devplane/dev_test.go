package devplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
)

// `sextant dev` as a user runs it: a valid report posted with curl's
// equivalent is accepted, and the calculator's /debug/windows shows it.
// Then the context ends (Ctrl-C) and everything stops cleanly.
func TestDevRunsTheLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	var logs bytes.Buffer
	args := devArgs(t)
	go func() { done <- runDev(ctx, args, &syncWriter{w: &logs}, func(a Addrs) { ready <- a }) }()
	var addrs Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("sextant dev exited: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatal("sextant dev not ready after 60s")
	}

	// The shard registers in etcd a moment after start.
	testenv.WaitMetric(t, addrs.Mixer, "sextant_mixer_shards", 1)
	report := fmt.Sprintf(`{"reporter":{"service":"feed-api","instance":"10.0.0.1:8080"},"window_ms":1000,"timestamp_ms":%d,
		"server":{"requests":5400,"cpu_util":0.63,"queue_time_ms_avg":4.1,"queue_time_ms_p99":12.5,"inflight":12,"client_timeouts":2},
		"calls":[{"callee_service":"comment-svc","callee_instance":"10.0.0.9:9000","requests":1200,"errors":3,"timeouts":1,"latency_ms_avg":8.2,"latency_ms_p99":31.0}]}`,
		time.Now().UnixMilli())
	resp, err := dataPlane(t, addrs, "feed-api").Post("http://"+addrs.Mixer+"/v1/telemetry", "application/json", strings.NewReader(report))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || string(body) != `{"accepted":1}` {
		t.Fatalf("POST /v1/telemetry: %d %s", resp.StatusCode, body)
	}

	testenv.Eventually(t, 20*time.Second, func() error {
		if err := shown(addrs, "feed-api", 5400); err != nil {
			return err
		}
		return shown(addrs, "comment-svc", 1200)
	})

	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sextant dev stopped with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("sextant dev did not stop within 60s of Ctrl-C")
	}
}

// shown checks that the calculator's /debug/windows holds requests for svc.
func shown(addrs Addrs, svc string, requests int64) error {
	resp, err := operator(addrs).Get("http://" + addrs.CalculatorAdmin + "/debug/windows?service=" + svc)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/debug/windows?service=%s: status %d", svc, resp.StatusCode)
	}
	var view struct {
		Owned     bool `json:"owned"`
		Instances []struct {
			Totals struct {
				ServerRequests int64 `json:"server_requests"`
				EdgeRequests   int64 `json:"edge_requests"`
			} `json:"totals"`
		} `json:"instances"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		return err
	}
	if !view.Owned || len(view.Instances) != 1 ||
		view.Instances[0].Totals.ServerRequests+view.Instances[0].Totals.EdgeRequests != requests {
		return fmt.Errorf("%s: %+v, want %d requests", svc, view, requests)
	}
	return nil
}

// devArgs are the flags of a control plane on free ports, without influxd.
func devArgs(t *testing.T) []string {
	return []string{
		"-data-dir", t.TempDir(),
		"-etcd-client-addr", testenv.FreeAddr(t), "-etcd-peer-addr", testenv.FreeAddr(t),
		"-mixer-addr", "127.0.0.1:0", "-calculator-addr", "127.0.0.1:0", "-calculator-admin-addr", "127.0.0.1:0",
		"-mesh-core-addr", "127.0.0.1:0", "-mesh-core-kitex-addr", "127.0.0.1:0", "-mesh-core-poll-addr", "127.0.0.1:0", "-mesh-core-xds-addr", "127.0.0.1:0", "-config-center-addr", "127.0.0.1:0", "-influxd", "",
	}
}

// runDev runs the control plane as `sextant dev` with args does, logging to
// stderr, and calls ready once everything runs.
func runDev(ctx context.Context, args []string, stderr io.Writer, ready func(Addrs)) error {
	cfg, err := Parse("sextant dev", args, stderr, nil)
	if err != nil {
		return err
	}
	cfg.Ready = ready
	return cfg.Run(ctx)
}

// What runs beside the control plane (the demo) gets its addresses; when it
// fails, everything stops and Run returns its error rather than running on
// without it.
func TestBesideFailureStopsTheControlPlane(t *testing.T) {
	var logs bytes.Buffer
	cfg, err := Parse("demo-dev", devArgs(t), &syncWriter{w: &logs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	failed := errors.New("the demo failed")
	var got Addrs
	cfg.Beside = func(ctx context.Context, a Addrs) error {
		got = a
		return failed
	}
	done := make(chan error, 1)
	go func() { done <- cfg.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, failed) {
			t.Fatalf("Run returned %v, want the error of Beside\n%s", err, logs.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("Run did not stop within 90s of Beside failing")
	}
	if got.MeshCore == "" || got.Mixer == "" || got.Etcd == "" {
		t.Fatalf("Beside got %+v", got)
	}
}

// syncWriter lets several services log into one buffer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
