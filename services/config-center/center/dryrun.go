package center

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/shard"
)

// shardViews serves what the weight-calculator shards know, asking the
// shard that owns a service (or every shard, for the overview): the
// dry-run report, the callers seen, the services' weights and overload.
type shardViews struct {
	shards *shard.Membership
	view   *view
	client *http.Client
}

// DryRunAnswer lists would-be denials per caller and rule.
type DryRunAnswer struct {
	Service string           `json:"service"`
	Shard   string           `json:"shard"`
	Rules   []api.AccessRule `json:"dry_run_rules"`
	Denials json.RawMessage  `json:"denials"`
}

// report serves GET /v1/access/dry-run?service=S: the callers that the
// service's dry_run access rules would block, as its data planes reported
// them. The counts live on the weight-calculator shard that owns S (the
// mixer routes dry-run denials there).
func (d *shardViews) report(ctx context.Context, c *app.RequestContext) {
	service := string(c.Query("service"))
	var got struct {
		Shard   string          `json:"shard"`
		Denials json.RawMessage `json:"denials"`
	}
	if !d.askOwner(ctx, c, service, "/v1/dry-run?service=", &got, nil) {
		return
	}
	c.JSON(consts.StatusOK, DryRunAnswer{Service: service, Shard: got.Shard, Rules: d.dryRunRules(service), Denials: got.Denials})
}

// askOwner reads ?service, asks the shard that owns it for path (the
// service's name appended, escaped) with the caller's own credential (the
// shard checks it), and decodes the answer into v; on any failure it
// answers the request itself (400, 503 without shards, 502) and ok is
// false. notFound, when set, answers a shard's 404 instead of 502.
func (d *shardViews) askOwner(ctx context.Context, c *app.RequestContext, service, path string, v any, notFound *api.FieldError) (ok bool) {
	if fe := api.Name("service", service, true); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return false
	}
	owner, found := d.shards.View().Owner(service)
	if !found || owner.AdminAddr == "" {
		httpx.WriteError(c, consts.StatusServiceUnavailable, api.Errorf("", "unavailable", "no weight-calculator shard holds telemetry now"))
		return false
	}
	err := d.fetch(ctx, "http://"+owner.AdminAddr+path+url.PathEscape(service), string(c.GetHeader(api.AuthorizationHeader)), v)
	var st statusError
	switch {
	case err == nil:
		return true
	case notFound != nil && errors.As(err, &st) && st.code == http.StatusNotFound:
		httpx.WriteError(c, consts.StatusNotFound, notFound)
	default:
		httpx.WriteError(c, consts.StatusBadGateway, api.Errorf("", "unavailable", "asking shard %q: %v", owner.ID, err))
	}
	return false
}

func (d *shardViews) fetch(ctx context.Context, url, auth string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set(api.AuthorizationHeader, auth)
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError{resp.StatusCode}
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// dryRunRules are the service's access rules in dry_run mode, to read the
// denials against.
func (d *shardViews) dryRunRules(service string) []api.AccessRule {
	out := []api.AccessRule{}
	for _, r := range d.accessRules(service).Rules {
		if r.Mode == api.ModeDryRun {
			out = append(out, r)
		}
	}
	return out
}

// statusError is a shard's answer other than 200.
type statusError struct{ code int }

func (e statusError) Error() string { return fmt.Sprintf("status %d", e.code) }
