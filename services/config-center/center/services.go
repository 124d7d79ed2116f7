package center

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
)

// ServiceList is GET /v1/services: a page of the services the calculator
// shards compute, filtered by name and sorted by trouble or by name.
type ServiceList struct {
	Total  int `json:"total"`
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
	// Partial is true when a shard did not answer: its services are
	// missing (FailedShards names them).
	Partial      bool                  `json:"partial"`
	FailedShards []string              `json:"failed_shards,omitempty"`
	Services     []api.ServiceOverview `json:"services"`
}

const (
	defaultServicesLimit = 100
	maxServicesLimit     = 1000
)

// services serves GET /v1/services?search=&offset=&limit=&sort=trouble|name.
// Every shard is asked at each call: the overview is as fresh as the last
// round, and the config-center keeps nothing of it.
func (d *shardViews) services(ctx context.Context, c *app.RequestContext) {
	offset, fe := intParam(c, "offset", 0, 0, 1<<30)
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	limit, fe := intParam(c, "limit", defaultServicesLimit, 1, maxServicesLimit)
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	order := string(c.Query("sort"))
	if order == "" {
		order = "trouble"
	}
	if order != "trouble" && order != "name" {
		httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("sort", api.CodeInvalidValue, "want trouble or name, got %q", order))
		return
	}
	search := strings.ToLower(string(c.Query("search")))

	shards := d.shards.View().Shards
	type answer struct {
		shard    string
		services []api.ServiceOverview
		err      error
	}
	answers := make([]answer, len(shards))
	auth := string(c.GetHeader(api.AuthorizationHeader))
	var wg sync.WaitGroup
	for i, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got struct {
				Services []api.ServiceOverview `json:"services"`
			}
			err := errors.New("no admin address")
			if s.AdminAddr != "" {
				err = d.fetch(ctx, "http://"+s.AdminAddr+"/v1/services", auth, &got)
			}
			answers[i] = answer{shard: s.ID, services: got.Services, err: err}
		}()
	}
	wg.Wait()

	list := ServiceList{Offset: offset, Limit: limit, Services: []api.ServiceOverview{}}
	var all []api.ServiceOverview
	for _, a := range answers {
		if a.err != nil {
			list.Partial = true
			list.FailedShards = append(list.FailedShards, a.shard)
			continue
		}
		for _, s := range a.services {
			if search == "" || strings.Contains(strings.ToLower(s.Service), search) {
				all = append(all, s)
			}
		}
	}
	if order == "trouble" {
		slices.SortFunc(all, byTrouble)
	} else {
		slices.SortFunc(all, func(a, b api.ServiceOverview) int { return strings.Compare(a.Service, b.Service) })
	}
	list.Total = len(all)
	if offset < len(all) {
		list.Services = all[offset:min(offset+limit, len(all))]
	}
	c.JSON(consts.StatusOK, list)
}

// byTrouble puts first what an operator should look at first: overloaded
// services, then recovering ones, then the most ejected instances, the
// highest error ratio, the slowest; by name among equals.
func byTrouble(a, b api.ServiceOverview) int {
	return cmp.Or(
		cmp.Compare(stateRank(b.Overload.State), stateRank(a.Overload.State)),
		cmp.Compare(b.Ejected, a.Ejected),
		cmp.Compare(b.ErrorRatio, a.ErrorRatio),
		cmp.Compare(b.LatencyMs, a.LatencyMs),
		strings.Compare(a.Service, b.Service),
	)
}

func stateRank(state string) int {
	switch state {
	case "overloaded":
		return 2
	case "recovering":
		return 1
	}
	return 0
}

// service serves GET /v1/services/{service}: its instances as the owning
// shard's last round weighed them.
func (d *shardViews) service(ctx context.Context, c *app.RequestContext) {
	service := c.Param("service")
	var got api.ServiceInstances
	if d.askOwner(ctx, c, service, "/v1/services/", &got, api.Errorf("service", "not_found",
		"no weight-calculator computes %q: it has sent no telemetry lately", service)) {
		c.JSON(consts.StatusOK, got)
	}
}

// intParam reads an integer query parameter within [lo, hi].
func intParam(c *app.RequestContext, name string, def, lo, hi int) (int, *api.FieldError) {
	raw := string(c.Query(name))
	if raw == "" {
		return def, nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil {
		return 0, api.Errorf(name, api.CodeInvalidType, "want an integer, got %q", raw)
	}
	if v < lo || v > hi {
		return 0, api.Errorf(name, api.CodeOutOfRange, "want %d..%d, got %d", lo, hi, v)
	}
	return v, nil
}
