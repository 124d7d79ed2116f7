package mixer

import (
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// seriesSink hands accepted reports to the forwarder and, once accepted,
// writes them to the time series (docs/timeseries.md): measurement `server`
// per reporting instance, `call` per caller and callee instance, and
// `dry_run_denial` per callee, caller and rule. Tags are service and
// instance names only, so cardinality follows the number of instances.
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
		w.Write("server", map[string]string{"service": rep.Service, "instance": rep.Instance, "zone": rep.Zone, "cluster": rep.Cluster},
			map[string]any{"requests": s.Requests, "cpu_util": s.CPUUtil, "queue_time_ms_avg": s.QueueTimeMsAvg,
				"queue_time_ms_p99": s.QueueTimeMsP99, "inflight": s.Inflight, "client_timeouts": s.ClientTimeouts,
				"window_ms": r.WindowMs}, at)
	}
	for i := range r.Calls {
		c := &r.Calls[i]
		w.Write("call", map[string]string{"caller_service": rep.Service, "caller_instance": rep.Instance,
			"callee_service": c.CalleeService, "callee_instance": c.CalleeInstance},
			map[string]any{"requests": c.Requests, "errors": c.Errors, "timeouts": c.Timeouts,
				"latency_ms_avg": c.LatencyMsAvg, "latency_ms_p99": c.LatencyMsP99, "window_ms": r.WindowMs}, at)
	}
	for i := range r.DryRunDenials {
		d := &r.DryRunDenials[i]
		w.Write("dry_run_denial", map[string]string{"callee_service": d.CalleeService, "caller_service": d.CallerService, "rule": d.Rule},
			map[string]any{"count": d.Count}, at)
	}
}
