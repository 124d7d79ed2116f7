//go:build linux

package hertzsdk_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/cloudwego/hertz/pkg/network/standard"
	"github.com/cloudwego/hertz/pkg/protocol"

	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
)

// unaccepting is a loopback address whose listener never accepts and whose
// accept queue is full: Linux drops further SYNs, so a connect there times
// out (a real connect timeout, as to an overwhelmed host).
func unaccepting(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	// Fill the accept queue until a connect hangs.
	for i := 0; i < 16; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("connects to a listener that never accepts kept succeeding")
	return ""
}

// Every kind of timeout of a Hertz client call counts once, as a timeout
// and not as an error, on either network library: Hertz's own request and
// read timeouts (errors.ErrTimeout, not context.DeadlineExceeded) and a
// connect timeout. A 500 and a refused connection are errors.
func TestCallReporterCountsHertzTimeouts(t *testing.T) {
	slow := startInstance(t, "slow", 200, 2*time.Second)
	failing := startInstance(t, "failing", 500, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String() // nothing listens there once closed
	ln.Close()
	full := unaccepting(t)
	for _, tc := range []struct {
		name             string
		url              string
		opts             []config.ClientOption
		do               func(c *client.Client, req *protocol.Request, resp *protocol.Response) error
		timeouts, errors int64
	}{
		{name: "DoTimeout", url: slow, timeouts: 1,
			do: func(c *client.Client, req *protocol.Request, resp *protocol.Response) error {
				return c.DoTimeout(context.Background(), req, resp, 100*time.Millisecond)
			}},
		{name: "request timeout", url: slow, timeouts: 1,
			do: func(c *client.Client, req *protocol.Request, resp *protocol.Response) error {
				req.SetOptions(config.WithRequestTimeout(100 * time.Millisecond))
				return c.Do(context.Background(), req, resp)
			}},
		{name: "read timeout", url: slow, timeouts: 1, opts: []config.ClientOption{client.WithClientReadTimeout(100 * time.Millisecond)}},
		{name: "connect timeout", url: full, timeouts: 1, opts: []config.ClientOption{client.WithDialTimeout(300 * time.Millisecond)}},
		{name: "500", url: failing, errors: 1},
		{name: "refused", url: refused, errors: 1},
	} {
		for _, lib := range []string{"netpoll", "standard"} {
			t.Run(tc.name+"/"+lib, func(t *testing.T) {
				opts := tc.opts
				if lib == "standard" {
					opts = append(opts, client.WithDialer(standard.NewDialer()))
				}
				cli, err := client.NewClient(opts...)
				if err != nil {
					t.Fatal(err)
				}
				rep := sdk.NewReporter(sdk.ReporterOptions{Service: "front", Instance: "front-1"})
				cli.Use(hertzsdk.CallReporter("front", callee, rep))
				req, resp := protocol.AcquireRequest(), protocol.AcquireResponse()
				defer protocol.ReleaseRequest(req)
				defer protocol.ReleaseResponse(resp)
				req.SetRequestURI("http://" + tc.url + "/comment")
				do := tc.do
				if do == nil {
					do = func(c *client.Client, req *protocol.Request, resp *protocol.Response) error {
						return c.Do(context.Background(), req, resp)
					}
				}
				err = do(cli, req, resp)
				r := rep.Flush(time.Now().Add(time.Second))
				if r == nil || len(r.Calls) != 1 {
					t.Fatalf("call failed with %v; report %+v", err, r)
				}
				if c := r.Calls[0]; c.Requests != 1 || c.Timeouts != tc.timeouts || c.Errors != tc.errors {
					t.Fatalf("call failed with %v (%T): requests %d, timeouts %d, errors %d; want 1, %d, %d",
						err, err, c.Requests, c.Timeouts, c.Errors, tc.timeouts, tc.errors)
				}
			})
		}
	}
}
