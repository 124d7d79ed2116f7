package kitexx_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/server"

	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/lifecycle"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
)

type ingester struct{}

func (*ingester) Ingest(context.Context, *aggregator.ReportBatch) (*aggregator.IngestResponse, error) {
	return &aggregator.IngestResponse{ServersAccepted: 1}, nil
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := kitexx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func newServer(ln net.Listener) *kitexx.Server {
	return kitexx.NewServer("test", ln, func(opts ...server.Option) server.Server {
		return aggregatorsvc.NewServer(&ingester{}, opts...)
	}, server.WithExitWaitTime(100*time.Millisecond))
}

// A Kitex server whose Run fails after its port is bound (here it has no
// handler) returns the error from Start: kitexx.Serve left it in a channel
// read only at Stop, after the service had logged "started".
func TestStartReturnsTheStartError(t *testing.T) {
	ln := listen(t)
	srv := kitexx.NewServer("test", ln, server.NewServer) // no service registered
	err := srv.Start()
	if err == nil || !strings.Contains(err.Error(), "no service") {
		t.Fatalf("Start: %v, want Kitex's error", err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// The port is free again.
	again, err := net.Listen("tcp", srv.Addr())
	if err != nil {
		t.Fatalf("port still held after Stop: %v", err)
	}
	again.Close()
}

// In a group, the failed start is the group's start error, and what started
// before is stopped.
func TestGroupStartReturnsTheKitexStartError(t *testing.T) {
	before := newServer(listen(t))
	g := lifecycle.NewGroup()
	g.Add("before", before)
	g.Add("failing", kitexx.NewServer("test", listen(t), server.NewServer))
	if err := g.Start(); err == nil || !strings.HasPrefix(err.Error(), "failing: ") {
		t.Fatalf("Start: %v, want the failing server's error", err)
	}
	if _, err := net.DialTimeout("tcp", before.Addr(), time.Second); err == nil {
		t.Fatal("the server started before still listens")
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	srv := newServer(listen(t))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	kc, err := aggregatorsvc.NewClient("test", client.WithHostPorts(srv.Addr()), client.WithRPCTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := kc.Ingest(context.Background(), &aggregator.ReportBatch{})
	if err != nil || resp.ServersAccepted != 1 {
		t.Fatalf("Ingest: %v, %v", resp, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return once cancelled")
	}
	if _, err := kc.Ingest(context.Background(), &aggregator.ReportBatch{}); err == nil {
		t.Fatal("still serving after Run returned")
	}
	if err := srv.Start(); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
}

func TestStopBeforeStartClosesTheListener(t *testing.T) {
	srv := newServer(listen(t))
	if err := errors.Join(srv.Stop(), srv.Stop()); err != nil {
		t.Fatal(err)
	}
	again, err := net.Listen("tcp", srv.Addr())
	if err != nil {
		t.Fatalf("port still held: %v", err)
	}
	again.Close()
}
