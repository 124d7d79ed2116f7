package center

import (
	"context"
	"encoding/json"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
)

// UnitsReport answers GET /v1/units/report?service=S: per rule of S's
// unit_routing, what its callers' SDKs reported deciding of the requests it
// matched, by unit and outcome (observed, observed_denied, routed, denied,
// fallback, failed), summed over the callers since the owning
// weight-calculator shard started; Routes breaks the counts down by caller.
type UnitsReport struct {
	Service  string           `json:"service"`
	Shard    string           `json:"shard"`
	Revision int64            `json:"revision"` // of the unit_routing in force (0: none)
	Rules    []UnitRuleReport `json:"rules"`
	Routes   []UnitRouteCount `json:"routes"`
}

// UnitRuleReport is one rule of the document in force (or a rule no longer
// in it that still has counts) and its counts.
type UnitRuleReport struct {
	Rule    string `json:"rule"`
	Unit    string `json:"unit,omitempty"`
	Mode    string `json:"mode,omitempty"` // "" for a rule no longer in the document
	Percent *int   `json:"percent,omitempty"`
	// Outcomes are counts by outcome, over every unit the rule sent to.
	Outcomes map[string]int64 `json:"outcomes"`
	// ByUnit are counts by unit, then outcome (a fallback counts under the
	// rule's unit).
	ByUnit map[string]map[string]int64 `json:"by_unit"`
}

// UnitRouteCount is one counter of the shard.
type UnitRouteCount struct {
	CallerService string `json:"caller_service"`
	Rule          string `json:"rule"`
	Unit          string `json:"unit"`
	Outcome       string `json:"outcome"`
	Count         int64  `json:"count"`
	LastSeenMs    int64  `json:"last_seen_ms"`
}

func (d *shardViews) unitsReport(ctx context.Context, c *app.RequestContext) {
	service := string(c.Query("service"))
	var got struct {
		Shard  string           `json:"shard"`
		Routes []UnitRouteCount `json:"routes"`
	}
	if !d.askOwner(ctx, c, service, "/v1/units?service=", &got, nil) {
		return
	}
	r := UnitsReport{Service: service, Shard: got.Shard, Rules: []UnitRuleReport{}, Routes: got.Routes}
	if r.Routes == nil {
		r.Routes = []UnitRouteCount{}
	}
	byRule := map[string]*UnitRuleReport{}
	for _, e := range d.view.Applying(service) {
		if e.Kind != api.KindUnitRouting || e.Scope != service {
			continue
		}
		var doc api.UnitRouting
		if json.Unmarshal(e.Document, &doc) != nil {
			continue
		}
		r.Revision = e.Revision
		for _, ru := range doc.Rules {
			r.Rules = append(r.Rules, UnitRuleReport{Rule: ru.Name, Unit: ru.Unit, Mode: ru.Mode, Percent: ru.Percent,
				Outcomes: map[string]int64{}, ByUnit: map[string]map[string]int64{}})
		}
	}
	for i := range r.Rules {
		byRule[r.Rules[i].Rule] = &r.Rules[i]
	}
	for _, rc := range r.Routes {
		rr := byRule[rc.Rule]
		if rr == nil {
			r.Rules = append(r.Rules, UnitRuleReport{Rule: rc.Rule, Outcomes: map[string]int64{}, ByUnit: map[string]map[string]int64{}})
			// The slice may have moved: index again.
			for i := range r.Rules {
				byRule[r.Rules[i].Rule] = &r.Rules[i]
			}
			rr = byRule[rc.Rule]
		}
		rr.Outcomes[rc.Outcome] += rc.Count
		if rr.ByUnit[rc.Unit] == nil {
			rr.ByUnit[rc.Unit] = map[string]int64{}
		}
		rr.ByUnit[rc.Unit][rc.Outcome] += rc.Count
	}
	c.JSON(consts.StatusOK, r)
}
