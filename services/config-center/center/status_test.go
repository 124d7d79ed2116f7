package center

import (
	"fmt"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
)

// The status book forgets instances that stopped polling, whether or not
// they ever reported applying, and never tracks more than its bound.
func TestStatusBookIsBounded(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	b := newStatusBook(time.Minute)
	b.now = func() time.Time { return now }
	b.max = 500
	answer := api.WatchAnswer{Version: 7, Configs: []api.Effective{{Kind: "limit", Scope: "svc", Revision: 3}}}
	// Churn: 1,000 instances come, are answered, and go without reporting.
	for i := range 1000 {
		b.sent("svc", fmt.Sprint("10.0.0.1:", i), nil, answer)
		now = now.Add(100 * time.Millisecond)
	}
	if n := len(b.sentTo); n > b.max {
		t.Fatalf("%d instances tracked, bound %d", n, b.max)
	}
	// One instance keeps polling and applies; the others are gone after ttl.
	b.sent("svc", "live", nil, answer)
	b.reportApplied("svc", "live", 7)
	for range 10 {
		now = now.Add(20 * time.Second)
		b.seen("svc", "live")
		b.sent("svc", "live", nil, answer)
	}
	if len(b.sentTo) != 1 || len(b.applied) != 1 {
		t.Fatalf("after ttl: %d sent, %d applied tracked; only the live instance should be", len(b.sentTo), len(b.applied))
	}
	if st := b.of(Ref{Kind: "limit", Server: "svc"}); st.Instances != 1 || st.ByRevision["3"] != 1 {
		t.Fatalf("status %+v", st)
	}
}
