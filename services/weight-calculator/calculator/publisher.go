package calculator

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cloudwego/kitex/client/callopt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/sdk/backoff"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
)

// Publisher sends policies to mesh-core with MeshCore.PublishPolicy. Per
// service only the newest policy waits: a newer one replaces an older one
// not yet delivered. Failed calls are retried with backoff; versions are
// assigned at send time, increasing per service, and a stale_version answer
// moves the next version above the one mesh-core holds.
type Publisher struct {
	client  meshcoresvc.Client
	addr    string
	timeout time.Duration
	retry   backoff.Policy
	log     *slog.Logger
	metrics *publishMetrics

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
		Help: "MeshCore.PublishPolicy calls, by result (ok, retry, stale_version, rejected).",
	}, []string{"result"})}
	reg.MustRegister(m.published)
	return m
}

// NewPublisher publishes to the mesh-core Kitex server at addr.
func NewPublisher(client meshcoresvc.Client, addr string, timeout time.Duration, m *publishMetrics, log *slog.Logger) *Publisher {
	return &Publisher{
		client: client, addr: addr, timeout: timeout, log: log, metrics: m,
		retry:   backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second},
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
		for _, service := range p.due(time.Now()) {
			p.send(ctx, service)
		}
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

func (p *Publisher) send(ctx context.Context, service string) {
	p.mu.Lock()
	pp := p.pending[service]
	if pp == nil {
		p.mu.Unlock()
		return
	}
	st := p.statusOf(service)
	pol := *pp.policy
	pol.Version = max(st.Version+1, time.Now().UnixMilli())
	p.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	resp, err := p.client.PublishPolicy(cctx, &meshcore.PublishPolicyRequest{Policy: &pol}, callopt.WithHostPort(p.addr))
	cancel()

	p.mu.Lock()
	defer p.mu.Unlock()
	var rejected *meshcore.PolicyRejected
	switch {
	case err == nil:
		p.metrics.published.WithLabelValues("ok").Inc()
		st.Version = max(pol.Version, resp.GetStoredVersion())
		st.AcceptedAtMs, st.LastError, st.Attempts = time.Now().UnixMilli(), "", 0
		if p.pending[service] == pp { // no newer policy arrived meanwhile
			delete(p.pending, service)
			st.Pending = false
		}
	case errors.As(err, &rejected) && rejected.Code == "stale_version":
		p.metrics.published.WithLabelValues("stale_version").Inc()
		st.Version = max(st.Version, rejected.CurrentVersion)
		st.LastError = rejected.Message
	case errors.As(err, &rejected):
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
