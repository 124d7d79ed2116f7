// Package kitexx holds what Sextant's Kitex servers share: a listener bound
// before start, and a lifecycle owned by the service rather than by Kitex's
// own signal handling.
package kitexx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"

	"github.com/sextant-mesh/sextant/internal/lifecycle"
	"github.com/sextant-mesh/sextant/internal/logx"
)

// Listen binds addr for a Kitex server.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// ServerOptions are the options every Sextant Kitex server starts with.
func ServerOptions(service string, ln net.Listener) []server.Option {
	logx.QuietFrameworks()
	return []server.Option{
		server.WithListener(ln),
		server.WithServerBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: service}),
		server.WithExitWaitTime(5 * time.Second),
		// The service stops its server itself, after deregistering; Kitex must
		// not stop it first on SIGTERM.
		server.WithExitSignal(func() <-chan error { return make(chan error) }),
	}
}

// Serve runs srv in the background; the returned channel yields Run's error.
// A start error comes only on that channel: services use Server, whose Start
// returns it.
func Serve(srv server.Server) <-chan error {
	done := make(chan error, 1)
	go func() { done <- srv.Run() }()
	return done
}

// Server is a Kitex server on a listener bound before start, started and
// stopped by its service: a lifecycle.Starter whose Start returns Kitex's
// start error.
type Server struct {
	srv  server.Server
	ln   net.Listener
	addr string

	serving     chan struct{} // closed when Kitex serves
	servingOnce sync.Once
	done        chan struct{} // closed when Kitex's Run returned
	runErr      error         // what it returned, read after done

	mu      sync.Mutex
	started bool
	stopped bool
	stopErr error
}

var _ lifecycle.Starter = (*Server)(nil)

// NewServer builds a Kitex server for service on ln: build is the generated
// NewServer bound to its handler, called with ServerOptions, then opts:
//
//	kitexx.NewServer("mesh-core", ln, func(opts ...server.Option) server.Server {
//		return meshcoresvc.NewServer(handler, opts...)
//	})
func NewServer(service string, ln net.Listener, build func(...server.Option) server.Server, opts ...server.Option) *Server {
	s := &Server{ln: ln, addr: ln.Addr().String(), serving: make(chan struct{}), done: make(chan struct{})}
	opts = append(ServerOptions(service, ln), opts...)
	// Kitex asks for its exit signal once it has built its server and handed
	// the listener to its transport, the moment it serves. The signal never
	// fires: Stop stops the server.
	opts = append(opts, server.WithExitSignal(func() <-chan error {
		s.servingOnce.Do(func() { close(s.serving) })
		return nil
	}))
	s.srv = build(opts...)
	return s
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.addr }

// Start serves in the background and returns once Kitex serves, or with the
// error that kept it from serving (a handler missing, its transport failing
// to start). Only the first call starts.
func (s *Server) Start() error {
	s.mu.Lock()
	switch {
	case s.stopped:
		s.mu.Unlock()
		return fmt.Errorf("kitex server on %s: stopped", s.addr)
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
	select {
	case <-s.serving:
		return nil
	case <-s.done:
		return s.startErr()
	}
}

// run is Kitex's Run, with a panic turned into an error.
func (s *Server) run() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kitex panicked: %v", r)
		}
	}()
	return s.srv.Run()
}

// startErr is the error of a server whose Run ended, or nil while it runs.
func (s *Server) startErr() error {
	select {
	case <-s.done:
		if s.runErr != nil {
			return fmt.Errorf("kitex server on %s: %w", s.addr, s.runErr)
		}
		return fmt.Errorf("kitex server on %s: stopped", s.addr)
	default:
		return nil
	}
}

// Run starts the server unless it runs, serves until ctx is cancelled, then
// stops it. It returns an error when the server cannot start or stops by
// itself.
func (s *Server) Run(ctx context.Context) error {
	return lifecycle.Serve(ctx, s.Start, s.done, s.startErr, func(context.Context) error { return s.Stop() })
}

// Stop finishes the calls in hand (for at most the exit wait time), closes
// the server and waits for it; a server never started only closes its
// listener. Once stopped, it returns the same error again.
func (s *Server) Stop() error {
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
	// A server still starting is stopped once it serves: Kitex's Stop does
	// nothing before its Run has built the server.
	select {
	case <-s.done:
		// Kitex's Run failed: the error was Start's or Run's to return.
		s.stopErr = ignoreClosed(s.ln.Close())
	case <-s.serving:
		s.stopErr = s.srv.Stop()
		<-s.done
	}
	return s.stopErr
}

func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
