// Package hertzsdk plugs Sextant into Hertz: server middleware that sheds
// low-priority requests under overload, applies access rules and reports
// what the server sees, and client middleware that sends a service's
// requests to the instance an sdk.Balancer picks (Balance) and reports each
// call to the instance it went to (CallReporter).
//
// The priority travels in the x-sextant-priority header, the caller's
// service name in x-sextant-caller.
package hertzsdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/protocol"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/sdk"
)

// DefaultPriority is the priority of a request that carries none.
var DefaultPriority int32 = 64

// Admission is server middleware that admits requests through gate. A shed
// request gets 503 with Retry-After; a denied one 403; both with a JSON error.
func Admission(gate *sdk.Gate) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		arrived := time.Now()
		priority := sdk.ParsePriority(string(c.GetHeader(sdk.PriorityKey)), DefaultPriority)
		a, err := gate.Enter(ctx, arrived, priority, string(c.GetHeader(sdk.CallerKey)), string(c.Path()))
		switch {
		case errors.Is(err, sdk.ErrShed):
			c.Header("Retry-After", "1")
			c.AbortWithStatusJSON(consts.StatusServiceUnavailable, errorBody("shed", err))
			return
		case errors.Is(err, sdk.ErrDenied):
			c.AbortWithStatusJSON(consts.StatusForbidden, errorBody("denied", err))
			return
		case err != nil:
			c.AbortWithStatusJSON(consts.StatusServiceUnavailable, errorBody("unavailable", err))
			return
		}
		defer a.Done()
		c.Next(ctx)
	}
}

func errorBody(code string, err error) map[string]any {
	return map[string]any{"error": map[string]string{"code": code, "message": err.Error()}}
}

// CallReporter is Hertz client middleware that reports every call of the
// service `callee` to rep, and sends this service's name and the priority
// set with WithPriority. A call Balance sent is reported to the instance id
// it picked, in whichever order the two are used; any other to its host.
func CallReporter(caller, callee string, rep *sdk.Reporter) client.Middleware {
	return func(next client.Endpoint) client.Endpoint {
		return func(ctx context.Context, req *protocol.Request, resp *protocol.Response) error {
			req.Header.Set(sdk.CallerKey, caller)
			if p, ok := ctx.Value(priorityKey{}).(int32); ok {
				req.Header.Set(sdk.PriorityKey, strconv.Itoa(int(p)))
			}
			if rep == nil {
				return next(ctx, req, resp)
			}
			to, ok := ctx.Value(pickedKey{}).(*picked)
			if !ok {
				to = new(picked)
				ctx = context.WithValue(ctx, pickedKey{}, to)
			}
			start := time.Now()
			err := next(ctx, req, resp)
			instance := to.instance
			if instance == "" {
				instance = string(req.Host())
			}
			status := resp.StatusCode()
			rep.RecordCall(callee, instance, time.Since(start), err != nil || status >= 500, errors.Is(err, context.DeadlineExceeded))
			return err
		}
	}
}

// picked carries the instance Balance picked to a CallReporter before or
// after it in the chain.
type picked struct{ instance string }

type pickedKey struct{}

// Balance is Hertz client middleware that sends each request whose URI host
// is service (e.g. http://comment-svc/comment) to an instance b picks among
// d's instances of service: it sets the request's URI host to the
// instance's Addr (and so the Host header, unless one was set) and leaves
// other requests alone. b learns each request's latency and whether it
// failed (an error, or a status of 500 or more); a nil b is an
// sdk.HybridPicker with default options, new(sdk.Picker) the plain
// weighted round robin. static are the instances to use until mesh-core
// answers, as with Discovery.Watch. With no instance the request fails with
// sdk.ErrNoInstance.
func Balance(service string, d *sdk.Discovery, b sdk.Balancer, static []sdk.Instance) client.Middleware {
	if b == nil {
		b = sdk.NewHybridPicker(sdk.HybridOptions{})
	}
	d.Watch(service, static, nil)
	host := []byte(service)
	var applied atomic.Pointer[sdk.Snapshot]
	return func(next client.Endpoint) client.Endpoint {
		return func(ctx context.Context, req *protocol.Request, resp *protocol.Response) (err error) {
			if !bytes.EqualFold(req.Host(), host) {
				return next(ctx, req, resp)
			}
			snap, ok := d.Get(service)
			if !ok {
				return fmt.Errorf("%s: %w", service, sdk.ErrNoInstance)
			}
			// Get makes a new static snapshot each time; feeding b one would
			// restart a round robin's cycle on every request.
			if last := applied.Load(); last != snap && (last == nil || snap.Version != 0 || last.Version != 0) {
				b.Update(snap)
				applied.Store(snap)
			}
			in, err := b.Pick()
			if err != nil {
				return fmt.Errorf("%s: %w", service, err)
			}
			if to, ok := ctx.Value(pickedKey{}).(*picked); ok {
				to.instance = in.Instance
			} else {
				ctx = context.WithValue(ctx, pickedKey{}, &picked{instance: in.Instance})
			}
			req.SetHost(in.Addr)
			start := time.Now()
			returned := false
			defer func() {
				failed := !returned || err != nil || resp != nil && resp.StatusCode() >= 500
				b.Done(in.Instance, time.Since(start), failed)
			}()
			err = next(ctx, req, resp)
			returned = true
			return err
		}
	}
}

type priorityKey struct{}

// WithPriority sets the priority of the calls made with ctx.
func WithPriority(ctx context.Context, p int32) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}
