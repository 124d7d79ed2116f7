// Package hertzsdk plugs Sextant into Hertz: server middleware that sheds
// low-priority requests under overload, applies access rules and reports
// what the server sees, and client middleware that reports each call to the
// instance it went to.
//
// The priority travels in the x-sextant-priority header, the caller's
// service name in x-sextant-caller.
package hertzsdk

import (
	"context"
	"errors"
	"strconv"
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
// set with WithPriority.
func CallReporter(caller, callee string, rep *sdk.Reporter) client.Middleware {
	return func(next client.Endpoint) client.Endpoint {
		return func(ctx context.Context, req *protocol.Request, resp *protocol.Response) error {
			req.Header.Set(sdk.CallerKey, caller)
			if p, ok := ctx.Value(priorityKey{}).(int32); ok {
				req.Header.Set(sdk.PriorityKey, strconv.Itoa(int(p)))
			}
			start := time.Now()
			err := next(ctx, req, resp)
			if rep != nil {
				status := resp.StatusCode()
				rep.RecordCall(callee, string(req.Host()), time.Since(start), err != nil || status >= 500, errors.Is(err, context.DeadlineExceeded))
			}
			return err
		}
	}
}

type priorityKey struct{}

// WithPriority sets the priority of the calls made with ctx.
func WithPriority(ctx context.Context, p int32) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}
