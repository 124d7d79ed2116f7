package httpx_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app/server"

	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/lifecycle"
)

func listen(t *testing.T) *httpx.Server {
	t.Helper()
	srv, err := httpx.Listen("127.0.0.1:0", server.WithExitWaitTime(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// A Hertz server whose Run fails (here an OnRun hook; a protocol server or
// its transport can fail the same way) returns the error from Start: before,
// Start returned as if it served, and the service logged "started".
func TestStartReturnsTheStartError(t *testing.T) {
	boom := errors.New("no TLS certificate")
	srv := listen(t)
	srv.OnRun = append(srv.OnRun, func(context.Context) error { return boom })
	err := srv.Start()
	if !errors.Is(err, boom) {
		t.Fatalf("Start: %v, want %v", err, boom)
	}
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// The port is free again.
	ln, err := net.Listen("tcp", srv.Addr())
	if err != nil {
		t.Fatalf("port still held after Stop: %v", err)
	}
	ln.Close()
}

// In a group, the failed start is the group's start error, and what started
// before is stopped.
func TestGroupStartReturnsTheHertzStartError(t *testing.T) {
	boom := errors.New("hook failed")
	before := listen(t)
	failing := listen(t)
	failing.OnRun = append(failing.OnRun, func(context.Context) error { return boom })
	g := lifecycle.NewGroup()
	g.Add("before", before)
	g.Add("failing", failing)
	if err := g.Start(); !errors.Is(err, boom) {
		t.Fatalf("Start: %v, want %v", err, boom)
	}
	if before.IsRunning() {
		t.Fatal("the server started before still runs")
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	srv := listen(t)
	httpx.HealthRoutes(srv, func() []string { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if resp, err = http.Get("http://" + srv.Addr() + "/healthz"); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return once cancelled")
	}
	if _, err := http.Get("http://" + srv.Addr() + "/healthz"); err == nil {
		t.Fatal("still serving after Run returned")
	}
}

func TestStopBeforeStartClosesTheListener(t *testing.T) {
	srv := listen(t)
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
	ln, err := net.Listen("tcp", srv.Addr())
	if err != nil {
		t.Fatalf("port still held: %v", err)
	}
	ln.Close()
}
