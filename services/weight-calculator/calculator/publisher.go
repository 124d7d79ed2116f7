package calculator

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cloudwego/kitex/client/callopt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// Publisher sends policies to mesh-core with MeshCore.PublishPolicies, in
// batches of up to core's MaxPoliciesPerBatch (one call and one etcd
// transaction each), a few batches at a time. Per service only the newest
// policy waits: a newer one replaces an older one not yet delivered. Failed calls are retried with backoff; versions are
// assigned at send time, increasing per service, and a stale_version answer
// moves the next version above the one mesh-core holds.
type Publisher struct {
	client  meshcoresvc.Client
	addr    string
	timeout time.Duration
	retry   backoff.Policy
	log     *slog.Logger
	metrics *publishMetrics

	// batch and parallel bound what one call carries and how many calls run at once.
	batch, parallel int

	kick    chan struct{}
	mu      sync.Mutex
	pending map[string]*pendingPolicy
	status  map[string]*PublishStatus
}

type pendingPolicy struct {
	policy    *meshcore.Policy
	attempts  int
	notBefore time.Time
}

// PublishStatus is what /debug/policy shows of a service's publishing.
type PublishStatus struct {
	Version      int64  `json:"version"`  // last version mesh-core accepted
	Attempts     int    `json:"attempts"` // failed attempts of the policy waiting, if any
	Pending      bool   `json:"pending"`  // a policy waits to be delivered
	LastError    string `json:"last_error,omitempty"`
	AcceptedAtMs int64  `json:"accepted_at_ms,omitempty"`
}

type publishMetrics struct {
	published *prometheus.CounterVec
}

func newPublishMetrics(reg prometheus.Registerer) *publishMetrics {
	m := &publishMetrics{published: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sextant_calculator_publish_total",
		Help: "Policies sent to mesh-core (MeshCore.PublishPolicies), by result (ok, retry, stale_version, rejected).",
	}, []string{"result"})}
	reg.MustRegister(m.published)
	return m
}

// NewPublisher publishes to the mesh-core Kitex server at addr.
func NewPublisher(client meshcoresvc.Client, addr string, timeout time.Duration, m *publishMetrics, log *slog.Logger) *Publisher {
	return &Publisher{
		client: client, addr: addr, timeout: timeout, log: log, metrics: m,
		retry: backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second},
		batch: 64, parallel: 4,
		kick:    make(chan struct{}, 1),
		pending: map[string]*pendingPolicy{},
		status:  map[string]*PublishStatus{},
	}
}

// Publish queues p, replacing a policy of the same service not yet sent.
func (p *Publisher) Publish(pol *meshcore.Policy) {
	p.mu.Lock()
	p.pending[pol.Service] = &pendingPolicy{policy: pol}
	p.statusOf(pol.Service).Pending = true
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Status returns the publishing status of service.
func (p *Publisher) Status(service string) PublishStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.status[service]; ok {
		return *s
	}
	return PublishStatus{}
}

// Forget drops what waits for service and its status (its shard no longer owns it).
func (p *Publisher) Forget(service string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pending, service)
	delete(p.status, service)
}

func (p *Publisher) statusOf(service string) *PublishStatus {
	s := p.status[service]
	if s == nil {
		s = &PublishStatus{}
		p.status[service] = s
	}
	return s
}

// Run delivers until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
		p.sendDue(ctx, p.due(time.Now()))
	}
}

func (p *Publisher) due(now time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for s, pp := range p.pending {
		if !pp.notBefore.After(now) {
			out = append(out, s)
		}
	}
	return out
}

// sendDue sends the due services' policies in batches, at most
// p.parallel calls at a time, and returns when every batch is answered.
func (p *Publisher) sendDue(ctx context.Context, due []string) {
	sem := make(chan struct{}, p.parallel)
	var wg sync.WaitGroup
	for batch := range slices.Chunk(due, p.batch) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			p.send(ctx, batch)
		})
	}
	wg.Wait()
}

// send publishes the policies waiting for services in one call.
func (p *Publisher) send(ctx context.Context, services []string) {
	type sent struct {
		pp  *pendingPolicy
		pol meshcore.Policy
	}
	var batch []sent
	req := &meshcore.PublishPoliciesRequest{}
	p.mu.Lock()
	for _, service := range services {
		pp := p.pending[service]
		if pp == nil {
			continue
		}
		pol := *pp.policy
		pol.Version = max(p.statusOf(service).Version+1, time.Now().UnixMilli())
		batch = append(batch, sent{pp, pol})
	}
	p.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	for i := range batch {
		req.Policies = append(req.Policies, &batch[i].pol)
	}

	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	resp, err := p.client.PublishPolicies(cctx, req, callopt.WithHostPort(p.addr))
	cancel()
	if err == nil && len(resp.GetResults()) != len(batch) {
		err = fmt.Errorf("mesh-core answered %d results for %d policies", len(resp.GetResults()), len(batch))
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	for i, b := range batch {
		var r *meshcore.PolicyOutcome
		if err == nil {
			r = resp.Results[i]
		}
		p.settle(b.pp, &b.pol, r, err)
	}
}

// settle records what became of one sent policy: stored (r without a
// rejection), rejected, or to retry after err. p.mu is held.
func (p *Publisher) settle(pp *pendingPolicy, pol *meshcore.Policy, r *meshcore.PolicyOutcome, err error) {
	service := pol.Service
	st := p.statusOf(service)
	var rejected *meshcore.PolicyRejected
	if r != nil { // nil with err: the call failed
		rejected = r.Rejected
	}
	switch {
	case err == nil && rejected == nil:
		p.metrics.published.WithLabelValues("ok").Inc()
		st.Version = max(pol.Version, r.GetStoredVersion())
		st.AcceptedAtMs, st.LastError, st.Attempts = time.Now().UnixMilli(), "", 0
		if p.pending[service] == pp { // no newer policy arrived meanwhile
			delete(p.pending, service)
			st.Pending = false
		}
	case err == nil && rejected.Code == "stale_version":
		p.metrics.published.WithLabelValues("stale_version").Inc()
		st.Version = max(st.Version, rejected.CurrentVersion)
		st.LastError = rejected.Message
	case err == nil:
		p.metrics.published.WithLabelValues("rejected").Inc()
		// The same rejection round after round (say, instances that report
		// telemetry but are not registered) is logged once.
		if msg := rejected.Code + ": " + rejected.Message; msg != st.LastError {
			p.log.Error("mesh-core rejected a policy", "service", service, "code", rejected.Code,
				"field", rejected.Field, "message", rejected.Message)
			st.LastError = msg
		}
		if p.pending[service] == pp {
			delete(p.pending, service)
			st.Pending = false
		}
	default:
		p.metrics.published.WithLabelValues("retry").Inc()
		pp.attempts++
		pp.notBefore = time.Now().Add(p.retry.Delay(pp.attempts))
		st.Attempts, st.LastError = pp.attempts, err.Error()
		if pp.attempts == 1 || pp.attempts%20 == 0 {
			p.log.Warn("publishing to mesh-core failed; retrying", "service", service, "attempts", pp.attempts, "err", err)
		}
	}
}
