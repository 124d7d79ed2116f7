package mixer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/internal/shard"
)

// metrics are the mixer's Prometheus series (docs/metrics.md). Reports are
// counted at the HTTP edge; past it a report is split into records (its server
// part, each call edge, each dry-run denial), and forwarding counts records.
type metrics struct {
	accepted prometheus.Counter
	// clockCorrected counts the reports whose timestamps were moved onto
	// the mixer's clock (api.HeaderSentAt).
	clockCorrected prometheus.Counter
	rejected       *prometheus.CounterVec
	forwarded      *prometheus.CounterVec
	// forwarded's children, looked up once
	forwardedServer, forwardedEdge, forwardedDenial, forwardedUnit prometheus.Counter
	retried                                                        prometheus.Counter
	dropped                                                        *prometheus.CounterVec
	forwardSeconds                                                 prometheus.Histogram
	denialsDropped                                                 *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sextant_mixer_reports_accepted_total",
			Help: "Telemetry reports accepted (answered 202).",
		}),
		clockCorrected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sextant_mixer_reports_clock_corrected_total",
			Help: "Reports whose timestamp_ms was moved onto the mixer's clock: their data plane said when it sent them (X-Sextant-Sent-At), and its clock was off by more than 1 s.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_mixer_reports_rejected_total",
			Help: "Ingest requests refused, by reason (the error code of the answer).",
		}, []string{"reason"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_mixer_records_forwarded_total",
			Help: "Records delivered to a calculator shard, by kind (server, edge, denial, unit_route).",
		}, []string{"kind"}),
		retried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sextant_mixer_records_retried_total",
			Help: "Record delivery retries scheduled after a failed call or with no shard to call.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_mixer_records_dropped_total",
			Help: "Accepted records that never reached a calculator, by reason.",
		}, []string{"reason"}),
		denialsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_mixer_denials_dropped_total",
			Help: "Dry-run denials left out of accepted reports (the rest of the report kept), by reason: the code of the bad field, or too_many past --max-denials-per-report.",
		}, []string{"reason"}),
		forwardSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sextant_mixer_forward_seconds",
			Help:    "Duration of Aggregator.Ingest calls to calculator shards.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	m.forwardedServer = m.forwarded.WithLabelValues("server")
	m.forwardedEdge = m.forwarded.WithLabelValues("edge")
	m.forwardedDenial = m.forwarded.WithLabelValues("denial")
	m.forwardedUnit = m.forwarded.WithLabelValues("unit_route")
	reg.MustRegister(m.accepted, m.clockCorrected, m.rejected, m.forwarded, m.retried, m.dropped, m.forwardSeconds, m.denialsDropped)
	return m
}

func (m *metrics) observeForwarder(reg prometheus.Registerer, f *Forwarder, members *shard.Membership, capacity int) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sextant_mixer_queue_records",
			Help: "Records held for forwarding: queued, in flight or waiting to retry.",
		}, func() float64 { return float64(f.Queued()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sextant_mixer_queue_capacity_records",
			Help: "Records the forwarding queue holds before ingest answers 429.",
		}, func() float64 { return float64(capacity) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sextant_mixer_shards",
			Help: "Weight-calculator shards the mixer routes to.",
		}, func() float64 { return float64(len(members.View().Shards)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sextant_mixer_etcd_connected",
			Help: "1 while the mixer follows the shard registrations in etcd; 0 while it routes by the last shards seen.",
		}, func() float64 {
			if members.Synced() {
				return 1
			}
			return 0
		}),
	)
}
