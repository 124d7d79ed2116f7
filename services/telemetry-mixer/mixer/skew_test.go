package mixer_test

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/telemetry"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
)

type keptReports struct{ got []api.Report }

func (k *keptReports) Offer(rs []api.Report) error {
	k.got = append(k.got, rs...)
	return nil
}

// A data plane whose clock is off stamps its windows with its own clock.
// When it says when it sent them (api.HeaderSentAt, as the Go SDK does),
// the mixer checks the timestamps against that clock and moves them onto
// its own: a window neither refused (10 min ahead is past
// --max-future-skew) nor placed minutes away from the windows of the
// other data planes, where it would make theirs look late to the
// calculator. Without the header the mixer's own clock decides, as before.
func TestSkewedDataPlaneTimestampsAreCorrected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		skew   time.Duration // the data plane's clock minus the mixer's
		header bool
		status int
		moved  bool
	}{
		{"10 min ahead, says when it sent", 10 * time.Minute, true, 202, true},
		{"3 min ahead, says when it sent", 3 * time.Minute, true, 202, true},
		{"2 h behind, says when it sent", -2 * time.Hour, true, 202, true},
		{"300 ms ahead: within the tolerance", 300 * time.Millisecond, true, 202, false},
		{"10 min ahead, no header: refused", 10 * time.Minute, false, 400, false},
		{"3 min ahead, no header: kept as stamped", 3 * time.Minute, false, 202, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &keptReports{}
			in := mixer.NewIngest(sink, telemetry.DefaultLimits(), 1<<20, nil)
			dpNow := time.Now().Add(tc.skew)
			r := reports(1, 2, 1)[0]
			r.TimestampMs = dpNow.Add(-200 * time.Millisecond).UnixMilli() // a window that closed 200 ms before the send
			c := app.NewContext(0)
			c.Request.SetMethod("POST")
			c.Request.SetRequestURI("/v1/telemetry")
			c.Request.Header.SetContentTypeBytes([]byte("application/json"))
			body := mustJSON(t, r)
			c.Request.SetBodyStream(bytes.NewReader(body), len(body))
			if tc.header {
				c.Request.Header.Set(api.HeaderSentAt, strconv.FormatInt(dpNow.UnixMilli(), 10))
			}
			in.Handle(context.Background(), c)
			if got := c.Response.StatusCode(); got != tc.status {
				t.Fatalf("status %d (%s), want %d", got, c.Response.Body(), tc.status)
			}
			if tc.status != 202 {
				if len(sink.got) != 0 {
					t.Fatalf("%d reports kept from a refused request", len(sink.got))
				}
				return
			}
			if len(sink.got) != 1 {
				t.Fatalf("%d reports kept, want 1", len(sink.got))
			}
			got := time.UnixMilli(sink.got[0].TimestampMs)
			if tc.moved {
				if off := time.Since(got); off < 0 || off > 2*time.Second {
					t.Fatalf("timestamp %s from the mixer's now, want it moved onto the mixer's clock (about 200 ms before now)", -off)
				}
			} else if got.UnixMilli() != r.TimestampMs {
				t.Fatalf("timestamp moved by %s, want it as stamped", got.Sub(time.UnixMilli(r.TimestampMs)))
			}
		})
	}
}
