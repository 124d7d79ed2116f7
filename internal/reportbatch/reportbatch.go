// Package reportbatch turns a data plane's telemetry report into the records
// a weight-calculator shard ingests. The telemetry-mixer routes each record
// to the shard that owns its key; the load-balancing simulator hands them to
// the calculator's core directly. One conversion serves both, so what the
// simulator measures is what the calculator is fed in production.
package reportbatch

import (
	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
)

// Record is one record of a report; exactly one of Server, Edge and Denial is set.
type Record struct {
	Key    string // the service whose owner receives the record
	Server *aggregator.ServerRecord
	Edge   *aggregator.CallEdge
	Denial *aggregator.DryRunDenial
}

// Split calls emit with every record of r, in order: the server part, the
// call edges, the dry-run denials.
func Split(r *api.Report, emit func(Record)) {
	rep := &aggregator.Reporter{Service: r.Reporter.Service, Instance: r.Reporter.Instance,
		Cluster: r.Reporter.Cluster, Zone: r.Reporter.Zone}
	if s := r.Server; s != nil {
		emit(Record{Key: rep.Service, Server: &aggregator.ServerRecord{
			Reporter: rep, WindowMs: r.WindowMs, TimestampMs: r.TimestampMs,
			Requests: s.Requests, CpuUtil: s.CPUUtil, QueueTimeMsAvg: s.QueueTimeMsAvg,
			QueueTimeMsP99: s.QueueTimeMsP99, Inflight: s.Inflight, ClientTimeouts: s.ClientTimeouts,
			RequestsByPriority: s.RequestsByPriority, RequestsByLevel: s.RequestsByLevel,
		}})
	}
	for i := range r.Calls {
		c := &r.Calls[i]
		emit(Record{Key: c.CalleeService, Edge: &aggregator.CallEdge{
			Caller: rep, WindowMs: r.WindowMs, TimestampMs: r.TimestampMs,
			CalleeService: c.CalleeService, CalleeInstance: c.CalleeInstance,
			Requests: c.Requests, Errors: c.Errors, Timeouts: c.Timeouts,
			LatencyMsAvg: c.LatencyMsAvg, LatencyMsP99: c.LatencyMsP99,
		}})
	}
	for i := range r.DryRunDenials {
		d := &r.DryRunDenials[i]
		emit(Record{Key: d.CalleeService, Denial: &aggregator.DryRunDenial{
			Reporter: rep, TimestampMs: r.TimestampMs, CalleeService: d.CalleeService,
			CallerService: d.CallerService, Rule: d.Rule, Count: d.Count,
		}})
	}
}

// Batch is every record of reports in one batch, as one shard would receive it.
func Batch(reports ...*api.Report) *aggregator.ReportBatch {
	b := &aggregator.ReportBatch{}
	for _, r := range reports {
		Split(r, func(rec Record) {
			switch {
			case rec.Server != nil:
				b.Servers = append(b.Servers, rec.Server)
			case rec.Edge != nil:
				b.Edges = append(b.Edges, rec.Edge)
			case rec.Denial != nil:
				b.Denials = append(b.Denials, rec.Denial)
			}
		})
	}
	return b
}
