package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sextant-mesh/sextant/api"
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
	center := fs.String("config-center", envOr("SEXTANT_CONFIG_CENTER", "127.0.0.1:7704"), "config-center address: host:port or a URL")
	operator := fs.String("token", os.Getenv("SEXTANT_ADMIN_TOKEN"), "operator token (default $SEXTANT_ADMIN_TOKEN)")
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
	if *operator == "" {
		return errors.New("no operator token: set SEXTANT_ADMIN_TOKEN (sextant dev prints it) or pass --token")
	}
	c := newAPIClient(*center, *operator)
	switch cmd {
	case "create":
		var issued api.TokenIssued
		if err := c.do(http.MethodPost, "/v1/tokens", req, &issued); err != nil {
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
		if err := c.do(http.MethodGet, "/v1/tokens?service="+url.QueryEscape(req.Service), nil, &out); err != nil {
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
		if err := c.do(http.MethodDelete, "/v1/tokens/"+url.PathEscape(positional[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "token %s revoked\n", positional[0])
	}
	return nil
}

// apiClient calls a Sextant API with one credential.
type apiClient struct{ base, token string }

func newAPIClient(addr, token string) *apiClient {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &apiClient{base: strings.TrimSuffix(addr, "/"), token: token}
}

// raw sends a request without a body and returns the answer's body.
func (c *apiClient) raw(method, path string) ([]byte, error) {
	var out json.RawMessage
	err := c.do(method, path, nil, &out)
	return out, err
}

// do sends one request; an error answer comes back as its JSON message.
func (c *apiClient) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set(api.AuthorizationHeader, api.BearerPrefix+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var eb api.ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
			return fmt.Errorf("%s: %v", resp.Status, eb.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
