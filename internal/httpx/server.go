// Package httpx is what every Sextant HTTP port shares: a Hertz server with a
// start/stop lifecycle, JSON errors, /healthz, /readyz and /metrics.
package httpx

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	"github.com/sextant-mesh/sextant/internal/logx"
)

// Server is a Hertz server bound to its listener before it starts, so that
// its address is known (and a port of 0 works) before the first request.
type Server struct {
	*server.Hertz
	ln   net.Listener
	done chan error
}

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
	return &Server{Hertz: h, ln: ln, done: make(chan error, 1)}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Start serves in the background and returns once the server runs.
func (s *Server) Start() {
	go func() { s.done <- s.Run() }()
	for !s.IsRunning() {
		select {
		case err := <-s.done:
			s.done <- err
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// Stop finishes the requests in hand and closes the server.
func (s *Server) Stop(ctx context.Context) error {
	if !s.IsRunning() {
		return s.ln.Close()
	}
	return s.Shutdown(ctx)
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

// HealthRoutes adds /healthz (the process serves) and /readyz (the service can
// do its job; 503 with the reasons when it cannot).
func HealthRoutes(s *Server, ready Readiness) {
	s.GET("/healthz", func(_ context.Context, c *app.RequestContext) {
		c.JSON(consts.StatusOK, map[string]string{"status": "ok"})
	})
	s.GET("/readyz", func(_ context.Context, c *app.RequestContext) {
		if reasons := ready(); len(reasons) > 0 {
			c.JSON(consts.StatusServiceUnavailable, map[string]any{"status": "degraded", "reasons": reasons})
			return
		}
		c.JSON(consts.StatusOK, map[string]string{"status": "ready"})
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
