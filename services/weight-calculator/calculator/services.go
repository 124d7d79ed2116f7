package calculator

import (
	"context"
	"slices"
	"strings"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
)

func summarize(d Decision) api.ServiceInstances {
	o := d.Overload
	s := api.ServiceInstances{
		ServiceOverview: api.ServiceOverview{Service: d.Service, Shard: d.Shard, RoundAtMs: d.RoundAtMs, Instances: len(d.Weights),
			Overload: api.OverloadSummary{State: o.State, AdmitMinPriority: o.AdmitMinPriority, AdmitMinLevel: o.AdmitMinLevel,
				ShedTarget: o.ShedTarget, QueueTimeMs: o.QueueTimeMs, CPU: o.CPU, TimeoutRatio: o.TimeoutRatio, Reason: o.Reason}},
		Instances: make([]api.InstanceOverview, 0, len(d.Weights)),
	}
	if s.Overload.State == "" { // no server report yet: nothing to control
		s.Overload.State = "normal"
	}
	var errs, latency float64
	for _, w := range d.Weights {
		if w.Ejected {
			s.ServiceOverview.Ejected++
		} else {
			if s.WeightMin == 0 || w.Weight < s.WeightMin {
				s.WeightMin = w.Weight
			}
			s.WeightMax = max(s.WeightMax, w.Weight)
		}
		s.RequestsPerS += w.QPS
		errs += w.ErrorRate * w.QPS
		latency += w.LatencyMs * w.QPS
		s.Instances = append(s.Instances, api.InstanceOverview{Instance: w.Instance, Weight: w.Weight, Ejected: w.Ejected, Reason: w.Reason,
			QPS: w.QPS, Utilization: w.Util, ErrorRate: w.ErrorRate, LatencyMs: w.LatencyMs})
	}
	if s.RequestsPerS > 0 {
		s.ErrorRatio, s.LatencyMs = errs/s.RequestsPerS, latency/s.RequestsPerS
		for i := range s.Instances {
			s.Instances[i].Share = s.Instances[i].QPS / s.RequestsPerS
		}
	}
	return s
}

// Services answers what the shard computes: every owned service's summary.
func (c *Calculator) Services() []api.ServiceOverview {
	names := c.engine.owned()
	out := make([]api.ServiceOverview, 0, len(names))
	for _, name := range names {
		if d, ok := c.engine.decision(name); ok {
			out = append(out, summarize(d).ServiceOverview)
		}
	}
	return out
}

// services serves GET /v1/services: the summaries of the services this
// shard owns (the config-center's overview asks every shard).
func (c *Calculator) services(_ context.Context, rc *app.RequestContext) {
	rc.JSON(consts.StatusOK, map[string]any{"shard": c.cfg.ID, "services": c.Services()})
}

// service serves GET /v1/services/:service: its instances as weighed.
func (c *Calculator) service(_ context.Context, rc *app.RequestContext) {
	name := rc.Param("service")
	if fe := api.Name("service", name, true); fe != nil {
		httpx.WriteError(rc, consts.StatusBadRequest, fe)
		return
	}
	d, ok := c.engine.decision(name)
	if !ok {
		owner, _ := c.members.View().Owner(name)
		httpx.WriteError(rc, consts.StatusNotFound, api.Errorf("service", "not_found",
			"shard %q computes no policy for %q (its owner is %q)", c.cfg.ID, name, owner.ID))
		return
	}
	s := summarize(d)
	slices.SortFunc(s.Instances, func(a, b api.InstanceOverview) int { return strings.Compare(a.Instance, b.Instance) })
	rc.JSON(consts.StatusOK, s)
}
