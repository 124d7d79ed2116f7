package center

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
)

// Inspection is GET /v1/access/inspection?service=S: the callers of S seen
// in telemetry read against S's access rules, so that an owner can write
// rules for a service that already has traffic, and see new risk (a caller
// no rule names).
type Inspection struct {
	Service string            `json:"service"`
	Shard   string            `json:"shard"`
	Rules   []api.AccessRule  `json:"rules"`
	Callers []InspectedCaller `json:"callers"`
	// UnusedRules are rules none of whose callers was seen.
	UnusedRules []string `json:"unused_rules"`
	// Uncovered are callers seen that no rule names.
	Uncovered []string `json:"uncovered_callers"`
}

// InspectedCaller is one caller seen, and what the rules do to it (for
// rules without a method list; a rule for some methods only is listed in
// Rules and left out of the verdict).
type InspectedCaller struct {
	Service    string `json:"service"`
	Requests   int64  `json:"requests"`
	LastSeenMs int64  `json:"last_seen_ms"`
	// Verdict is allowed, denied (an enforced rule) or dry_run_denied.
	Verdict string `json:"verdict"`
	Rule    string `json:"rule,omitempty"`
	// NamedBy are the rules that list the caller.
	NamedBy []string `json:"named_by"`
}

func (d *shardViews) inspect(ctx context.Context, c *app.RequestContext) {
	service := string(c.Query("service"))
	var got struct {
		Shard   string `json:"shard"`
		Callers []struct {
			Service    string `json:"service"`
			Requests   int64  `json:"requests"`
			LastSeenMs int64  `json:"last_seen_ms"`
		} `json:"callers"`
	}
	if !d.askOwner(ctx, c, service, "/v1/callers?service=", &got, nil) {
		return
	}
	ac := d.accessRules(service)
	in := Inspection{Service: service, Shard: got.Shard, Rules: ac.Rules, Callers: []InspectedCaller{},
		UnusedRules: []string{}, Uncovered: []string{}}
	if in.Rules == nil {
		in.Rules = []api.AccessRule{}
	}
	used := map[string]bool{}
	for _, seen := range got.Callers {
		ic := InspectedCaller{Service: seen.Service, Requests: seen.Requests, LastSeenMs: seen.LastSeenMs, Verdict: "allowed", NamedBy: []string{}}
		for _, r := range ac.Rules {
			if slices.Contains(r.Callers, seen.Service) {
				ic.NamedBy = append(ic.NamedBy, r.Name)
				used[r.Name] = true
			}
		}
		if denied, rule, dryRun := ac.Check(seen.Service, ""); denied {
			ic.Verdict, ic.Rule = "denied", rule
			if dryRun {
				ic.Verdict = "dry_run_denied"
			}
		}
		if len(ic.NamedBy) == 0 {
			in.Uncovered = append(in.Uncovered, seen.Service)
		}
		in.Callers = append(in.Callers, ic)
	}
	for _, r := range ac.Rules {
		if !used[r.Name] {
			in.UnusedRules = append(in.UnusedRules, r.Name)
		}
	}
	c.JSON(consts.StatusOK, in)
}

// accessRules are every access rule that applies to service.
func (d *shardViews) accessRules(service string) api.AccessControl {
	var out api.AccessControl
	for _, e := range d.view.Applying(service) {
		if e.Kind != api.KindAccessControl {
			continue
		}
		var ac api.AccessControl
		if json.Unmarshal(e.Document, &ac) == nil {
			out.Rules = append(out.Rules, ac.Rules...)
		}
	}
	return out
}
