package logx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo/comment"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type echo struct{}

func (*echo) Get(context.Context, *demo.GetRequest) (*demo.GetResponse, error) {
	return &demo.GetResponse{}, nil
}

// sendGarbage writes bytes that are no request of any protocol to addr and
// waits for the server to answer or hang up.
func sendGarbage(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("\x00\x00\x00\x10not a request at all\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Read(make([]byte, 1024))
}

// Hertz's and Kitex's own log lines come out through slog, as JSON lines
// of the service's log with a "framework" attribute, not as plain text.
func TestFrameworkLogsAreJSON(t *testing.T) {
	var buf lockedBuffer
	logx.RouteFrameworks(slog.New(slog.NewJSONHandler(&buf, nil)).With("service", "logtest"))
	t.Cleanup(func() { logx.RouteFrameworks(nil) })

	h, err := httpx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	defer h.Stop(context.Background())
	ln, err := kitexx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := comment.NewServer(&echo{}, kitexx.ServerOptions("logtest", ln)...)
	done := kitexx.Serve(k)
	defer func() { _ = k.Stop(); <-done }()

	// A request neither can read: each framework logs it.
	sendGarbage(t, h.Addr())
	sendGarbage(t, ln.Addr().String())
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := map[string]bool{}
		var bad error
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if line == "" {
				continue
			}
			var rec struct{ Level, Msg, Service, Framework string }
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				bad = fmt.Errorf("not a JSON line: %q", line)
				break
			}
			if rec.Service != "logtest" || rec.Msg == "" || rec.Level == "" {
				bad = fmt.Errorf("a record without the service's attributes: %q", line)
				break
			}
			seen[rec.Framework] = true
		}
		if bad != nil {
			t.Fatal(bad)
		}
		if seen["hertz"] && seen["kitex"] {
			t.Logf("%s", buf.String())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a log line from each framework, got %v:\n%s", seen, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
