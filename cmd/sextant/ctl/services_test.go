package ctl_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/sextant-mesh/sextant/cmd/sextant/ctl"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// services, describe, status and top over a calculator that has weighed
// three services from the telemetry a caller sent through the mixer.
func TestServicesDescribeStatusTop(t *testing.T) {
	s := startStack(t)
	calculatortest.Start(t, s.etcd, s.prefix, "calc-1", nil)
	mx := mixertest.Start(t, s.etcd, s.prefix, nil)
	token := testenv.ServiceToken(t, s.etcd, s.prefix, "front")
	report := func() {
		var calls []string
		for i := range 3 {
			for j := range 2 {
				errs := 0
				if i == 2 && j == 1 {
					errs = 60
				}
				calls = append(calls, fmt.Sprintf(`{"callee_service":"svc-%d","callee_instance":"10.0.%d.%d:80","requests":200,"errors":%d,"timeouts":0,"latency_ms_avg":%d,"latency_ms_p99":%d}`,
					i, i, j, errs, 5+i, 9+i))
			}
		}
		body := fmt.Sprintf(`{"reporter":{"service":"front","instance":"10.1.0.1:80"},"window_ms":1000,"timestamp_ms":%d,"calls":[%s]}`,
			time.Now().UnixMilli(), strings.Join(calls, ","))
		req, _ := http.NewRequest("POST", "http://"+mx.Addr()+"/v1/telemetry", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		report()
		// By trouble: svc-2, whose calls fail, first, once a round saw them.
		out, _ := must(t, "services")
		if !strings.Contains(out, "3 of 3 services") || strings.Index(out, "svc-2") > strings.Index(out, "svc-0") {
			return errors.New(out)
		}
		return nil
	})
	out, _ := must(t, "services", "--sort", "name")
	contains(t, "services", out, "SERVICE", "WEIGHTS", "svc-0", "svc-1", "svc-2")
	if i0, i2 := strings.Index(out, "svc-0"), strings.Index(out, "svc-2"); i0 > i2 {
		t.Errorf("--sort name:\n%s", out)
	}
	out, _ = must(t, "services", "--search", "svc-1", "-o", "json")
	contains(t, "services -o json", out, `"total": 1`, `"service": "svc-1"`)

	out, _ = must(t, "describe", "service", "svc-2")
	contains(t, "describe", out, "Service:   svc-2", "Instances:", "10.0.2.0:80", "10.0.2.1:80", "WEIGHT", "Configs:", "Data planes (config):")
	out, _ = must(t, "describe", "service", "nothing-here")
	contains(t, "describe of a service without telemetry", out, "Weights:   none")

	// A data plane of svc-1 polls discovery naming itself, watches its
	// configs and reports applying them.
	mc := coretest.Start(t, s.etcd, s.prefix, nil)
	t.Setenv("SEXTANT_MESH_CORE", mc.Addr())
	poll, _ := http.NewRequest("GET", "http://"+mc.Addr()+"/v1/discovery/svc-1?wait=0s&client=10.0.1.0:80", nil)
	poll.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(poll); err != nil || resp.StatusCode != 200 {
		t.Fatalf("discovery poll: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if code, _, body := s.api(t, "PUT", "/v1/configs/limit/svc-1", `{"qps_limit": 10}`); code != 200 {
		t.Fatalf("config: %d %s", code, body)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		_, h, _ := s.api(t, "GET", "/v1/watch?service=svc-1&instance=10.0.1.0:80&wait=0s", "")
		s.api(t, "GET", "/v1/watch?service=svc-1&instance=10.0.1.0:80&wait=0s&version="+h.Get("ETag")[1:len(h.Get("ETag"))-1]+
			"&applied="+h.Get("ETag")[1:len(h.Get("ETag"))-1], "")
		out, _ := must(t, "status", "--service", "svc-1")
		if strings.Count(out, "SYNCED") != 2 || !strings.Contains(out, "limit/svc-1") || !strings.Contains(out, "DISCOVERY") {
			return errors.New(out) // discovery and config, both synced
		}
		return nil
	})

	// top, through a pseudo-terminal, as an operator sees it.
	cmd := exec.Command(os.Args[0], "-test.run=^TestTopInATerminal$")
	cmd.Env = append(os.Environ(), "SEXTANT_TOP_ARGS=-n 2 --interval 200ms")
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var screen bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := tty.Read(buf)
		screen.Write(buf[:n])
		if err != nil { // EIO once the process is gone
			break
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("top: %v\n%s", err, screen.String())
	}
	first := screen.String()
	if i := strings.Index(first[1:], "\x1b[H\x1b[2J"); i > 0 {
		first = first[:i+1]
	}
	contains(t, "top's first screen", first, "\x1b[H\x1b[2J", "sextant top", "SERVICE", "WEIGHTS", "svc-0", "svc-1", "svc-2")
	if n := strings.Count(screen.String(), "sextant top"); n != 2 {
		t.Errorf("top drew %d screens, want 2", n)
	}
}

// TestTopInATerminal is the process the test above starts on a
// pseudo-terminal: sextant top, with the environment of that test.
func TestTopInATerminal(t *testing.T) {
	args := os.Getenv("SEXTANT_TOP_ARGS")
	if args == "" {
		t.Skip("run by TestServicesDescribeStatusTop")
	}
	if _, err := ctl.Run("top", strings.Fields(args), os.Stdout, os.Stderr); err != nil {
		t.Fatal(err)
	}
}
