package center

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/tsdb"
)

// historyAPI serves GET /v1/services/{service}/history: a service's weights,
// latencies and shed share over the last minutes, read from the InfluxDB the
// services write to (the weight-calculator's `weight` and `overload`
// measurements, docs/timeseries.md), for the console's charts.
type historyAPI struct {
	tsdb   tsdb.Config
	client *http.Client
}

// ServiceHistory is the answer: per instance, [time ms, weight, latency ms]
// points; the service's [time ms, shed target] points; one point per step.
type ServiceHistory struct {
	Service   string                  `json:"service"`
	Minutes   int                     `json:"minutes"`
	StepMs    int64                   `json:"step_ms"`
	Instances map[string][][3]float64 `json:"instances"`
	Shed      [][2]float64            `json:"shed"`
}

const (
	historyMaxMinutes = 24 * 60
	historyPoints     = 300 // about one point per step, per series
)

func (h *historyAPI) serve(ctx context.Context, c *app.RequestContext) {
	service := c.Param("service")
	if fe := api.Name("service", service, true); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	minutes := 15
	if m := string(c.Query("minutes")); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > historyMaxMinutes {
			httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("minutes", api.CodeOutOfRange, "want 1..%d", historyMaxMinutes))
			return
		}
		minutes = n
	}
	if h.tsdb.URL == "" {
		httpx.WriteError(c, consts.StatusNotFound, api.Errorf("", "no_time_series",
			"the config-center has no InfluxDB configured (--influx-url): no history, only the live policy"))
		return
	}
	step := max(time.Second, time.Duration(minutes)*time.Minute/historyPoints).Truncate(time.Second)
	since := fmt.Sprintf("time > now() - %dm", minutes)
	svc := influxString(service)
	q := fmt.Sprintf(`SELECT mean("weight"), mean("latency_ms") FROM "weight" WHERE "service" = %s AND %s GROUP BY time(%s), "instance" fill(none);`+
		`SELECT mean("shed_target") FROM "overload" WHERE "service" = %s AND %s GROUP BY time(%s) fill(none)`,
		svc, since, step, svc, since, step)
	results, err := h.query(ctx, q)
	if err != nil {
		httpx.WriteError(c, consts.StatusBadGateway, api.Errorf("", "unavailable", "InfluxDB: %v", err))
		return
	}
	out := ServiceHistory{Service: service, Minutes: minutes, StepMs: step.Milliseconds(), Instances: map[string][][3]float64{}, Shed: [][2]float64{}}
	if len(results) > 0 {
		for _, s := range results[0].Series {
			points := make([][3]float64, 0, len(s.Values))
			for _, v := range s.Values {
				if len(v) >= 3 {
					points = append(points, [3]float64{v[0], v[1], v[2]})
				}
			}
			out.Instances[s.Tags["instance"]] = points
		}
	}
	if len(results) > 1 {
		for _, s := range results[1].Series {
			for _, v := range s.Values {
				if len(v) >= 2 {
					out.Shed = append(out.Shed, [2]float64{v[0], v[1]})
				}
			}
		}
	}
	c.JSON(consts.StatusOK, out)
}

// influxResult is one statement's answer from InfluxDB's /query.
type influxResult struct {
	Series []struct {
		Tags   map[string]string `json:"tags"`
		Values [][]float64       `json:"values"`
	} `json:"series"`
	Error string `json:"error"`
}

// query runs InfluxQL statements on the database the services write to;
// times come back in milliseconds.
func (h *historyAPI) query(ctx context.Context, q string) ([]influxResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	params := url.Values{"db": {h.tsdb.Database}, "q": {q}, "epoch": {"ms"}}
	if h.tsdb.RetentionPolicy != "" {
		params.Set("rp", h.tsdb.RetentionPolicy)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(h.tsdb.URL, "/")+"/query?"+params.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if user, password, _ := strings.Cut(h.tsdb.Token, ":"); user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	var body struct {
		Results []influxResult `json:"results"`
		Error   string         `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Error != "" {
		return nil, fmt.Errorf("%s", body.Error)
	}
	for _, r := range body.Results {
		if r.Error != "" {
			return nil, fmt.Errorf("%s", r.Error)
		}
	}
	return body.Results, nil
}

// influxString quotes s as an InfluxQL string literal.
func influxString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
