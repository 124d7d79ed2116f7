package ctl

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/sextant-mesh/sextant/api"
)

// dataPlane is one line of the config-center's GET /v1/dataplanes.
type dataPlane = api.DataPlaneConfig

func fetchDataPlanes(c *Client, service string) ([]dataPlane, error) {
	var got struct {
		DataPlanes []dataPlane `json:"dataplanes"`
	}
	_, err := c.Do(http.MethodGet, "/v1/dataplanes?service="+url.QueryEscape(service), nil, &got)
	return got.DataPlanes, err
}

// statusCmd is `sextant status`: like istioctl proxy-status, every data
// plane and whether it holds the current discovery (mesh-core) and runs
// the current configs (config-center).
func statusCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sextant status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, true)
	meshCore := fs.String("mesh-core", "", "mesh-core HTTP address, host:port or a URL (default $SEXTANT_MESH_CORE or "+DefaultMeshCore+")")
	service := fs.String("service", "", "only this service's data planes (config), or those following it (discovery)")
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
	// Discovery is mesh-core's to tell; without it, config status still helps.
	var polls []api.DataPlaneDiscovery
	var pollErr error
	mc, err := NewClient(firstOf(*meshCore, os.Getenv("SEXTANT_MESH_CORE"), DefaultMeshCore), c.token, "")
	if err != nil {
		return err
	}
	var got struct {
		DataPlanes []api.DataPlaneDiscovery `json:"dataplanes"`
	}
	if _, pollErr = mc.Do(http.MethodGet, "/v1/dataplanes?service="+url.QueryEscape(*service), nil, &got); pollErr == nil {
		polls = got.DataPlanes
	}
	if done, err := emit(stdout, cf.output, map[string]any{"discovery": polls, "config": dps}); done {
		if pollErr != nil {
			fmt.Fprintf(stderr, "discovery: %v\n", pollErr)
		}
		return err
	}
	fmt.Fprintln(stdout, "DISCOVERY (mesh-core: the version each data plane holds)")
	if pollErr != nil {
		fmt.Fprintf(stdout, "  unknown: %v\n", pollErr)
	} else {
		t := newTable(stdout, "CLIENT", "SERVICES", "DISCOVERY", "HELD", "CURRENT", "LAST SEEN")
		for _, p := range polls {
			t.row(p.Client, strings.Join(p.Services, ","), p.State, p.Held, p.Current, ago(p.LastSeenMs)+" ago")
		}
		t.flush()
	}
	fmt.Fprintln(stdout, "\nCONFIG (config-center: the revisions each data plane runs)")
	t := newTable(stdout, "SERVICE", "INSTANCE", "CONFIG", "REVISIONS (applied/in force)", "LAST SEEN")
	for _, d := range dps {
		t.row(d.Service, d.Instance, d.State, revisions(d), ago(d.LastSeenMs)+" ago")
	}
	t.flush()
	fmt.Fprintf(stdout, "%d data planes polling discovery on this mesh-core replica, %d watching their configs on this config-center replica\n", len(polls), len(dps))
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
