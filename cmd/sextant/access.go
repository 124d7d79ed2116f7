package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
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
	center := fs.String("config-center", envOr("SEXTANT_CONFIG_CENTER", "127.0.0.1:7704"), "config-center address: host:port or a URL")
	token := fs.String("token", envOr("SEXTANT_ADMIN_TOKEN", os.Getenv("SEXTANT_TOKEN")), "credential")
	service := fs.String("service", "", "the service to inspect (required)")
	raw := fs.Bool("json", false, "print the config-center's JSON answer")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *service == "" {
		return errors.New("--service is required")
	}
	if *token == "" {
		return errors.New("no credential: set SEXTANT_ADMIN_TOKEN or SEXTANT_TOKEN, or pass --token")
	}
	c := newAPIClient(*center, *token)
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
		b, err := c.raw(http.MethodGet, path)
		if err == nil {
			fmt.Fprintln(stdout, string(b))
		}
		return err
	}
	if err := c.do(http.MethodGet, path, nil, &in); err != nil {
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
