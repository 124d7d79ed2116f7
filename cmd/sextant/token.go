package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/cmd/sextant/ctl"
)

const tokenUsage = `usage: sextant token <create|list|revoke> [flags]

  create --service S [--namespace N] [--ttl 720h]   issue a data-plane token; prints it on stdout
  create --operator NAME --role reader|writer --services S1,S2|*
                                                     issue an operator's token bound to those services
  list [--service S]                                 list tokens (never their secrets)
  revoke ID                                          revoke a token at once

Every command asks the config-center (--config-center, default
$SEXTANT_CONFIG_CENTER or 127.0.0.1:7704) with an operator token
(--token, default $SEXTANT_ADMIN_TOKEN).
`

// token runs `sextant token ...`: data-plane credentials, through the
// config-center's /v1/tokens.
func token(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return flag.ErrHelp
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("sextant token "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	center := fs.String("config-center", "", "config-center address: host:port or a URL (default $SEXTANT_CONFIG_CENTER, the context's, or 127.0.0.1:7704)")
	operator := fs.String("token", "", "operator token (default $SEXTANT_ADMIN_TOKEN or the context's)")
	contextName := fs.String("context", "", "the context of the context file to use (sextant context)")
	var req api.TokenRequest
	switch cmd {
	case "create":
		fs.StringVar(&req.Service, "service", "", "the service whose data planes use the token (required)")
		fs.StringVar(&req.Namespace, "namespace", "", "the service's namespace (recorded with the token)")
		fs.StringVar(&req.TTL, "ttl", "", "lifetime (default 720h, at most 8784h)")
		fs.StringVar(&req.Operator, "operator", "", "issue an operator's token for this person or tool (with --role and --services)")
		fs.StringVar(&req.Role, "role", "", "the operator's role: reader or writer")
		fs.Func("services", `comma-separated services the operator may act on ("*": all)`, func(v string) error {
			req.Services = strings.Split(v, ",")
			return nil
		})
	case "list":
		fs.StringVar(&req.Service, "service", "", "only this service's tokens")
	case "revoke":
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, tokenUsage)
		return nil
	default:
		fmt.Fprint(stderr, tokenUsage)
		return fmt.Errorf("unknown command %q", cmd)
	}
	// Flags may follow the ID too (revoke ID --token T).
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional, args = append(positional, fs.Arg(0)), fs.Args()[1:]
	}
	c, err := ctl.Connect(*contextName, *center, *operator)
	if err != nil {
		return err
	}
	switch cmd {
	case "create":
		var issued api.TokenIssued
		if err := c.JSON(http.MethodPost, "/v1/tokens", req, &issued); err != nil {
			return err
		}
		expires := time.UnixMilli(issued.ExpiresAtMs).UTC().Format(time.RFC3339)
		if issued.Operator != "" {
			fmt.Fprintf(stderr, "token %s for operator %s (%s of %s), expires %s\n",
				issued.ID, issued.Operator, issued.Role, strings.Join(issued.Services, ","), expires)
		} else {
			fmt.Fprintf(stderr, "token %s for service %s, expires %s; give it to the data planes as SEXTANT_TOKEN\n",
				issued.ID, issued.Service, expires)
		}
		fmt.Fprintln(stdout, issued.Token)
	case "list":
		var out struct {
			Tokens []api.TokenInfo `json:"tokens"`
		}
		if err := c.JSON(http.MethodGet, "/v1/tokens?service="+url.QueryEscape(req.Service), nil, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-18s %-24s %-20s %-20s %s\n", "ID", "HOLDER", "CREATED", "EXPIRES", "BY")
		for _, t := range out.Tokens {
			holder := t.Service
			if t.Operator != "" {
				holder = "operator " + t.Operator + " (" + t.Role + " of " + strings.Join(t.Services, ",") + ")"
			}
			fmt.Fprintf(stdout, "%-18s %-24s %-20s %-20s %s\n", t.ID, holder,
				time.UnixMilli(t.CreatedAtMs).UTC().Format(time.DateTime), time.UnixMilli(t.ExpiresAtMs).UTC().Format(time.DateTime), t.CreatedBy)
		}
	case "revoke":
		if len(positional) != 1 {
			return errors.New("usage: sextant token revoke ID")
		}
		if err := c.JSON(http.MethodDelete, "/v1/tokens/"+url.PathEscape(positional[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "token %s revoked\n", positional[0])
	}
	return nil
}
