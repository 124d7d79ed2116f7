package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
)

// `make demo` as a user runs it: the control plane comes up, the demo's
// front answers with an instance of the comment service, the demo prints its
// table, and Ctrl-C stops everything cleanly.
func TestDemoDevRuns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	front := testenv.FreeAddr(t)
	args := []string{
		"-data-dir", t.TempDir(),
		"-etcd-client-addr", testenv.FreeAddr(t), "-etcd-peer-addr", testenv.FreeAddr(t),
		"-mixer-addr", "127.0.0.1:0", "-calculator-addr", "127.0.0.1:0", "-calculator-admin-addr", "127.0.0.1:0",
		"-mesh-core-addr", "127.0.0.1:0", "-mesh-core-kitex-addr", "127.0.0.1:0", "-mesh-core-poll-addr", "127.0.0.1:0", "-mesh-core-xds-addr", "127.0.0.1:0", "-config-center-addr", "127.0.0.1:0", "-influxd", "",
		"-demo-addr", front,
	}
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, &stdout, &stderr) }()

	testenv.Eventually(t, 60*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("demo-dev exited: %v\n%s", err, stderr.String())
		default:
		}
		resp, err := testenv.HTTP.Get("http://" + front + "/comment")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var answer struct {
			Instance string `json:"instance"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &answer) != nil || answer.Instance == "" {
			return fmt.Errorf("GET /comment: %d %s", resp.StatusCode, body)
		}
		return nil
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		if out := stdout.String(); !strings.Contains(out, "demo: 5 instances") || !strings.Contains(out, "weight") {
			return fmt.Errorf("the demo printed %q", out)
		}
		return nil
	})

	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo-dev stopped with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("demo-dev did not stop within 60s of Ctrl-C")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
