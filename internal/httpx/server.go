// Package httpx is what every Sextant HTTP port shares: a Hertz server that is
// a lifecycle component, JSON errors, /healthz, /readyz and /metrics.
package httpx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/middlewares/server/recovery"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/adaptor"
	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/lifecycle"
	"github.com/sextant-mesh/sextant/internal/logx"
)

// Server is a Hertz server bound to its listener before it starts, so that
// its address is known (and a port of 0 works) before the first request. It
// is a lifecycle.Starter: Start returns Hertz's start error, Run serves until
// its context is cancelled.
type Server struct {
	*server.Hertz
	ln net.Listener

	mu      sync.Mutex
	started bool
	done    chan struct{} // closed when Hertz's Run returned
	runErr  error         // what it returned, read after done
	stopped bool
	stopErr error
}

var _ lifecycle.Starter = (*Server)(nil)

// Listen binds addr and prepares a Hertz server on it; register routes, then Start.
func Listen(addr string, opts ...config.Option) (*Server, error) {
	logx.QuietFrameworks()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	opts = append([]config.Option{
		server.WithListener(ln),
		server.WithDisablePrintRoute(true),
		server.WithExitWaitTime(5 * time.Second),
	}, opts...)
	h := server.New(opts...)
	h.Use(recovery.Recovery())
	return &Server{Hertz: h, ln: ln, done: make(chan struct{})}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Start serves in the background and returns once the server runs, or with
// the error that kept Hertz from running (an OnRun hook, its protocol
// servers, a panic of its transport). Only the first call starts.
func (s *Server) Start() error {
	s.mu.Lock()
	switch {
	case s.stopped:
		s.mu.Unlock()
		return fmt.Errorf("http server on %s: stopped", s.Addr())
	case s.started:
		s.mu.Unlock()
		return s.startErr()
	}
	s.started = true
	s.mu.Unlock()
	go func() {
		defer close(s.done)
		s.runErr = s.run()
	}()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for !s.IsRunning() {
		select {
		case <-s.done:
			return s.startErr()
		case <-t.C:
		}
	}
	return nil
}

// run is Hertz's Run, with a panic of its transport (netpoll panics when its
// event loop cannot serve the listener) turned into an error.
func (s *Server) run() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("hertz panicked: %v", r)
		}
	}()
	return s.Hertz.Run()
}

// startErr is the error of a server that is not serving: the one its Run
// ended with, if it ended.
func (s *Server) startErr() error {
	select {
	case <-s.done:
		if s.runErr != nil {
			return fmt.Errorf("http server on %s: %w", s.Addr(), s.runErr)
		}
		return fmt.Errorf("http server on %s: stopped", s.Addr())
	default:
		return nil
	}
}

// Run starts the server unless it runs, serves until ctx is cancelled, then
// stops it within lifecycle.StopContext(ctx). It returns an error when the
// server cannot start or stops by itself.
func (s *Server) Run(ctx context.Context) error {
	return lifecycle.Serve(ctx, s.Start, s.done, s.startErr, s.Stop)
}

// Stop finishes the requests in hand (for at most ctx and the exit wait
// time), closes the server and waits for it; a server never started only
// closes its listener. Once stopped, it returns the same error again.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return s.stopErr
	}
	s.stopped = true
	if !s.started {
		s.stopErr = ignoreClosed(s.ln.Close())
		return s.stopErr
	}
	if !s.IsRunning() {
		// Hertz's Run failed, or is still starting; either way it ends once
		// its listener is closed.
		s.stopErr = ignoreClosed(s.ln.Close())
	} else {
		s.stopErr = s.Shutdown(ctx)
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		s.stopErr = errors.Join(s.stopErr, fmt.Errorf("http server on %s: not stopped: %w", s.Addr(), context.Cause(ctx)))
	}
	return s.stopErr
}

func ignoreClosed(err error) error {
	if IsClosed(err) {
		return nil
	}
	return err
}

// ErrorBody is the JSON error shape of every Sextant API.
type ErrorBody struct {
	Error *api.FieldError `json:"error"`
}

// WriteError answers with status and {"error": {"code", "message", "field"}}.
func WriteError(c *app.RequestContext, status int, fe *api.FieldError) {
	c.JSON(status, ErrorBody{Error: fe})
}

// Readiness reports why a service is not ready; nil or empty means ready.
type Readiness func() []string

// Stale reports what a ready service serves from its last state (say, etcd is
// away and it answers from memory); nil or empty means its state is live. A
// stale replica stays in its Service: taking it out would leave the data
// planes nothing, where the last state is what they need.
type Stale func() []string

// HealthRoutes adds /healthz (the process serves) and /readyz (the service can
// do its job; 503 with the reasons when it cannot).
func HealthRoutes(s *Server, ready Readiness) { HealthRoutesStale(s, ready, nil) }

// HealthRoutesStale is HealthRoutes for a service that may serve its last
// state: /readyz answers 503 with the reasons while it is not ready, else 200,
// with "stale": true and the detail while stale (may be nil) says so.
func HealthRoutesStale(s *Server, ready Readiness, stale Stale) {
	HealthRoutesDetail(s, ready, stale, nil)
}

// HealthRoutesDetail is HealthRoutesStale with more fields in every /readyz
// answer (extra may be nil, or return nil): what the service reports
// without it changing readiness (mesh-core's peers).
func HealthRoutesDetail(s *Server, ready Readiness, stale Stale, extra func() map[string]any) {
	s.GET("/healthz", func(_ context.Context, c *app.RequestContext) {
		c.JSON(consts.StatusOK, map[string]string{"status": "ok"})
	})
	s.GET("/readyz", func(_ context.Context, c *app.RequestContext) {
		answer := map[string]any{}
		if extra != nil {
			for k, v := range extra() {
				answer[k] = v
			}
		}
		status := consts.StatusOK
		if reasons := ready(); len(reasons) > 0 {
			status, answer["status"], answer["reasons"] = consts.StatusServiceUnavailable, "degraded", reasons
		} else {
			answer["status"] = "ready"
			if stale != nil {
				if detail := stale(); len(detail) > 0 {
					answer["stale"], answer["detail"] = true, detail
				}
			}
		}
		c.JSON(status, answer)
	})
}

// NewRegistry is a service's Prometheus registry, with the Go runtime and
// process collectors every /metrics page carries.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsRoute adds /metrics in the Prometheus text format.
func MetricsRoute(s *Server, reg *prometheus.Registry) {
	s.GET("/metrics", adaptor.HertzHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
}

// IsClosed tells whether err only says the server was already stopped.
func IsClosed(err error) bool { return err == nil || errors.Is(err, net.ErrClosed) }
