package devplane

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
)

// The loop of `sextant dev`, end to end over its real ports: instances
// register in mesh-core, data planes report telemetry to the mixer in which
// one instance is five times slower, and within seconds mesh-core's
// discovery answer gives that instance a much lower dynamic weight.
func TestDevLoopPublishesWeights(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	args := devArgs(t)
	var logs bytes.Buffer
	go func() { done <- runDev(ctx, args, &syncWriter{w: &logs}, func(a Addrs) { ready <- a }) }()
	var addrs Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("sextant dev exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("sextant dev not ready")
	}
	defer func() {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		cancel()
		<-done
	}()

	instances := []string{"10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"}
	slow := instances[2]
	comments := dataPlane(t, addrs, "comment-svc")
	for _, in := range instances {
		body, _ := json.Marshal(map[string]any{"service": "comment-svc", "instance": in, "ttl_s": 60})
		resp, err := comments.Post("http://"+addrs.MeshCore+"/v1/instances", "application/json", bytes.NewReader(body))
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("register %s: %v %v", in, resp, err)
		}
		resp.Body.Close()
	}
	testenv.WaitMetric(t, addrs.Mixer, "sextant_mixer_shards", 1)

	// Data planes report every 200 ms until the weights show the slow instance.
	defer reportEvery(t, addrs, instances, slow)()

	var last map[string]int32
	testenv.Eventually(t, 60*time.Second, func() error {
		resp, err := comments.Get("http://" + addrs.MeshCore + "/v1/discovery/comment-svc")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var a struct {
			Instances []struct {
				Instance string `json:"instance"`
				Weight   int32  `json:"weight"`
			} `json:"instances"`
			PolicyAgeMs int64 `json:"policy_age_ms"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			return err
		}
		last = map[string]int32{}
		for _, in := range a.Instances {
			last[in.Instance] = in.Weight
		}
		if a.PolicyAgeMs < 0 {
			return fmt.Errorf("no dynamic policy yet: %v", last)
		}
		if last[slow] == 0 || float64(last[slow]) > 0.5*float64(last[instances[0]]) {
			return fmt.Errorf("weights %v: the slow instance should be well below the others", last)
		}
		return nil
	})
	t.Logf("discovery weights: %v", last)

	// The weights came over the Kitex hops, which are mTLS: a plaintext
	// caller of PublishPolicy is refused.
	pub, err := meshcoresvc.NewClient("mesh-core", client.WithHostPorts(addrs.MeshCoreKitex), client.WithRPCTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.PublishPolicy(ctx, &meshcore.PublishPolicyRequest{Policy: &meshcore.Policy{Service: "comment-svc", Version: 1 << 40,
		Overload: &meshcore.Overload{State: "shedding", AdmitMinPriority: 127}}}); err == nil {
		t.Fatal("a plaintext PublishPolicy was accepted by sextant dev's mesh-core")
	}
}

// report posts one 200 ms window from a front service calling comment-svc,
// and each comment-svc instance's own report (one body for two services:
// an operator's credential); slow is five times slower.
// reportEvery has the data planes report every 200 ms until the returned
// function is called, which waits for the last report.
func reportEvery(t *testing.T, addrs Addrs, instances []string, slow string) (stop func()) {
	done, reporting := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(reporting)
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if err := report(operator(addrs), addrs.Mixer, instances, slow); err != nil {
				t.Errorf("report: %v", err)
				return
			}
		}
	}()
	return func() { close(done); <-reporting }
}

func report(operator *http.Client, mixer string, instances []string, slow string) error {
	now := time.Now().UnixMilli()
	var reports []map[string]any
	var calls []map[string]any
	for _, in := range instances {
		cost := 1.0
		if in == slow {
			cost = 5
		}
		calls = append(calls, map[string]any{"callee_service": "comment-svc", "callee_instance": in,
			"requests": 100, "errors": 0, "timeouts": 0, "latency_ms_avg": 10 * cost, "latency_ms_p99": 30 * cost})
		reports = append(reports, map[string]any{
			"reporter": map[string]any{"service": "comment-svc", "instance": in}, "window_ms": 200, "timestamp_ms": now,
			"server": map[string]any{"requests": 100, "cpu_util": 0.1 * cost, "queue_time_ms_avg": 1, "queue_time_ms_p99": 2,
				"inflight": 1, "client_timeouts": 0, "requests_by_priority": map[string]int{"64": 100}},
		})
	}
	reports = append(reports, map[string]any{
		"reporter": map[string]any{"service": "front", "instance": "10.9.0.1:80"}, "window_ms": 200, "timestamp_ms": now, "calls": calls,
	})
	body, _ := json.Marshal(reports)
	resp, err := operator.Post("http://"+mixer+"/v1/telemetry", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
