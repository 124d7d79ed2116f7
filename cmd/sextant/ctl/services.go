package ctl

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sextant-mesh/sextant/api"
)

// serviceList is the config-center's GET /v1/services.
type serviceList struct {
	Total        int                   `json:"total"`
	Offset       int                   `json:"offset"`
	Limit        int                   `json:"limit"`
	Partial      bool                  `json:"partial"`
	FailedShards []string              `json:"failed_shards,omitempty"`
	Services     []api.ServiceOverview `json:"services"`
}

func fetchServices(c *Client, search, sort string, offset, limit int) (serviceList, error) {
	q := url.Values{"search": {search}, "sort": {sort}, "offset": {strconv.Itoa(offset)}, "limit": {strconv.Itoa(limit)}}
	var l serviceList
	_, err := c.Do(http.MethodGet, "/v1/services?"+q.Encode(), nil, &l)
	return l, err
}

func servicesCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sextant services", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, true)
	search := fs.String("search", "", "only services whose name contains this")
	sort := fs.String("sort", "trouble", "trouble (overloaded, ejections, errors, latency first) or name")
	offset := fs.Int("offset", 0, "skip this many")
	limit := fs.Int("limit", 100, "at most this many (1..1000)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	l, err := fetchServices(c, *search, *sort, *offset, *limit)
	if err != nil {
		return err
	}
	if done, err := emit(stdout, cf.output, l); done {
		return err
	}
	printServices(stdout, l)
	return nil
}

func printServices(w io.Writer, l serviceList) {
	t := newTable(w, "SERVICE", "INSTANCES", "EJECTED", "WEIGHTS", "REQ/S", "ERRORS", "LATENCY", "OVERLOAD", "SHED", "SHARD")
	for _, s := range l.Services {
		weights := fmt.Sprintf("%d..%d", s.WeightMin, s.WeightMax)
		if s.WeightMin == s.WeightMax {
			weights = fmt.Sprint(s.WeightMax)
		}
		t.row(s.Service, s.Instances, s.Ejected, weights, fmt.Sprintf("%.1f", s.RequestsPerS), percent(s.ErrorRatio),
			fmt.Sprintf("%.1fms", s.LatencyMs), overloadOf(s.Overload), percent(s.Overload.ShedTarget), s.Shard)
	}
	t.flush()
	fmt.Fprintf(w, "%d of %d services", len(l.Services), l.Total)
	if l.Offset > 0 {
		fmt.Fprintf(w, " from %d", l.Offset)
	}
	if l.Partial {
		fmt.Fprintf(w, "; PARTIAL: shards %s did not answer", strings.Join(l.FailedShards, ", "))
	}
	fmt.Fprintln(w)
}

func overloadOf(o api.OverloadSummary) string {
	if o.AdmitMinLevel > 0 {
		return fmt.Sprintf("%s (level %d)", o.State, o.AdmitMinLevel)
	}
	return o.State
}

// description is `sextant describe service S`.
type description struct {
	Service    api.ServiceInstances `json:"service"`
	Configs    []api.Entry          `json:"configs"`
	Pins       []api.Pin            `json:"pins"`
	DataPlanes []dataPlane          `json:"dataplanes"`
	// Why a part is missing (e.g. no telemetry yet), by part.
	Missing map[string]string `json:"missing,omitempty"`
}

func describeCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sextant describe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, true)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "service" && pos[0] != "svc") {
		return fmt.Errorf("usage: sextant describe service NAME")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	name := pos[1]
	d := description{Missing: map[string]string{}}
	if _, err := c.Do(http.MethodGet, "/v1/services/"+url.PathEscape(name), nil, &d.Service); err != nil {
		if st := StatusOf(err); st != http.StatusNotFound && st != http.StatusServiceUnavailable {
			return err
		}
		d.Missing["weights"] = err.Error()
		d.Service.Service = name
	}
	var cfgs struct {
		Configs []api.Entry `json:"configs"`
		Pins    []api.Pin   `json:"pins"`
	}
	if _, err := c.Do(http.MethodGet, "/v1/configs?service="+url.QueryEscape(name), nil, &cfgs); err != nil {
		return err
	}
	d.Configs, d.Pins = cfgs.Configs, cfgs.Pins
	if d.DataPlanes, err = fetchDataPlanes(c, name); err != nil {
		return err
	}
	if done, err := emit(stdout, cf.output, d); done {
		return err
	}
	printDescription(stdout, d)
	return nil
}

func printDescription(w io.Writer, d description) {
	s := d.Service
	fmt.Fprintf(w, "Service:   %s\n", s.Service)
	if why, ok := d.Missing["weights"]; ok {
		fmt.Fprintf(w, "Weights:   none (%s)\n", why)
	} else {
		o := s.Overload
		fmt.Fprintf(w, "Shard:     %s (round %s ago)\n", s.Shard, ago(s.RoundAtMs))
		fmt.Fprintf(w, "Traffic:   %.1f req/s, %s errors, %.1fms mean latency\n", s.RequestsPerS, percent(s.ErrorRatio), s.LatencyMs)
		fmt.Fprintf(w, "Overload:  %s, admits level >= %d (priority >= %d), shed target %s; queue %.1fms, cpu %.2f, timeouts %s",
			o.State, o.AdmitMinLevel, o.AdmitMinPriority, percent(o.ShedTarget), o.QueueTimeMs, o.CPU, percent(o.TimeoutRatio))
		if o.Reason != "" {
			fmt.Fprintf(w, " (%s)", o.Reason)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "\nInstances:")
		t := newTable(w, "  INSTANCE", "WEIGHT", "SHARE", "REQ/S", "ERRORS", "LATENCY", "UTIL", "REASON")
		for _, in := range s.Instances {
			weight := strconv.Itoa(int(in.Weight))
			if in.Ejected {
				weight = "ejected"
			}
			t.row("  "+in.Instance, weight, percent(in.Share), fmt.Sprintf("%.1f", in.QPS), percent(in.ErrorRate),
				fmt.Sprintf("%.1fms", in.LatencyMs), fmt.Sprintf("%.2f", in.Utilization), in.Reason)
		}
		t.flush()
	}
	fmt.Fprintln(w, "\nConfigs:")
	if len(d.Configs) == 0 {
		fmt.Fprintln(w, "  none")
	} else {
		t := newTable(w, "  KIND", "SCOPE", "REVISION", "ROLLOUT", "UPDATED BY", "UPDATED")
		for _, e := range d.Configs {
			t.row("  "+e.Kind, e.Scope, e.Revision, rolloutOf(e), e.UpdatedBy, when(e.UpdatedAtMs))
		}
		t.flush()
	}
	if len(d.Pins) > 0 {
		fmt.Fprintln(w, "\nPins:")
		for _, p := range d.Pins {
			fmt.Fprintf(w, "  %s/%s at revision %d (by %s)\n", p.Kind, p.Scope, p.Revision, p.PinnedBy)
		}
	}
	fmt.Fprintln(w, "\nData planes (config):")
	if len(d.DataPlanes) == 0 {
		fmt.Fprintln(w, "  none watching")
		return
	}
	counts := map[string]int{}
	for _, dp := range d.DataPlanes {
		counts[dp.State]++
	}
	fmt.Fprintf(w, "  %d watching: %d SYNCED, %d STALE, %d NOT SENT\n", len(d.DataPlanes), counts["SYNCED"], counts["STALE"], counts["NOT SENT"])
}
