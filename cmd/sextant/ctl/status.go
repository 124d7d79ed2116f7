package ctl

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// dataPlane is one line of the config-center's GET /v1/dataplanes.
type dataPlane struct {
	Service    string           `json:"service"`
	Instance   string           `json:"instance"`
	State      string           `json:"state"`
	Current    map[string]int64 `json:"current"`
	Sent       map[string]int64 `json:"sent"`
	Applied    map[string]int64 `json:"applied"`
	LastSeenMs int64            `json:"last_seen_ms"`
}

func fetchDataPlanes(c *Client, service string) ([]dataPlane, error) {
	var got struct {
		DataPlanes []dataPlane `json:"dataplanes"`
	}
	_, err := c.Do(http.MethodGet, "/v1/dataplanes?service="+url.QueryEscape(service), nil, &got)
	return got.DataPlanes, err
}

// statusCmd is `sextant status`: like istioctl proxy-status, for config.
func statusCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sextant status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, true)
	service := fs.String("service", "", "only this service's data planes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	dps, err := fetchDataPlanes(c, *service)
	if err != nil {
		return err
	}
	if done, err := emit(stdout, cf.output, map[string]any{"dataplanes": dps}); done {
		return err
	}
	t := newTable(stdout, "SERVICE", "INSTANCE", "CONFIG", "REVISIONS (applied/in force)", "LAST SEEN")
	for _, d := range dps {
		t.row(d.Service, d.Instance, d.State, revisions(d), ago(d.LastSeenMs)+" ago")
	}
	t.flush()
	fmt.Fprintf(stdout, "%d data planes watching their configs on this config-center replica\n", len(dps))
	return nil
}

func revisions(d dataPlane) string {
	keys := make([]string, 0, len(d.Current))
	for k := range d.Current {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		applied := "-"
		if r, ok := d.Applied[k]; ok {
			applied = fmt.Sprint(r)
		}
		parts = append(parts, fmt.Sprintf("%s %s/%d", k, applied, d.Current[k]))
	}
	if len(parts) == 0 {
		return "(no configs)"
	}
	return strings.Join(parts, ", ")
}
