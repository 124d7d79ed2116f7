package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/hertzsdk"
)

// FrontHTTP serves GET /comment on Hertz: it reads the request's priority
// from x-sextant-priority and calls the comment service with it.
func FrontHTTP(addr string, f *Front) (*HertzServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return ServeHertz(ln, func(h *server.Hertz) {
		h.Use(hertzsdk.Admission(sdk.NewGate(sdk.GateOptions{}), nil))
		h.GET("/comment", func(ctx context.Context, c *app.RequestContext) {
			p := sdk.ParsePriority(string(c.GetHeader(sdk.PriorityKey)), 64)
			instance, err := f.Call(ctx, p)
			if err != nil {
				status := consts.StatusBadGateway
				if isShed(err) {
					status = consts.StatusServiceUnavailable
					c.Header("Retry-After", "1")
				}
				c.JSON(status, map[string]any{"error": map[string]string{"code": "upstream", "message": err.Error()}})
				return
			}
			c.JSON(consts.StatusOK, map[string]string{"instance": instance})
		})
	}), nil
}

// Run is the demo as `make demo` (cmd/demo-dev) runs it: five instances of the
// comment service, the fifth with a fifth of the others' capacity; a Hertz
// front on frontAddr; a load driver sending mixed priorities to the front
// over HTTP. Once a second it prints each instance's weight and share of
// traffic and the admission threshold, until ctx ends.
func Run(ctx context.Context, cp ControlPlane, frontAddr string, out io.Writer, log *slog.Logger) error {
	var backends []*Backend
	for i, cost := range []time.Duration{10, 10, 10, 10, 50} {
		b, err := StartBackend(cp, cost*time.Millisecond, 4, log)
		if err != nil {
			return fmt.Errorf("backend %d: %w", i, err)
		}
		defer b.Close()
		backends = append(backends, b)
	}
	front, err := NewFront(cp, 2*time.Second, log)
	if err != nil {
		return err
	}
	defer front.Close()
	srv, err := FrontHTTP(frontAddr, front)
	if err != nil {
		return err
	}
	defer srv.Stop(context.Background())
	fmt.Fprintf(out, "\ndemo: %d instances of %s behind a Hertz front on http://%s/comment; load: 16 callers, priorities 10/64/120\n",
		len(backends), Service, srv.Addr())

	rec := NewRecorder()
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	for w := 0; w < 16; w++ {
		go func() {
			for ctx.Err() == nil {
				p := Priorities()
				start := time.Now()
				instance, err := get(ctx, client, "http://"+srv.Addr()+"/comment", p)
				if ctx.Err() == nil {
					rec.record(start, instance, p, time.Since(start), err)
				}
				time.Sleep(5 * time.Millisecond) // a caller thinks between calls
			}
		}()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			snap, _ := front.Snapshot()
			sec := now.Truncate(time.Second)
			fmt.Fprintf(out, "%s\n%s", now.Format("15:04:05"), Report(rec.Window(sec.Add(-time.Second), sec), snap, backends))
		}
	}
}

type shedError struct{}

func (shedError) Error() string { return "shed" }

func isShed(err error) bool {
	_, ok := err.(shedError)
	return ok || kitexShed(err)
}

func get(ctx context.Context, c *http.Client, url string, priority int32) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set(sdk.PriorityKey, strconv.Itoa(int(priority)))
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		return "", shedError{}
	}
	var body struct {
		Instance string `json:"instance"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("front answered %d", resp.StatusCode)
	}
	return body.Instance, nil
}
