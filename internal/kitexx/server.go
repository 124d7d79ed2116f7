// Package kitexx holds what Sextant's Kitex servers share: a listener bound
// before start, and a lifecycle owned by the service rather than by Kitex's
// own signal handling.
package kitexx

import (
	"fmt"
	"net"
	"time"

	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"

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
func Serve(srv server.Server) <-chan error {
	done := make(chan error, 1)
	go func() { done <- srv.Run() }()
	return done
}
