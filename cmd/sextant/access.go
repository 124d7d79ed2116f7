package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sextant-mesh/sextant/cmd/sextant/ctl"
)

const accessUsage = `usage: sextant access inspect --service S [--json]

  inspect   the callers of S seen in telemetry, read against S's access
            rules: allowed or denied (by which rule), rules no caller uses,
            callers no rule names

Asks the config-center (--config-center, default $SEXTANT_CONFIG_CENTER or
127.0.0.1:7704) with --token (default $SEXTANT_ADMIN_TOKEN, else
$SEXTANT_TOKEN: the service's own token may read its inspection).
`

// access runs `sextant access ...`.
func access(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "inspect" {
		fmt.Fprint(stderr, accessUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("sextant access inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	center := fs.String("config-center", "", "config-center address: host:port or a URL (default $SEXTANT_CONFIG_CENTER, the context's, or 127.0.0.1:7704)")
	token := fs.String("token", "", "credential (default $SEXTANT_ADMIN_TOKEN, $SEXTANT_TOKEN or the context's)")
	contextName := fs.String("context", "", "the context of the context file to use (sextant context)")
	service := fs.String("service", "", "the service to inspect (required)")
	raw := fs.Bool("json", false, "print the config-center's JSON answer")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *service == "" {
		return errors.New("--service is required")
	}
	c, err := ctl.Connect(*contextName, *center, *token)
	if err != nil {
		return err
	}
	var in struct {
		Service string `json:"service"`
		Callers []struct {
			Service    string   `json:"service"`
			Requests   int64    `json:"requests"`
			LastSeenMs int64    `json:"last_seen_ms"`
			Verdict    string   `json:"verdict"`
			Rule       string   `json:"rule"`
			NamedBy    []string `json:"named_by"`
		} `json:"callers"`
		UnusedRules []string `json:"unused_rules"`
		Uncovered   []string `json:"uncovered_callers"`
	}
	path := "/v1/access/inspection?service=" + url.QueryEscape(*service)
	if *raw {
		var b json.RawMessage
		err := c.JSON(http.MethodGet, path, nil, &b)
		if err == nil {
			fmt.Fprintln(stdout, string(b))
		}
		return err
	}
	if err := c.JSON(http.MethodGet, path, nil, &in); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-28s %12s %-20s %-16s %-16s %s\n", "CALLER", "REQUESTS", "LAST SEEN", "VERDICT", "BY RULE", "NAMED BY")
	for _, c := range in.Callers {
		fmt.Fprintf(stdout, "%-28s %12d %-20s %-16s %-16s %s\n", c.Service, c.Requests,
			time.UnixMilli(c.LastSeenMs).UTC().Format(time.DateTime), c.Verdict, dash(c.Rule), dash(strings.Join(c.NamedBy, ",")))
	}
	fmt.Fprintf(stdout, "\nrules no caller uses: %s\ncallers no rule names: %s\n", dash(strings.Join(in.UnusedRules, ", ")), dash(strings.Join(in.Uncovered, ", ")))
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
