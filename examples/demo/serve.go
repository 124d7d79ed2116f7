package demo

import (
	"context"
	"net"

	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	kserver "github.com/cloudwego/kitex/server"
)

// The examples start their servers with the public Hertz and Kitex APIs
// only, as a user's service would: bound before they serve (so a port of 0
// works and the address is known), stopped by the example rather than by
// the frameworks' own signal handling.

// HertzServer is a Hertz server on a bound listener.
type HertzServer struct {
	*server.Hertz
	ln   net.Listener
	done chan error
}

// ServeHertz lets routes register the handlers and serves on ln.
func ServeHertz(ln net.Listener, routes func(*server.Hertz), opts ...config.Option) *HertzServer {
	h := server.New(append([]config.Option{server.WithListener(ln), server.WithDisablePrintRoute(true)}, opts...)...)
	routes(h)
	s := &HertzServer{Hertz: h, ln: ln, done: make(chan error, 1)}
	go func() { s.done <- h.Run() }()
	return s
}

// Addr is where the server listens.
func (s *HertzServer) Addr() string { return s.ln.Addr().String() }

// Stop finishes the requests in hand and stops serving.
func (s *HertzServer) Stop(ctx context.Context) error {
	err := s.Shutdown(ctx)
	<-s.done
	return err
}

// KitexServer is a Kitex server on a bound listener.
type KitexServer struct {
	kserver.Server
	ln   net.Listener
	done chan error
}

// ServeKitex serves on ln the server newServer makes with the options
// given (comment.NewServer with its handler).
func ServeKitex(ln net.Listener, service string, newServer func(opts ...kserver.Option) kserver.Server, opts ...kserver.Option) *KitexServer {
	srv := newServer(append([]kserver.Option{
		kserver.WithListener(ln),
		kserver.WithServerBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: service}),
		// The example stops its server, after deregistering the instance.
		kserver.WithExitSignal(func() <-chan error { return make(chan error) }),
	}, opts...)...)
	s := &KitexServer{Server: srv, ln: ln, done: make(chan error, 1)}
	go func() { s.done <- srv.Run() }()
	return s
}

// Addr is where the server listens.
func (s *KitexServer) Addr() string { return s.ln.Addr().String() }

// Stop stops serving and waits for the server to end.
func (s *KitexServer) Stop() error {
	err := s.Server.Stop()
	<-s.done
	return err
}
