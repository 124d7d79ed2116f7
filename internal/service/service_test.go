package service

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/lifecycle"
	"github.com/sextant-mesh/sextant/internal/logx"
)

// groupService is a service made of a lifecycle group, as Sextant's are.
type groupService struct{ *lifecycle.Group }

func build(g *lifecycle.Group) func(*slog.Logger) (Service, error) {
	return func(*slog.Logger) (Service, error) { return groupService{g}, nil }
}

func TestRunStopsInOrderOnSIGTERM(t *testing.T) {
	var stopped []string
	g := lifecycle.NewGroup()
	for _, name := range []string{"first", "second"} {
		g.Add(name, lifecycle.OnStop(func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Errorf("%s stopped without the stop timeout", name)
			}
			stopped = append(stopped, name)
			return nil
		}))
	}
	// The signal comes once the service runs.
	g.Add("signal", starter(func() error { return syscall.Kill(syscall.Getpid(), syscall.SIGTERM) }))
	if err := run(logx.Discard(), build(g), time.Minute); err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(stopped) != 2 || stopped[0] != "second" || stopped[1] != "first" {
		t.Fatalf("stopped %v, want second, first", stopped)
	}
}

func TestRunStopsAServiceThatFails(t *testing.T) {
	boom := errors.New("kitex transport failed")
	closed := false
	g := lifecycle.NewGroup()
	g.Add("client", lifecycle.OnStop(func(context.Context) error { closed = true; return nil }))
	g.Add("server", lifecycle.Func(func(context.Context) error { return boom }))
	err := run(logx.Discard(), build(g), time.Minute)
	if !errors.Is(err, boom) {
		t.Fatalf("run: %v, want the failure", err)
	}
	if !closed {
		t.Fatal("the service was not stopped")
	}
}

func TestRunReturnsTheStartError(t *testing.T) {
	boom := errors.New("port taken")
	closed := false
	g := lifecycle.NewGroup()
	g.Add("client", lifecycle.OnStop(func(context.Context) error { closed = true; return nil }))
	g.Add("server", starter(func() error { return boom }))
	if err := run(logx.Discard(), build(g), time.Minute); !errors.Is(err, boom) {
		t.Fatalf("run: %v, want the start error", err)
	}
	if !closed {
		t.Fatal("what had started was not stopped")
	}
}

// starter is a lifecycle.Starter of its Start; its Run waits for ctx.
type starter func() error

func (f starter) Start() error { return f() }

func (f starter) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
