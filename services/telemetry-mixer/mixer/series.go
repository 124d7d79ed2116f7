package mixer

import (
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// seriesSink hands accepted reports to the forwarder and, once accepted,
// writes what the mixer keeps at full resolution (docs/timeseries.md):
// measurement `server` per report, `identities` and `connections` per
// report that carries them, `dry_run_denial` per denial and `unit_route`
// per unit route. Call
// edges are written by the calculator shards, summed per callee instance
// and window. Tags are service and instance names only, so cardinality
// follows the number of instances.
type seriesSink struct {
	next   Sink
	series *tsdb.Writer
}

func (s seriesSink) Offer(reports []api.Report) error {
	if err := s.next.Offer(reports); err != nil {
		return err
	}
	if !s.series.Enabled() {
		return nil
	}
	for i := range reports {
		writeReport(s.series, &reports[i])
	}
	return nil
}

func writeReport(w *tsdb.Writer, r *api.Report) {
	at := time.UnixMilli(r.TimestampMs)
	rep := r.Reporter
	if s := r.Server; s != nil {
		if l := w.Begin("server"); l != nil {
			l.Tag("cluster", rep.Cluster).Tag("instance", rep.Instance).Tag("service", rep.Service).Tag("zone", rep.Zone).
				Int("client_timeouts", s.ClientTimeouts).Float("cpu_util", s.CPUUtil).Int("inflight", s.Inflight).
				Float("queue_time_ms_avg", s.QueueTimeMsAvg).Float("queue_time_ms_p99", s.QueueTimeMsP99).
				Int("requests", s.Requests).Int("window_ms", r.WindowMs).End(at)
		}
	}
	for i := range r.Calls {
		c := &r.Calls[i]
		if c.Plaintext == 0 {
			continue
		}
		if l := w.Begin("plaintext_calls"); l != nil {
			l.Tag("callee_instance", c.CalleeInstance).Tag("callee_service", c.CalleeService).Tag("caller_service", rep.Service).
				Int("count", c.Plaintext).End(at)
		}
	}
	if sec := r.Security; sec != nil {
		writeCounts(w, "identities", rep, sec.Identities, api.IdentityStatKeys, at)
		writeCounts(w, "connections", rep, sec.Connections, api.ConnectionStatKeys, at)
	}
	for i := range r.DryRunDenials {
		d := &r.DryRunDenials[i]
		if l := w.Begin("dry_run_denial"); l != nil {
			l.Tag("callee_service", d.CalleeService).Tag("caller_service", d.CallerService).Tag("rule", d.Rule).
				Int("count", d.Count).End(at)
		}
	}
	for i := range r.UnitRoutes {
		u := &r.UnitRoutes[i]
		if l := w.Begin("unit_route"); l != nil {
			l.Tag("callee_service", u.CalleeService).Tag("caller_service", rep.Service).Tag("outcome", u.Outcome).
				Tag("rule", u.Rule).Tag("unit", u.Unit).Int("count", u.Count).End(at)
		}
	}
}

// writeCounts writes one point of measurement with a field per key of
// counts (in the order of keys), unless counts is empty.
func writeCounts(w *tsdb.Writer, measurement string, rep *api.Reporter, counts map[string]int64, keys []string, at time.Time) {
	if len(counts) == 0 {
		return
	}
	l := w.Begin(measurement)
	if l == nil {
		return
	}
	l = l.Tag("cluster", rep.Cluster).Tag("instance", rep.Instance).Tag("service", rep.Service).Tag("zone", rep.Zone)
	for _, k := range keys {
		if v, ok := counts[k]; ok {
			l = l.Int(k, v)
		}
	}
	l.End(at)
}
