package sdk

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// The environment the automatic workload identity reads.
const (
	// ServiceAccountTokenEnv names a file holding the workload's
	// Kubernetes service-account token (a projected token, which kubelet
	// rewrites as it rotates it). When the file exists and no data-plane
	// token is given, the workload proves who it is with it at
	// POST /v1/certificates; the file is read again at every request for a
	// certificate.
	ServiceAccountTokenEnv = "SEXTANT_SA_TOKEN_FILE"
	// ConfigCenterEnv names the config-center (host:port or a URL) that
	// issues the workload's certificate when no ConfigWatcher of the
	// process names one.
	ConfigCenterEnv = "SEXTANT_CONFIG_CENTER"
	// MTLSEnv set to "off" turns the automatic workload identity off: the
	// adapters then serve and dial plaintext unless given an Identity.
	MTLSEnv = "SEXTANT_MTLS"
)

// Workload is the automatic identity of the data planes of a process that
// share one credential: the adapters (kitexsdk.ClientOptions,
// kitexsdk.NewServerSuite, hertzsdk.ServerOptions) find it with WorkloadOf
// and serve and dial mTLS with it once it holds a certificate, with no
// code of the user's. It asks the config-center for the certificate in
// the background as soon as it knows where the config-center is (the
// first ConfigWatcher made with the same credential, else
// $SEXTANT_CONFIG_CENTER), retrying while the config-center cannot answer
// or has no certificate authority (every minute at most), and then keeps
// it renewed as an Identity does.
type Workload struct {
	key       string
	token     string
	tokenFile string

	mu      sync.Mutex
	center  string
	client  *http.Client
	started bool
	ttl     time.Duration

	id    atomic.Pointer[Identity]
	ready chan struct{}
	gate  atomic.Pointer[Gate] // the first Gate of this credential: its access rules' tls
}

var (
	workloadsMu sync.Mutex
	workloads   = map[string]*Workload{}
	centers     = map[string]centerOf{} // credential key -> the config-center a ConfigWatcher named
)

type centerOf struct {
	addr   string
	client *http.Client
}

// credential is the credential a client with option token proves who it
// is with: the token (option, else $SEXTANT_TOKEN), else the
// service-account token file when it exists. key is "" when there is none.
func credential(token string) (key, tok, file string) {
	if tok = tokenOf(token); tok != "" {
		return "token:" + tok, tok, ""
	}
	if file = os.Getenv(ServiceAccountTokenEnv); file != "" {
		if _, err := os.Stat(file); err == nil {
			return "file:" + file, "", file
		}
	}
	return "", "", ""
}

// automatic tells whether $SEXTANT_MTLS leaves the automatic identity on.
func automatic() bool { return !strings.EqualFold(os.Getenv(MTLSEnv), "off") }

// WorkloadOf is the automatic identity of the workload whose credential is
// token ("": $SEXTANT_TOKEN, else the service-account token file named by
// $SEXTANT_SA_TOKEN_FILE when it exists): one per credential in a process.
// nil when there is no credential, or $SEXTANT_MTLS is off.
func WorkloadOf(token string) *Workload {
	if !automatic() {
		return nil
	}
	key, tok, file := credential(token)
	if key == "" {
		return nil
	}
	workloadsMu.Lock()
	w, ok := workloads[key]
	if !ok {
		w = &Workload{key: key, token: tok, tokenFile: file, ready: make(chan struct{})}
		workloads[key] = w
	}
	c, named := centers[key]
	workloadsMu.Unlock()
	if named {
		w.setCenter(c.addr, c.client)
	} else if addr := os.Getenv(ConfigCenterEnv); addr != "" {
		w.setCenter(addr, nil)
	}
	return w
}

// nameConfigCenter tells the workload of token's credential where its
// config-center is (the first name given wins).
func nameConfigCenter(token, addr string, client *http.Client) {
	key, _, _ := credential(token)
	if key == "" || addr == "" {
		return
	}
	workloadsMu.Lock()
	if _, ok := centers[key]; !ok {
		centers[key] = centerOf{addr: addr, client: client}
	}
	w := workloads[key]
	workloadsMu.Unlock()
	if w != nil && automatic() {
		w.setCenter(addr, client)
	}
}

// setCenter starts obtaining the certificate from the config-center at
// addr, unless it started already.
func (w *Workload) setCenter(addr string, client *http.Client) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return
	}
	w.started, w.center, w.client = true, addr, client
	go w.obtain()
}

// Active tells whether the workload knows its config-center, and so
// obtains (or has) its certificate: the adapters turn their automatic mTLS
// on when they are built for an active workload only, so that a process
// that names no config-center keeps their plaintext transports.
func (w *Workload) Active() bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.started
}

// SetCertificateTTL asks for certificates this long-lived (0: the
// config-center's --cert-ttl); it applies to an identity not yet obtained.
func (w *Workload) SetCertificateTTL(ttl time.Duration) {
	w.mu.Lock()
	w.ttl = ttl
	w.mu.Unlock()
}

func (w *Workload) obtain() {
	log := slog.Default().With("component", "sextant-identity")
	retry := backoff.Policy{Base: time.Second, Max: time.Minute}
	for attempt := 1; ; attempt++ {
		w.mu.Lock()
		o := IdentityOptions{ConfigCenter: w.center, Token: w.token, TokenFile: w.tokenFile, HTTPClient: w.client, TTL: w.ttl, Logger: log}
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		id, err := NewIdentity(ctx, o)
		cancel()
		if err == nil {
			w.id.Store(id)
			close(w.ready)
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("no workload certificate yet; serving and dialing plaintext", "config_center", o.ConfigCenter, "err", err, "attempts", attempt)
		}
		retry.Sleep(context.Background(), attempt)
	}
}

// Identity is the workload's identity, nil until its first certificate is
// obtained.
func (w *Workload) Identity() *Identity {
	if w == nil {
		return nil
	}
	return w.id.Load()
}

// Wait waits for the identity until ctx ends.
func (w *Workload) Wait(ctx context.Context) (*Identity, error) {
	if w == nil {
		return nil, errors.New("sextant: no workload credential")
	}
	select {
	case <-w.ready:
		return w.id.Load(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Workload is the automatic identity of the discovery's credential (nil
// without one).
func (d *Discovery) Workload() *Workload { return WorkloadOf(d.token) }

// Workload is the automatic identity of the gate's credential: its
// Reporter's, else the environment's (nil without one).
func (g *Gate) Workload() *Workload {
	if g.report != nil {
		return WorkloadOf(g.report.o.Token)
	}
	return WorkloadOf("")
}

// TLSMode is the data-plane TLS mode of the workload: that of the access
// rules of the first Gate made with its credential (a Gate's Reporter's
// Token, else $SEXTANT_TOKEN), permissive without one.
func (w *Workload) TLSMode() string { return w.gate.Load().TLSMode() }

// TLSMode is the data-plane TLS mode the gate's access rules set
// (api.TLSPermissive when none).
func (g *Gate) TLSMode() string {
	if g == nil || g.access == nil {
		return (*AccessRules)(nil).TLSMode()
	}
	return g.access().TLSMode()
}

// Reporter is the Reporter the gate reports to (nil: none).
func (g *Gate) Reporter() *Reporter {
	if g == nil {
		return nil
	}
	return g.report
}

// Gate is the first Gate made with the workload's credential (nil: none
// yet).
func (w *Workload) Gate() *Gate { return w.gate.Load() }
