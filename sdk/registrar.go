package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// Registration is an instance as registered in mesh-core (the contract's type).
type Registration = api.Registration

// Registrar keeps one instance registered in mesh-core: it registers,
// heartbeats every third of the TTL, registers again when mesh-core lost the
// lease, and deregisters on Close.
type Registrar struct {
	base   string
	token  string
	reg    Registration
	mode   func() string // what to advertise under api.TLSMetadataKey; nil: nothing
	advMu  sync.Mutex
	sent   string // what the last registration advertised, under advMu
	client *http.Client
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// RegistrarOptions configure a Registrar.
type RegistrarOptions struct {
	// MeshCore is mesh-core's address: host:port, or a URL such as https://host:port.
	MeshCore     string
	Registration Registration
	Logger       *slog.Logger
	// HTTPClient carries the TLS configuration (nil: the default client).
	HTTPClient *http.Client
	// Token is the credential sent to the control plane (default:
	// $SEXTANT_TOKEN): the service's data-plane token.
	Token string
	// TLSMode is the data-plane TLS mode the instance serves, advertised in
	// its registration's metadata (api.TLSMetadataKey; "" advertises
	// none). It is asked every second, and a change registers the instance
	// again at once, so that clients dial as it says. nil: the mode of a
	// TLSListener of this process on the registration's port (the
	// adapters' own, NewTLSListener) while it has a certificate to serve,
	// unless Registration.Metadata sets the key itself.
	TLSMode func() string
}

// NewRegistrar registers reg with mesh-core at meshCore (host:port or a URL)
// and keeps it registered in the background.
func NewRegistrar(meshCore string, reg Registration, log *slog.Logger) *Registrar {
	return StartRegistrar(RegistrarOptions{MeshCore: meshCore, Registration: reg, Logger: log})
}

// StartRegistrar is NewRegistrar with every option.
func StartRegistrar(o RegistrarOptions) *Registrar {
	reg, log := o.Registration, o.Logger
	if reg.TTLSeconds == 0 {
		reg.TTLSeconds = 15
	}
	reg.Zone = zoneOf(reg.Zone)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registrar{base: baseURL(o.MeshCore), token: tokenOf(o.Token), reg: reg, client: httpClient(o.HTTPClient, 5*time.Second),
		log: log, cancel: cancel, done: make(chan struct{}), mode: o.TLSMode}
	if _, set := reg.Metadata[api.TLSMetadataKey]; r.mode == nil && !set {
		addr := reg.Addr
		r.mode = func() string { return advertisedOn(addr) }
	}
	go r.run(ctx)
	return r
}

func (r *Registrar) run(ctx context.Context) {
	defer close(r.done)
	ttl := time.Duration(r.reg.TTLSeconds) * time.Second
	every := ttl / 3
	// While the lease may still be alive, a failed heartbeat is retried
	// at most a fifth of the heartbeat interval apart, so that the first
	// one after a short partition or a mesh-core restart comes before the
	// lease ends (with exponential backoff alone, a 5 s partition made
	// instances with a 10 s TTL miss their deadline and leave discovery).
	// Once it has surely ended, the retries back off to 5 s apart.
	retry := backoff.Policy{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	fast := backoff.Policy{Base: min(retry.Base, every/5), Max: every / 5}
	registered, failures := false, 0
	var lastOK time.Time
	for ctx.Err() == nil {
		var err error
		if registered {
			registered, err = r.heartbeat(ctx)
		}
		if !registered && err == nil {
			err = r.register(ctx)
			registered = err == nil
		}
		if err != nil {
			failures++
			if failures == 1 || failures%30 == 0 {
				r.log.Warn("mesh-core registration failing; retrying", "err", err, "failures", failures)
			}
			if !lastOK.IsZero() && time.Since(lastOK) < ttl {
				fast.Sleep(ctx, failures)
			} else {
				retry.Sleep(ctx, failures)
			}
			continue
		}
		failures, lastOK = 0, time.Now()
		r.wait(ctx, every)
	}
}

// wait waits d, or less when what the instance advertises changes: then it
// is registered again at once.
func (r *Registrar) wait(ctx context.Context, d time.Duration) {
	if r.mode == nil {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		return
	}
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(min(d, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-end.C:
			return
		case <-tick.C:
			if m := r.mode(); m != r.Advertised() {
				if err := r.register(ctx); err != nil {
					r.log.Warn("registering the instance with its new TLS mode failed; retrying", "tls", m, "err", err)
				}
			}
		}
	}
}

func (r *Registrar) register(ctx context.Context) error {
	reg, mode := r.reg, ""
	if r.mode != nil {
		mode = r.mode()
		reg.Metadata = maps.Clone(reg.Metadata)
		if mode != "" {
			if reg.Metadata == nil {
				reg.Metadata = map[string]string{}
			}
			reg.Metadata[api.TLSMetadataKey] = mode
		} else {
			delete(reg.Metadata, api.TLSMetadataKey)
		}
	}
	body, _ := json.Marshal(reg)
	if err := r.call(ctx, http.MethodPost, "/v1/instances", body, http.StatusCreated); err != nil {
		return err
	}
	r.advMu.Lock()
	r.sent = mode
	r.advMu.Unlock()
	return nil
}

// Advertised is the TLS mode the last registration advertised ("" for
// none).
func (r *Registrar) Advertised() string {
	if r.mode == nil {
		return r.reg.Metadata[api.TLSMetadataKey]
	}
	r.advMu.Lock()
	defer r.advMu.Unlock()
	return r.sent
}

// heartbeat renews the lease; false when mesh-core no longer knows the instance.
func (r *Registrar) heartbeat(ctx context.Context) (bool, error) {
	err := r.call(ctx, http.MethodPut, r.path()+"/heartbeat", nil, http.StatusOK)
	if errNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func (r *Registrar) path() string {
	return "/v1/instances/" + url.PathEscape(r.reg.Service) + "/" + url.PathEscape(r.reg.Instance)
}

type statusError int

func (s statusError) Error() string { return fmt.Sprintf("mesh-core answered %d", int(s)) }

func errNotFound(err error) bool { s, ok := err.(statusError); return ok && s == http.StatusNotFound }

func (r *Registrar) call(ctx context.Context, method, path string, body []byte, want int) error {
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	authorize(req, r.token)
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		return statusError(resp.StatusCode)
	}
	return nil
}

// Close stops heartbeating and deregisters the instance.
func (r *Registrar) Close() {
	r.cancel()
	<-r.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.call(ctx, http.MethodDelete, r.path(), nil, http.StatusNoContent)
}
