// Package backoff computes retry delays: exponential, capped, with jitter so
// that many clients retrying after one outage do not retry in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff from Base, doubling per attempt, up to Max.
type Policy struct {
	Base time.Duration
	Max  time.Duration
}

// Delay is the wait before retry number attempt (1 for the first retry): a
// random duration in [d/2, d] where d = min(Base * 2^(attempt-1), Max).
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Base
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	return d/2 + rand.N(d/2+1)
}

// Sleep waits Delay(attempt), or less if ctx ends first.
func (p Policy) Sleep(ctx context.Context, attempt int) {
	t := time.NewTimer(p.Delay(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
