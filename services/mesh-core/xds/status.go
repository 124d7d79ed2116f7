package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/pki"
)

// Sync states of a node's resource type, as istioctl proxy-status names them.
const (
	Synced  = "SYNCED"   // the last response sent was acknowledged
	Stale   = "STALE"    // a response was sent and not acknowledged yet, or rejected
	NotSent = "NOT SENT" // nothing of the type was sent
)

// shortTypes name the type URLs in the status and the metrics.
var shortTypes = map[string]string{
	resourcev3.ListenerType: "lds", resourcev3.RouteType: "rds",
	resourcev3.ClusterType: "cds", resourcev3.EndpointType: "eds",
}

func shortType(url string) string {
	if s, ok := shortTypes[url]; ok {
		return s
	}
	return url
}

// NodeStatus is one ADS stream's state (GET /v1/xds/status).
type NodeStatus struct {
	Node    string `json:"node"`    // node.id
	Service string `json:"service"` // the caller's service: its certificate's, or node.cluster in plaintext
	// Identity is the verified SPIFFE ID of the client's certificate ("" in plaintext).
	Identity    string                `json:"identity,omitempty"`
	Peer        string                `json:"peer"`
	Delta       bool                  `json:"delta"`
	ConnectedAt time.Time             `json:"connected_at"`
	Types       map[string]TypeStatus `json:"types"` // by lds, rds, cds, eds
}

// TypeStatus is one resource type of one node.
type TypeStatus struct {
	State       string    `json:"state"` // SYNCED, STALE, NOT SENT
	Sent        string    `json:"sent_version,omitempty"`
	Acked       string    `json:"acked_version,omitempty"`
	SentAt      time.Time `json:"sent_at,omitzero"`
	AckedAt     time.Time `json:"acked_at,omitzero"`
	NackError   string    `json:"nack_error,omitempty"` // the last rejection, until a later response is acknowledged
	NackVersion string    `json:"nack_version,omitempty"`
	sentNonce   string
}

// statusBook keeps every stream's sync state from the server's callbacks.
type statusBook struct {
	log     *slog.Logger
	nacks   *prometheus.CounterVec
	acks    *prometheus.CounterVec
	refused *prometheus.CounterVec
	streams prometheus.Gauge

	mu    sync.Mutex
	nodes map[int64]*NodeStatus
}

func newStatusBook(log *slog.Logger, reg prometheus.Registerer) *statusBook {
	b := &statusBook{log: log, nodes: map[int64]*NodeStatus{},
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_meshcore_xds_nacks_total",
			Help: "xDS responses a node rejected (NACK), by type (lds, rds, cds, eds).",
		}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_meshcore_xds_acks_total",
			Help: "xDS responses a node acknowledged, by type (lds, rds, cds, eds).",
		}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_meshcore_xds_refused_total",
			Help: "ADS connections and streams refused, by reason (no_certificate, untrusted, expired, wrong_caller: a node declaring another service than its certificate's, handshake).",
		}, []string{"reason"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sextant_meshcore_xds_streams",
			Help: "ADS streams open now (one per connected gRPC client or Envoy).",
		}),
	}
	for _, t := range shortTypes {
		b.nacks.WithLabelValues(t)
		b.acks.WithLabelValues(t)
	}
	for _, r := range []string{mtls.RefusedNoCertificate, mtls.RefusedUntrusted, mtls.RefusedExpired, mtls.RefusedWrongCaller, mtls.RefusedHandshake} {
		b.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(b.nacks, b.acks, b.refused, b.streams)
	}
	return b
}

// countRefusals is cfg with its handshake refusals counted and logged.
func (b *statusBook) countRefusals(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		var err error
		if verify != nil {
			err = verify(cs)
		}
		if err != nil {
			reason := mtls.RefusedHandshake
			switch {
			case errors.Is(err, mtls.ErrNoClientCertificate):
				reason = mtls.RefusedNoCertificate
			case errors.Is(err, pki.ErrExpired):
				reason = mtls.RefusedExpired
			case errors.Is(err, pki.ErrUntrusted):
				reason = mtls.RefusedUntrusted
			}
			b.refused.WithLabelValues(reason).Inc()
			b.log.Warn("ADS connection refused", "reason", reason, "err", err)
		}
		return err
	}
	return cfg
}

// errNoIdentity refuses a stream without a verified certificate.
var errNoIdentity = errors.New("xds: no verified client certificate")

// open records a new stream, with its peer's verified service when the
// server has TLS.
func (b *statusBook) open(ctx context.Context, s *Server, id int64, delta bool) error {
	st := &NodeStatus{ConnectedAt: time.Now(), Delta: delta, Types: map[string]TypeStatus{}}
	if p, ok := peer.FromContext(ctx); ok {
		st.Peer = p.Addr.String()
		if s.opts.TLS != nil {
			info, ok := p.AuthInfo.(credentials.TLSInfo)
			if !ok {
				return errNoIdentity
			}
			service, err := s.opts.Identify(info.State)
			if err != nil {
				return fmt.Errorf("xds: client certificate: %w", err)
			}
			st.Service = service
			if len(info.State.PeerCertificates) > 0 && len(info.State.PeerCertificates[0].URIs) == 1 {
				st.Identity = info.State.PeerCertificates[0].URIs[0].String()
			}
		}
	} else if s.opts.TLS != nil {
		return errNoIdentity
	}
	b.mu.Lock()
	b.nodes[id] = st
	b.mu.Unlock()
	b.streams.Inc()
	return nil
}

func (b *statusBook) close(id int64) {
	b.mu.Lock()
	_, ok := b.nodes[id]
	delete(b.nodes, id)
	b.mu.Unlock()
	if ok {
		b.streams.Dec()
	}
}

// request records a request: its node, and the ACK or NACK of the last
// response it answers. With a verified identity, the node's cluster (by
// which its routes and clusters are chosen) is the certificate's service:
// a node that declares another is refused.
func (b *statusBook) request(id int64, node *corev3.Node, typeURL, version, nonce string, nack error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.nodes[id]
	if st == nil {
		return nil
	}
	if node != nil {
		if st.Identity != "" {
			if node.Cluster != "" && node.Cluster != st.Service {
				b.refused.WithLabelValues(mtls.RefusedWrongCaller).Inc()
				b.log.Warn("ADS stream refused", "reason", mtls.RefusedWrongCaller, "node", node.Id, "cluster", node.Cluster, "identity", st.Identity)
				return fmt.Errorf("xds: node.cluster %q is not the service of the client certificate (%s)", node.Cluster, st.Identity)
			}
			node.Cluster = st.Service
		} else {
			st.Service = node.Cluster
		}
		st.Node = node.Id
	}
	if nonce == "" {
		return nil
	}
	t := shortType(typeURL)
	ts := st.Types[t]
	if nonce != ts.sentNonce {
		return nil // answers an older response
	}
	if nack != nil {
		ts.NackError, ts.NackVersion = nack.Error(), ts.Sent
		b.nacks.WithLabelValues(t).Inc()
		b.log.Warn("xDS response rejected (NACK)", "node", st.Node, "service", st.Service, "type", t, "version", ts.Sent, "err", nack)
	} else {
		ts.Acked, ts.AckedAt, ts.NackError, ts.NackVersion = version, time.Now(), "", ""
		if ts.Acked == "" {
			ts.Acked = ts.Sent // delta requests carry no version
		}
		b.acks.WithLabelValues(t).Inc()
	}
	st.Types[t] = ts
	return nil
}

// response records a response sent.
func (b *statusBook) response(id int64, typeURL, version, nonce string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.nodes[id]
	if st == nil {
		return
	}
	t := shortType(typeURL)
	ts := st.Types[t]
	ts.Sent, ts.sentNonce, ts.SentAt = version, nonce, time.Now()
	st.Types[t] = ts
}

// snapshot is every node's status, with each type's state.
func (b *statusBook) snapshot() []NodeStatus {
	b.mu.Lock()
	out := make([]NodeStatus, 0, len(b.nodes))
	for _, st := range b.nodes {
		c := *st
		c.Types = make(map[string]TypeStatus, 4)
		for _, t := range []string{"lds", "rds", "cds", "eds"} {
			ts := st.Types[t]
			switch {
			case ts.sentNonce == "":
				ts.State = NotSent
			case ts.NackError == "" && ts.Acked == ts.Sent && !ts.AckedAt.Before(ts.SentAt):
				ts.State = Synced
			default:
				ts.State = Stale
			}
			c.Types[t] = ts
		}
		out = append(out, c)
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(a, b NodeStatus) int {
		return strings.Compare(a.Service+"\x00"+a.Node+"\x00"+a.Peer, b.Service+"\x00"+b.Node+"\x00"+b.Peer)
	})
	return out
}

// callbacks are the server's hooks into go-control-plane.
func (b *statusBook) callbacks(s *Server) serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc:   func(ctx context.Context, id int64, _ string) error { return b.open(ctx, s, id, false) },
		StreamClosedFunc: func(id int64, _ *corev3.Node) { b.close(id) },
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			return b.open(ctx, s, id, true)
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { b.close(id) },
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			return b.request(id, req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), nackOf(req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil))
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			b.response(id, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce())
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			return b.request(id, req.GetNode(), req.GetTypeUrl(), "", req.GetResponseNonce(), nackOf(req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil))
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			b.response(id, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce())
		},
	}
}

func nackOf(msg string, present bool) error {
	if !present {
		return nil
	}
	if msg == "" {
		msg = "rejected without a message"
	}
	return errors.New(msg)
}
