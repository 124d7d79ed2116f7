package calculator

import (
	"log/slog"
	"time"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
)

// Core is the calculator's decision logic without its transports: the window
// store and the rounds, fed and stepped by its caller. The service runs the
// same store and engine behind Kitex, etcd and the wall clock; the
// load-balancing simulator (loadtest/lbsim) runs a Core in simulated time,
// owning every service, and takes the policies each round publishes.
type Core struct {
	store  *Store
	engine *engine
	knobs  *KnobStore
	sink   *heldPolicies
	stale  time.Duration
}

// NewCore keeps windows of length window as the service's defaults do
// (DefaultConfig: ten windows, series dropped a minute after their last record).
func NewCore(window time.Duration) *Core {
	cfg := DefaultConfig()
	sink := &heldPolicies{}
	store := NewStore(window, cfg.Windows, cfg.MaxSeries)
	knobs := NewKnobStore(slog.New(slog.DiscardHandler))
	return &Core{
		store:  store,
		knobs:  knobs,
		sink:   sink,
		stale:  cfg.StaleAfter,
		engine: newEngine("core", store, knobs, func(string) bool { return true }, sink, window),
	}
}

// SetKnobs applies k to service, as a knobs document in etcd would.
func (c *Core) SetKnobs(service string, k Knobs) {
	c.knobs.mu.Lock()
	defer c.knobs.mu.Unlock()
	c.knobs.byName[service] = k
	c.knobs.publish()
}

// Ingest merges a batch received at now; it returns how many records were refused.
func (c *Core) Ingest(b *aggregator.ReportBatch, now time.Time) (refused int) {
	t, _ := c.store.Ingest(b, now) // the batches are Batch's own
	return int(t.NotAccepted())
}

// Round runs the round of now, as the service does in the middle of every
// window, and returns the policies it published (at most one per service).
func (c *Core) Round(now time.Time) []*meshcore.Policy {
	c.store.Expire(now.Add(-c.stale))
	c.engine.round(now)
	out := c.sink.published
	c.sink.published = nil
	return out
}

// Decision returns the last round's decision for service.
func (c *Core) Decision(service string) (Decision, bool) { return c.engine.decision(service) }

// heldPolicies is the Core's policy sink: every policy counts as delivered
// at once, versions increase per service as mesh-core requires.
type heldPolicies struct {
	published []*meshcore.Policy
	versions  map[string]int64
}

func (h *heldPolicies) Publish(p *meshcore.Policy) {
	if h.versions == nil {
		h.versions = map[string]int64{}
	}
	h.versions[p.Service] = max(h.versions[p.Service]+1, p.ComputedAtMs)
	p.Version = h.versions[p.Service]
	h.published = append(h.published, p)
}

func (h *heldPolicies) Status(service string) PublishStatus {
	return PublishStatus{Version: h.versions[service]}
}

func (h *heldPolicies) Forget(service string) { delete(h.versions, service) }
