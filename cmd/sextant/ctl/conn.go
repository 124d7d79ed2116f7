// Package ctl is the operators' side of the sextant command: governance
// config, the services and their weights, the data planes' status, a live
// top, export and import, all through the config-center's API with a
// credential taken from flags, the environment or a context file.
package ctl

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/sextant-mesh/sextant/api"
)

// DefaultConfigCenter is the config-center of `sextant dev`.
const DefaultConfigCenter = "127.0.0.1:7704"

// ContextFile holds named connections, like kubectl's kubeconfig.
type ContextFile struct {
	Current  string    `json:"current-context,omitempty"`
	Contexts []Context `json:"contexts"`
}

// Context is one control plane and the credential to use with it.
type Context struct {
	Name         string `json:"name"`
	ConfigCenter string `json:"config-center"`
	Token        string `json:"token,omitempty"`
	// CAFile verifies an https config-center (default: the system's roots).
	CAFile string `json:"ca-file,omitempty"`
}

// ContextPath is where the context file lives: $SEXTANT_CONFIG, else
// $XDG_CONFIG_HOME/sextant/config, else ~/.config/sextant/config.
func ContextPath() string {
	if p := os.Getenv("SEXTANT_CONFIG"); p != "" {
		return p
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "sextant", "config")
}

// LoadContexts reads the context file; a missing file is an empty one.
func LoadContexts() (*ContextFile, error) {
	b, err := os.ReadFile(ContextPath())
	if errors.Is(err, os.ErrNotExist) {
		return &ContextFile{}, nil
	}
	if err != nil {
		return nil, err
	}
	var f ContextFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", ContextPath(), err)
	}
	return &f, nil
}

// Save writes the context file, readable by its owner only (it holds tokens).
func (f *ContextFile) Save() error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	p := ContextPath()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Find returns the named context (the current one when name is empty).
func (f *ContextFile) Find(name string) (*Context, bool) {
	if name == "" {
		name = f.Current
	}
	for i := range f.Contexts {
		if f.Contexts[i].Name == name {
			return &f.Contexts[i], true
		}
	}
	return nil, false
}

// connFlags are the flags every command that talks to the API takes.
type connFlags struct {
	context, center, token, output string
}

func (c *connFlags) register(fs *flag.FlagSet, outputs bool) {
	fs.StringVar(&c.context, "context", "", "the context of the context file to use (default: its current one)")
	fs.StringVar(&c.center, "config-center", "", "config-center address, host:port or a URL (default $SEXTANT_CONFIG_CENTER, the context's, or "+DefaultConfigCenter+")")
	fs.StringVar(&c.token, "token", "", "credential (default $SEXTANT_ADMIN_TOKEN, $SEXTANT_TOKEN, or the context's)")
	if outputs {
		fs.StringVar(&c.output, "o", "table", "output: table, json or yaml")
	}
}

// client resolves the connection: a flag beats the environment, which
// beats the context file, which beats the default.
func (c *connFlags) client() (*Client, error) {
	if c.output != "" && c.output != "table" && c.output != "json" && c.output != "yaml" {
		return nil, fmt.Errorf("-o %s: want table, json or yaml", c.output)
	}
	return Connect(c.context, c.center, c.token)
}

// Connect resolves a connection from flag values (empty: not given), the
// environment and the context file (contextName, or its current context).
func Connect(contextName, center, token string) (*Client, error) {
	f, err := LoadContexts()
	if err != nil {
		return nil, err
	}
	ctx, found := f.Find(contextName)
	if contextName != "" && !found {
		return nil, fmt.Errorf("no context %q in %s", contextName, ContextPath())
	}
	if ctx == nil {
		ctx = &Context{}
	}
	center = firstOf(center, os.Getenv("SEXTANT_CONFIG_CENTER"), ctx.ConfigCenter, DefaultConfigCenter)
	token = firstOf(token, os.Getenv("SEXTANT_ADMIN_TOKEN"), os.Getenv("SEXTANT_TOKEN"), ctx.Token)
	if token == "" {
		return nil, errors.New("no credential: pass --token, set SEXTANT_ADMIN_TOKEN (sextant dev prints one), or save it in a context (sextant context set)")
	}
	return NewClient(center, token, ctx.CAFile)
}

// JSON is Do without the answer's headers.
func (c *Client) JSON(method, path string, in, out any) error {
	_, err := c.Do(method, path, in, out)
	return err
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Client calls the config-center's API with one credential.
type Client struct {
	base, token string
	http        *http.Client
}

// NewClient makes a client of the API at addr (host:port or a URL).
func NewClient(addr, token, caFile string) (*Client, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no certificate in it", caFile)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	}
	return &Client{base: strings.TrimSuffix(addr, "/"), token: token, http: hc}, nil
}

// APIError is an answer other than 2xx, with the API's JSON error.
type APIError struct {
	Status int
	Field  *api.FieldError
	Body   string
}

func (e *APIError) Error() string {
	if e.Field != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, http.StatusText(e.Status), e.Field)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Body)
}

// StatusOf returns the HTTP status of an API error, 0 for other errors.
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// Do sends one request with a JSON body (in: raw bytes or a value to
// marshal) and decodes a JSON answer into out; headers are name, value
// pairs. It returns the answer's headers.
func (c *Client) Do(method, path string, in, out any, headers ...string) (http.Header, error) {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set(api.AuthorizationHeader, api.BearerPrefix+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		ae := &APIError{Status: resp.StatusCode, Body: string(bytes.TrimSpace(b))}
		var eb api.ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
			ae.Field = eb.Error
		}
		return resp.Header, ae
	}
	if out != nil {
		if raw, ok := out.(*json.RawMessage); ok {
			*raw = append((*raw)[:0], b...)
			return resp.Header, nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return resp.Header, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.Header, nil
}
