package center

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
)

// DataPlane is one instance watching its configs (the contract's type).
type DataPlane = api.DataPlaneConfig

// Data-plane states.
const (
	StateSynced  = api.StateSynced
	StateStale   = api.StateStale
	StateNotSent = api.StateNotSent
)

// dataPlanes lists what the book knows of service's instances (every
// service when empty), against the configs in force.
func (b *statusBook) dataPlanes(service string, current func(service, instance string, calls []string) map[string]int64) []DataPlane {
	b.mu.Lock()
	defer b.mu.Unlock()
	cutoff := b.now().Add(-b.ttl)
	out := []DataPlane{}
	for k, s := range b.sentTo {
		if (service != "" && k.service != service) || s.at.Before(cutoff) {
			continue
		}
		dp := DataPlane{Service: k.service, Instance: k.instance, Current: current(k.service, k.instance, s.calls), Sent: s.revs,
			Applied: map[string]int64{}, LastSeenMs: s.at.UnixMilli()}
		if a, ok := b.applied[k]; ok {
			dp.Applied = a.revs
		}
		switch {
		case !maps.Equal(dp.Sent, dp.Current):
			dp.State = StateNotSent
		case !maps.Equal(dp.Applied, dp.Current):
			dp.State = StateStale
		default:
			dp.State = StateSynced
		}
		out = append(out, dp)
	}
	slices.SortFunc(out, func(a, b DataPlane) int {
		return strings.Compare(a.Service+"\x00"+a.Instance, b.Service+"\x00"+b.Instance)
	})
	return out
}

// dataPlanes serves GET /v1/dataplanes?service=S: the instances that watch
// their configs on this replica, and whether each runs the current ones.
func (w *watcher) dataPlanes(_ context.Context, c *app.RequestContext) {
	service := string(c.Query("service"))
	if fe := api.Name("service", service, false); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	current := func(service, instance string, calls []string) map[string]int64 {
		a, _ := w.answer(service, instance, calls)
		return revisionsOf(a)
	}
	c.JSON(consts.StatusOK, map[string]any{"dataplanes": w.status.dataPlanes(service, current)})
}

// revisionsOf maps an answer's configs to their revisions, by "kind/scope".
func revisionsOf(a api.WatchAnswer) map[string]int64 {
	revs := make(map[string]int64, len(a.Configs))
	for _, e := range a.Configs {
		revs[e.Kind+"/"+e.Scope] = e.Revision
	}
	return revs
}
