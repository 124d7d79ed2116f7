package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// Instance is one instance of a service as mesh-core hands it out.
type Instance = api.Instance

// Overload is an admission decision: drop requests whose admission level
// (Priority.Level) is below its Level().
type Overload = api.Overload

// Snapshot is one service's discovery answer and when it arrived
// (ReceivedAt; the SDK keeps the last answer while mesh-core is away).
type Snapshot struct {
	api.Discovery
	ReceivedAt time.Time `json:"-"`
	// Cached is true for an answer read from the disk cache (CacheDir) of a
	// previous run, because mesh-core could not be reached at start; its
	// Stale is true too, and ReceivedAt is when that run received it. A
	// fresh answer replaces it as soon as mesh-core answers.
	Cached bool `json:"-"`
}

// Discovery long-polls mesh-core for the services a process calls or
// serves, and keeps the last good answer of each. It never blocks a request:
// Get returns what it has, at once; with no answer ever received it returns
// the static instances it was given (fail static).
//
// It follows every service with one long poll (GET /v1/discovery?services=
// a,b,c), one connection, for up to MaxServicesPerPoll services; each
// further group of that many has its own. Watching a new service restarts
// its group's poll with the service added.
type Discovery struct {
	base   string
	token  string
	client *http.Client
	wait   time.Duration
	retry  backoff.Policy
	log    *slog.Logger
	cache  *diskCache
	zone   string // the caller's, for zone-aware weights
	name   string // this process's name on its polls (?client=)

	mu       sync.Mutex
	services map[string]*watched
	groups   []*pollGroup
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// MaxServicesPerPoll is how many services one long poll follows (mesh-core's bound).
const MaxServicesPerPoll = 100

// pollGroup is the services one long poll follows; under Discovery.mu.
type pollGroup struct {
	names     []string
	restarted chan struct{} // closed when names grows: the poll in flight is out of date
}

type watched struct {
	snap      atomic.Pointer[Snapshot]
	static    []Instance
	listeners []*listener // under Discovery.mu
	cacheRead bool        // the disk cache was tried; under Discovery.mu
}

// listener hands snapshots to one callback in the order they were queued,
// one call at a time, with no lock of the Discovery held (a callback may
// call Get or Watch). Snapshots are queued under Discovery.mu, in the order
// they are stored.
type listener struct {
	f       func(*Snapshot)
	mu      sync.Mutex
	queue   []*Snapshot
	running bool // a goroutine is calling f
}

func (l *listener) push(s *Snapshot) {
	l.mu.Lock()
	l.queue = append(l.queue, s)
	l.mu.Unlock()
}

// deliver calls f with every queued snapshot, unless another goroutine is
// doing so already: that one delivers what was queued here too.
func (l *listener) deliver() {
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return
	}
	l.running = true
	for len(l.queue) > 0 {
		s := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		l.mu.Unlock()
		l.f(s)
		l.mu.Lock()
	}
	l.running = false
	l.mu.Unlock()
}

// DiscoveryOptions configure a Discovery.
type DiscoveryOptions struct {
	// MeshCore is mesh-core's address for discovery: host:port for plain
	// HTTP, or a URL such as https://mesh-core:7703. Give it mesh-core's poll
	// port (127.0.0.1:7733 by default), where a waiting poll costs mesh-core
	// no goroutine; its HTTP port (7703) answers the same.
	MeshCore string
	// Wait is the long-poll wait asked of mesh-core (default 30 s).
	Wait time.Duration
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
	// HTTPClient carries the TLS configuration (nil: the default client).
	HTTPClient *http.Client
	// Token is the credential sent to the control plane (default:
	// $SEXTANT_TOKEN): the service's data-plane token.
	Token string
	// CacheDir, if set, is a directory where the last answer of each
	// service is kept on disk, for a process that starts while mesh-core
	// cannot be reached: its first failed poll serves the cached answers
	// (Snapshot.Cached) until mesh-core answers. Processes of one service
	// may share it.
	CacheDir string
	// Client is the name mesh-core knows this process by in `sextant
	// status` (which version of each service it holds; default:
	// $SEXTANT_INSTANCE, else the host name, a pod's name in Kubernetes).
	Client string
	// Zone is the caller's zone (default: $SEXTANT_ZONE): with one, and a
	// policy that carries the demand by zone, the weights Get answers are
	// zone-aware (ZoneWeighted, docs/weights.md#zone-aware-routing).
	Zone string
}

// NewDiscovery makes a Discovery; Watch adds services to it.
func NewDiscovery(o DiscoveryOptions) *Discovery {
	if o.Wait <= 0 {
		o.Wait = 30 * time.Second
	}
	o.Token = tokenOf(o.Token)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Discovery{
		base:     baseURL(o.MeshCore),
		zone:     zoneOf(o.Zone),
		name:     clientOf(o.Client),
		token:    o.Token,
		client:   httpClient(o.HTTPClient, o.Wait+10*time.Second),
		wait:     o.Wait,
		retry:    backoff.Policy{Base: 200 * time.Millisecond, Max: 10 * time.Second},
		log:      o.Logger,
		cache:    newDiskCache(o.CacheDir, o.Logger),
		services: map[string]*watched{},
		ctx:      ctx, cancel: cancel,
	}
}

// Watch starts following service; static are the instances to use until
// mesh-core has answered once. onChange, if not nil, is called with the
// snapshot in hand (if any) and then with every new snapshot, in order, one
// call at a time and with no lock held, so it may call Get or Watch.
// Watching a service twice adds the listener.
func (d *Discovery) Watch(service string, static []Instance, onChange func(*Snapshot)) {
	d.mu.Lock()
	w, ok := d.services[service]
	if !ok {
		w = &watched{static: static}
		d.services[service] = w
		d.join(service)
	}
	var l *listener
	if onChange != nil {
		l = &listener{f: onChange}
		w.listeners = append(w.listeners, l)
		if s := w.snap.Load(); s != nil {
			l.push(s)
		}
	}
	d.mu.Unlock()
	if l != nil {
		l.deliver()
	}
}

// Get returns the last snapshot of service, or one made of its static
// instances when mesh-core never answered; ok is false when neither exists.
func (d *Discovery) Get(service string) (*Snapshot, bool) {
	d.mu.Lock()
	w := d.services[service]
	d.mu.Unlock()
	if w == nil {
		return nil, false
	}
	if s := w.snap.Load(); s != nil {
		return s, true
	}
	if len(w.static) == 0 {
		return nil, false
	}
	return &Snapshot{Discovery: api.Discovery{Service: service, Instances: w.static, Overload: Overload{State: api.StateNormal}}}, true
}

// Close stops every poll.
func (d *Discovery) Close() {
	d.cancel()
	d.wg.Wait()
}

// join adds service to the last group with room, or to a new group with
// its own poll; mu is held.
func (d *Discovery) join(service string) {
	if n := len(d.groups); n > 0 && len(d.groups[n-1].names) < MaxServicesPerPoll {
		g := d.groups[n-1]
		g.names = append(g.names, service)
		close(g.restarted)
		g.restarted = make(chan struct{})
		return
	}
	g := &pollGroup{names: []string{service}, restarted: make(chan struct{})}
	d.groups = append(d.groups, g)
	d.wg.Add(1)
	go d.follow(g)
}

// follow runs g's long poll until Close.
func (d *Discovery) follow(g *pollGroup) {
	defer d.wg.Done()
	version, etag, held := int64(0), "", 0
	failures := 0
	for d.ctx.Err() == nil {
		d.mu.Lock()
		names, restarted := append([]string{}, g.names...), g.restarted
		d.mu.Unlock()
		if len(names) != held { // a new service: the held version no longer says anything
			version, etag, held = 0, "", len(names)
		}
		batch, err := d.poll(names, version, &etag, restarted)
		switch {
		case errors.Is(err, errRestarted):
			continue
		case err != nil:
			failures++
			if failures == 1 || failures%30 == 0 {
				d.log.Warn("mesh-core unreachable; keeping the last discovery answers", "services", len(names), "err", err, "failures", failures)
			}
			d.fromCache(names)
			d.retry.Sleep(d.ctx, failures)
			continue
		case batch == nil: // 304: nothing new
		default:
			version = batch.Version
			for i := range batch.Services {
				snap := &Snapshot{Discovery: batch.Services[i], ReceivedAt: time.Now()}
				if d.store(snap) {
					d.cache.save("discovery", snap.Service, &snap.Discovery, snap.ReceivedAt)
				}
			}
		}
		failures = 0
	}
}

// fromCache serves the disk cache's answer of each of names that has no
// answer yet, once per service: mesh-core could not be reached.
func (d *Discovery) fromCache(names []string) {
	if d.cache == nil {
		return
	}
	for _, name := range names {
		d.mu.Lock()
		w := d.services[name]
		try := w != nil && !w.cacheRead && w.snap.Load() == nil
		if w != nil {
			w.cacheRead = true
		}
		d.mu.Unlock()
		if !try {
			continue
		}
		var cached api.Discovery
		at, ok := d.cache.load("discovery", name, &cached)
		if !ok || cached.Service != name {
			continue
		}
		cached.Stale = true
		if d.store(&Snapshot{Discovery: cached, ReceivedAt: at, Cached: true}) {
			d.log.Info("mesh-core unreachable at start; serving the disk cache's answer", "service", name, "received", at, "instances", len(cached.Instances))
		}
	}
}

// store keeps snap as its service's answer when it is new, and hands it to
// the service's listeners; it says whether it kept it. A cached answer is
// kept only when there is none (never over one of this run).
func (d *Discovery) store(snap *Snapshot) bool {
	// Stored and queued under the lock, so that a listener Watch adds gets
	// each snapshot once: the one in hand, or queued here.
	d.mu.Lock()
	w := d.services[snap.Service]
	if w == nil {
		d.mu.Unlock()
		return false
	}
	old := w.snap.Load()
	if snap.Cached && old != nil {
		d.mu.Unlock()
		return false
	}
	if old != nil && !old.Cached && old.Version == snap.Version && old.Stale == snap.Stale {
		d.mu.Unlock()
		return false // this service did not change; another of the poll did
	}
	snap = ZoneWeighted(snap, d.zone) // a copy when it applies: the caller's snap stays as mesh-core sent it
	w.snap.Store(snap)
	listeners := append([]*listener{}, w.listeners...)
	for _, l := range listeners {
		l.push(snap)
	}
	d.mu.Unlock()
	for _, l := range listeners {
		l.deliver()
	}
	return true
}

// errRestarted: the poll's group grew while it was in flight.
var errRestarted = errors.New("the services followed changed")

// poll runs one long poll for names; a nil answer without error means
// unchanged. etag is the ETag of the answer held, sent back as it came.
func (d *Discovery) poll(names []string, version int64, etag *string, restarted <-chan struct{}) (*api.DiscoveryBatch, error) {
	escaped := make([]string, len(names))
	for i, n := range names {
		escaped[i] = url.QueryEscape(n)
	}
	u := fmt.Sprintf("%s/v1/discovery?services=%s&version=%d&wait=%s", d.base, strings.Join(escaped, ","), version, d.wait)
	if d.name != "" {
		u += "&client=" + url.QueryEscape(d.name)
	}
	ctx, cancel := context.WithCancel(d.ctx)
	defer cancel()
	go func() { // ends with the poll (the deferred cancel)
		select {
		case <-restarted:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	authorize(req, d.token)
	var batch api.DiscoveryBatch
	changed, err := longPoll(d.client, req, &batch, etag)
	select {
	case <-restarted:
		return nil, errRestarted
	default:
	}
	if err != nil || !changed {
		return nil, err
	}
	return &batch, nil
}

// longPoll runs one long poll of the control plane: it decodes a 200 into
// v and reports true, reports false for a 304, and an error otherwise. It
// sends *etag, the ETag of the answer held, as If-None-Match, exactly as the
// server sent it (the query's version says the same to a server that reads
// no If-None-Match), and keeps a 200's ETag in it.
func longPoll(c *http.Client, req *http.Request, v any, etag *string) (bool, error) {
	if *etag != "" {
		req.Header.Set("If-None-Match", *etag)
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		_, _ = io.Copy(io.Discard, resp.Body)
		return false, nil
	case http.StatusOK:
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			return false, fmt.Errorf("%s: %w", req.URL.Path, err)
		}
		*etag = resp.Header.Get("ETag")
		return true, nil
	default:
		return false, fmt.Errorf("%s answered %d", req.URL.Host, resp.StatusCode)
	}
}

// Threshold is the admission level that applies to instance of the
// service: the higher of the service's and the instance's own.
// A nil snapshot (no answer yet) admits everything.
func (s *Snapshot) Threshold(instance string) int32 {
	if s == nil {
		return 0
	}
	t := s.Overload.Level()
	if s.Overload.State != "" && s.Overload.State != api.StateNormal {
		return t // the service's control governs every instance
	}
	for i := range s.Instances {
		if s.Instances[i].Instance == instance {
			t = max(t, s.Instances[i].Overload.Level())
		}
	}
	return t
}

// clientOf is the process's name on its polls: the option, else
// $SEXTANT_INSTANCE, else the host name ("" when none is a valid name).
func clientOf(client string) string {
	if client == "" {
		client = os.Getenv("SEXTANT_INSTANCE")
	}
	if client == "" {
		client, _ = os.Hostname()
	}
	if api.Name("client", client, false) != nil {
		return ""
	}
	return client
}
