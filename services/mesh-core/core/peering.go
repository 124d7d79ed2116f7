package core

// Multi-cluster peering (docs/discovery.md#multi-cluster). Each cluster runs
// its own control plane over its own etcd. A mesh-core exports the services
// named by --export: GET /v1/exports long-polls their instances as this
// cluster registered them (never what it imported itself, so nothing loops
// between peers). A mesh-core with --peer NAME=URL long-polls that endpoint
// of each peer and merges the peer's instances into its own snapshots of the
// same services, in memory only: they are never written to etcd, and the
// registry API cannot touch them (its writes go to etcd, where they are
// not). Each imported instance carries peer: NAME, and cluster: NAME when
// the peer sent none. A peer that stops answering keeps its last instances
// for --peer-ttl after its last answer, then they are dropped; nothing local
// changes either way, and the local mesh-core stays ready.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
)

// MaxExports bounds --export, as a poll for several services is bounded.
const MaxExports = MaxServicesPerPoll

// maxExportBody bounds the answer of a peer read by the importer.
const maxExportBody = 64 << 20

// PeeringConfig is what mesh-core exports to peer control planes and what
// it imports from them.
type PeeringConfig struct {
	// Export names the services whose local instances peers may import.
	Export []string
	// Peers are the control planes this one imports from.
	Peers []Peer
	// TTL: a peer that stops answering keeps its last instances this long
	// after its last answer (200 or 304), then they are dropped.
	TTL time.Duration
	// Wait is the wait of each long poll to a peer.
	Wait time.Duration
}

// Peer is a control plane this one imports from.
type Peer struct {
	// Name marks the imported instances (peer, and cluster when they carry none).
	Name string
	// URL is the peer mesh-core's HTTP port, http://host:7703 or https://.
	URL string
	// TokenFile holds the token the peer issued for this cluster (a
	// data-plane or reader operator token of the peer); read before every
	// poll, so a rotated token applies without a restart. Token is used
	// when TokenFile is empty.
	TokenFile string
	Token     string
	// CAFile holds the PEM certificates that verify an https:// peer
	// (empty: the system's roots); read at start.
	CAFile string
}

// Validate checks names, URLs and bounds.
func (c *PeeringConfig) Validate() error {
	if len(c.Export) > MaxExports {
		return fmt.Errorf("--export: %d services, at most %d", len(c.Export), MaxExports)
	}
	for i, s := range c.Export {
		if fe := api.KeyName(api.Index("export", i), s); fe != nil {
			return fmt.Errorf("--export: %s", fe.Message)
		}
	}
	seen := map[string]bool{}
	for _, p := range c.Peers {
		if fe := api.Name("peer", p.Name, false); fe != nil || p.Name == "" {
			return fmt.Errorf("--peer %q: want NAME=URL with a name of letters, digits, '-', '_' or '.'", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("--peer %s: named twice", p.Name)
		}
		seen[p.Name] = true
		u, err := url.Parse(p.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--peer %s=%s: want http://host:port or https://host:port", p.Name, p.URL)
		}
	}
	if len(c.Peers) > 0 && (c.TTL <= 0 || c.Wait <= 0) {
		return fmt.Errorf("--peer-ttl and --peer-wait must be positive")
	}
	return nil
}

// RegisterFlags binds the peering flags.
func (c *PeeringConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.Func("export", "comma-separated services whose local instances peer control planes may import (GET /v1/exports); repeatable", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" && !slices.Contains(c.Export, s) {
				c.Export = append(c.Export, s)
			}
		}
		return nil
	})
	fs.Func("peer", "NAME=URL of a peer control plane's mesh-core HTTP port to import its exported services from; comma-separated or repeated", func(v string) error {
		return eachPair(v, func(name, u string) { c.peer(name).URL = u })
	})
	fs.Func("peer-token-file", "NAME=PATH of the file holding the token peer NAME issued to this cluster (read before every poll); comma-separated or repeated", func(v string) error {
		return eachPair(v, func(name, path string) { c.peer(name).TokenFile = path })
	})
	fs.Func("peer-ca-file", "NAME=PATH of PEM certificates that verify the https:// peer NAME (default: the system's roots); comma-separated or repeated", func(v string) error {
		return eachPair(v, func(name, path string) { c.peer(name).CAFile = path })
	})
	fs.DurationVar(&c.TTL, "peer-ttl", c.TTL, "a peer that stops answering keeps its last imported instances this long after its last answer, then they are dropped")
	fs.DurationVar(&c.Wait, "peer-wait", c.Wait, "wait of each long poll to a peer")
}

// eachPair calls f with each NAME=VALUE of a comma-separated list.
func eachPair(list string, f func(name, value string)) error {
	for _, item := range strings.Split(list, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, value, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("%q: want NAME=VALUE", item)
		}
		f(name, value)
	}
	return nil
}

// peer is the Peer named name, added when new.
func (c *PeeringConfig) peer(name string) *Peer {
	for i := range c.Peers {
		if c.Peers[i].Name == name {
			return &c.Peers[i]
		}
	}
	c.Peers = append(c.Peers, Peer{Name: name})
	return &c.Peers[len(c.Peers)-1]
}

// imported is every peer's instances of service, by peer name; mu is held.
func (c *Cache) imported(service string) []api.Instance {
	byPeer := c.imports[service]
	if len(byPeer) == 0 {
		return nil
	}
	peers := make([]string, 0, len(byPeer))
	for p := range byPeer {
		peers = append(peers, p)
	}
	slices.Sort(peers)
	var out []api.Instance
	seen := map[string]bool{}
	for _, p := range peers {
		for _, in := range byPeer[p] {
			if !seen[in.Instance] { // two peers with one name: the first peer's
				seen[in.Instance] = true
				out = append(out, in)
			}
		}
	}
	return out
}

// withImported adds to regs the instances of service imported from peers
// (by name only: for validating a policy that weighs them).
func (c *Cache) withImported(service string, regs map[string]api.Registration) map[string]api.Registration {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, in := range c.imported(service) {
		if _, ok := regs[in.Instance]; !ok {
			if regs == nil {
				regs = map[string]api.Registration{}
			}
			regs[in.Instance] = api.Registration{Service: service, Instance: in.Instance, Addr: in.Addr}
		}
	}
	return regs
}

// setImports replaces what peer exports (nil: nothing) and rebuilds the
// services whose imports changed.
func (c *Cache) setImports(peer string, services map[string][]api.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	touched := map[string]bool{}
	for s, byPeer := range c.imports {
		if _, ok := byPeer[peer]; ok && services[s] == nil {
			if delete(byPeer, peer); len(byPeer) == 0 {
				delete(c.imports, s)
			}
			touched[s] = true
		}
	}
	for s, ins := range services {
		if len(ins) == 0 {
			continue
		}
		if c.imports[s] == nil {
			c.imports[s] = map[string][]api.Instance{}
		}
		c.imports[s][peer] = ins
		touched[s] = true
	}
	for s := range touched {
		c.changed(s)
	}
}

// exports serves GET /v1/exports?version=V&wait=30s: the exported services
// with their local instances only, as a DiscoveryBatch, long-polled as GET
// /v1/discovery?services= is.
type exports struct {
	d        *discovery
	services []string
}

func (e *exports) collect() ([]*Snapshot, int64) {
	snaps := make([]*Snapshot, len(e.services))
	versions := make([]int64, len(e.services))
	for i, n := range e.services {
		snaps[i] = e.d.cache.Get(n)
		versions[i] = snaps[i].localVersion
	}
	return snaps, combine(versions)
}

// combine is the version of a batch: a hash of its parts'.
func combine(versions []int64) int64 {
	var b []byte
	for _, v := range versions {
		b = strconv.AppendInt(b, v, 10)
		b = append(b, 0)
	}
	return max(1, int64(fnv64(b)&(1<<53-1)))
}

func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func (e *exports) serve(ctx context.Context, c *app.RequestContext) {
	a, fe := e.d.args(c)
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	d := e.d
	snaps, version := e.collect()
	if version == a.version && len(e.services) == 0 {
		// Nothing exported: nothing can change but the flag (a restart).
		// Wait all the same, or the peers would poll in a loop.
		t := time.NewTimer(a.wait)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-d.stopping:
		}
		t.Stop()
	} else if version == a.version {
		for _, n := range e.services {
			_, release, err := d.cache.Hold(n)
			if err != nil {
				d.tooMany(c, err)
				return
			}
			defer release()
		}
		changed := make(chan struct{}, 1)
		cancel := d.cache.Subscribe(e.services, changed)
		snaps, version = e.collect()
		t := time.NewTimer(a.wait)
		for version == a.version {
			select {
			case <-changed:
				snaps, version = e.collect()
				continue
			case <-t.C:
			case <-ctx.Done():
			case <-d.stopping:
			}
			break
		}
		t.Stop()
		cancel()
	}
	if version == a.version {
		c.Response.Header.Set("ETag", httpx.ETag(version))
		c.Status(consts.StatusNotModified)
		return
	}
	now, stale := time.Now(), d.stale()
	b := []byte(`{"version":`)
	b = strconv.AppendInt(b, version, 10)
	b = append(b, `,"services":[`...)
	for i, s := range snaps {
		if i > 0 {
			b = append(b, ',')
		}
		b = s.appendJSON(b, s.localBody, now, stale)
	}
	b = append(b, `],"stale":`...)
	b = strconv.AppendBool(b, stale)
	b = append(b, '}')
	d.write(c, version, b)
}

// PeerState is what mesh-core knows of one peer, in /readyz and metrics.
type PeerState struct {
	URL string `json:"url"`
	// State is connected (its last poll was answered), unreachable (it was
	// answered before, its imports are kept until their TTL), lost (its
	// imports were dropped, or it never answered).
	State string `json:"state"`
	// LastAnswer is when the peer last answered (RFC 3339), empty if never.
	LastAnswer string `json:"last_answer,omitempty"`
	Services   int    `json:"services"`
	Instances  int    `json:"instances"`
	Error      string `json:"error,omitempty"`
}

// Peer states.
const (
	PeerConnected   = "connected"
	PeerUnreachable = "unreachable"
	PeerLost        = "lost"
)

// importer follows the peers' exports.
type importer struct {
	cfg     PeeringConfig
	cache   *Cache
	clients map[string]*http.Client // by peer
	log     *slog.Logger
	now     func() time.Time

	mu      sync.Mutex
	peers   map[string]*peerState
	started time.Time

	polls   *prometheus.CounterVec
	dropped *prometheus.CounterVec
}

type peerState struct {
	peer       Peer
	lastAnswer time.Time
	failing    bool
	held       bool // its instances are in the cache
	dropped    bool // dropped by expire: the next poll asks for everything again
	tried      bool // its first poll has ended (answered or failed)
	services   int
	instances  int
	err        string
}

func newImporter(cfg PeeringConfig, cache *Cache, reg prometheus.Registerer, log *slog.Logger) (*importer, error) {
	im := &importer{cfg: cfg, cache: cache, log: log, now: time.Now, peers: map[string]*peerState{}, started: time.Now(),
		clients: map[string]*http.Client{},
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_meshcore_peer_polls_total",
			Help: "Long polls to peer control planes, by peer and result (changed, not_modified, error).",
		}, []string{"peer", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_meshcore_peer_drops_total",
			Help: "Times a peer's imported instances were dropped because it had not answered for --peer-ttl.",
		}, []string{"peer"}),
	}
	for _, p := range cfg.Peers {
		im.peers[p.Name] = &peerState{peer: p}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if p.CAFile != "" {
			pem, err := os.ReadFile(p.CAFile)
			if err != nil {
				return nil, fmt.Errorf("--peer-ca-file %s: %w", p.Name, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--peer-ca-file %s: no PEM certificate in %s", p.Name, p.CAFile)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		im.clients[p.Name] = &http.Client{Transport: tr, Timeout: cfg.Wait + 15*time.Second}
	}
	reg.MustRegister(im.polls, im.dropped, im)
	return im, nil
}

var (
	peerUpDesc        = prometheus.NewDesc("sextant_meshcore_peer_up", "1 while the peer control plane answers its long polls; 0 while it does not.", []string{"peer"}, nil)
	peerInstancesDesc = prometheus.NewDesc("sextant_meshcore_peer_imported_instances", "Instances imported from the peer and served now.", []string{"peer"}, nil)
	peerAgeDesc       = prometheus.NewDesc("sextant_meshcore_peer_last_answer_age_seconds", "Seconds since the peer last answered (-1: never).", []string{"peer"}, nil)
)

// Describe implements prometheus.Collector.
func (im *importer) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerUpDesc
	ch <- peerInstancesDesc
	ch <- peerAgeDesc
}

// Collect implements prometheus.Collector.
func (im *importer) Collect(ch chan<- prometheus.Metric) {
	now := im.now()
	for name, st := range im.States() {
		up := 0.0
		if st.State == PeerConnected {
			up = 1
		}
		age := -1.0
		if t, err := time.Parse(time.RFC3339Nano, st.LastAnswer); err == nil {
			age = now.Sub(t).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(peerUpDesc, prometheus.GaugeValue, up, name)
		ch <- prometheus.MustNewConstMetric(peerInstancesDesc, prometheus.GaugeValue, float64(st.Instances), name)
		ch <- prometheus.MustNewConstMetric(peerAgeDesc, prometheus.GaugeValue, age, name)
	}
}

// answerSlack is how late past its wait a long poll to a peer may be
// answered before the peer counts as unreachable: a peer behind a network
// that drops packets does not fail a poll, it leaves it hanging.
const answerSlack = 5 * time.Second

// overdue: the peer has answered before, but nothing for longer than a
// long poll's wait and the slack. im.mu is held.
func (im *importer) overdue(p *peerState, now time.Time) bool {
	return !p.lastAnswer.IsZero() && now.Sub(p.lastAnswer) > im.cfg.Wait+answerSlack
}

// unreachable: the peer's last poll failed, or hangs past its wait. im.mu is held.
func (im *importer) unreachable(p *peerState, now time.Time) bool {
	return p.failing || im.overdue(p, now)
}

// starting holds readiness back, for at most answerSlack after start, until
// every peer's first poll has ended: so that a restarted replica's first
// snapshots already hold what it imports (a service served only by a peer
// does not answer empty for a moment). A peer that fails, or does not
// answer in time, holds nothing back.
func (im *importer) starting() []string {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.now().Sub(im.started) > answerSlack {
		return nil
	}
	var reasons []string
	for name, p := range im.peers {
		if !p.tried {
			reasons = append(reasons, fmt.Sprintf("waiting for peer %s's first answer (at most %s after start)", name, answerSlack))
		}
	}
	slices.Sort(reasons)
	return reasons
}

// States is the state of every peer, by name.
func (im *importer) States() map[string]PeerState {
	im.mu.Lock()
	defer im.mu.Unlock()
	out := make(map[string]PeerState, len(im.peers))
	now := im.now()
	for name, p := range im.peers {
		st := PeerState{URL: p.peer.URL, Services: p.services, Instances: p.instances, Error: p.err}
		if im.overdue(p, now) && st.Error == "" {
			st.Error = fmt.Sprintf("no answer for %s: a long poll is answered within its wait (%s)", now.Sub(p.lastAnswer).Round(time.Millisecond), im.cfg.Wait)
		}
		switch {
		case !p.lastAnswer.IsZero() && !im.unreachable(p, now):
			st.State = PeerConnected
		case p.held:
			st.State = PeerUnreachable
		default:
			st.State = PeerLost
		}
		if !p.lastAnswer.IsZero() {
			st.LastAnswer = p.lastAnswer.UTC().Format(time.RFC3339Nano)
		}
		out[name] = st
	}
	return out
}

// run follows one peer until ctx ends.
func (im *importer) run(ctx context.Context, p Peer) {
	var version int64
	etag := ""
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if im.takeDropped(p.Name) {
			version, etag = 0, "" // the peer may answer the version it had: it is no longer here
		}
		batch, err := im.poll(ctx, p, version, &etag)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			im.polls.WithLabelValues(p.Name, "error").Inc()
			im.failed(p.Name, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if batch == nil {
			im.polls.WithLabelValues(p.Name, "not_modified").Inc()
			im.answered(p.Name, nil)
			continue
		}
		im.polls.WithLabelValues(p.Name, "changed").Inc()
		version = batch.Version
		im.answered(p.Name, importedFrom(p.Name, batch))
	}
}

// importedFrom marks a peer's answer as imported: peer set, cluster set to
// the peer's name when empty, metadata never nil. Services beyond
// MaxExports and malformed instances are left out.
func importedFrom(peer string, batch *api.DiscoveryBatch) map[string][]api.Instance {
	out := map[string][]api.Instance{}
	for i, d := range batch.Services {
		if i >= MaxExports || api.KeyName("service", d.Service) != nil {
			continue
		}
		ins := make([]api.Instance, 0, len(d.Instances))
		for _, in := range d.Instances {
			if api.KeyName("instance", in.Instance) != nil || in.Addr == "" {
				continue
			}
			in.Peer = peer
			if in.Cluster == "" {
				in.Cluster = peer
			}
			if in.Metadata == nil {
				in.Metadata = map[string]string{}
			}
			ins = append(ins, in)
		}
		if len(ins) > 0 {
			out[d.Service] = ins
		}
	}
	return out
}

// answered records an answer of the peer: services is its new export
// (nil for a 304: unchanged).
func (im *importer) answered(name string, services map[string][]api.Instance) {
	// im.mu is held across the cache's change, so that expire never drops
	// what an answer just brought (the lock order is im.mu, then the cache's).
	im.mu.Lock()
	defer im.mu.Unlock()
	p := im.peers[name]
	if p.failing {
		im.log.Info("peer control plane answers again", "peer", name)
	}
	p.lastAnswer, p.failing, p.err, p.tried = im.now(), false, "", true
	if services != nil {
		im.cache.setImports(name, services)
		p.held, p.services, p.instances = len(services) > 0, len(services), 0
		for _, ins := range services {
			p.instances += len(ins)
		}
	}
}

func (im *importer) failed(name string, err error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	p := im.peers[name]
	if !p.failing {
		im.log.Warn("peer control plane unreachable: its imported instances are kept until --peer-ttl", "peer", name, "err", err, "ttl", im.cfg.TTL)
	}
	p.failing, p.err, p.tried = true, err.Error(), true
}

// expire drops the instances of the peers that have not answered for the
// TTL. Only imports are touched: local instances, etcd and readiness never.
func (im *importer) expire() {
	now := im.now()
	im.mu.Lock()
	defer im.mu.Unlock()
	for name, p := range im.peers {
		if p.held && im.unreachable(p, now) && now.Sub(p.lastAnswer) > im.cfg.TTL {
			p.held, p.dropped, p.services, p.instances = false, true, 0, 0
			im.log.Warn("dropping a lost peer's imported instances", "peer", name, "ttl", im.cfg.TTL)
			im.dropped.WithLabelValues(name).Inc()
			im.cache.setImports(name, nil)
		}
	}
}

// takeDropped tells whether the peer's instances were dropped since the
// last call.
func (im *importer) takeDropped(name string) bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	p := im.peers[name]
	d := p.dropped
	p.dropped = false
	return d
}

// expiry runs expire until ctx ends.
func (im *importer) expiry(ctx context.Context) {
	t := time.NewTicker(min(250*time.Millisecond, max(im.cfg.TTL/4, 10*time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			im.expire()
		}
	}
}

// poll is one long poll of the peer's exports: nil, nil for 304.
func (im *importer) poll(ctx context.Context, p Peer, version int64, etag *string) (*api.DiscoveryBatch, error) {
	token := p.Token
	if p.TokenFile != "" {
		b, err := os.ReadFile(p.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	q := url.Values{"wait": {im.cfg.Wait.String()}}
	if version != 0 {
		q.Set("version", strconv.FormatInt(version, 10))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(p.URL, "/")+"/v1/exports?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if *etag != "" {
		req.Header.Set("If-None-Match", *etag)
	}
	resp, err := im.clients[p.Name].Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxExportBody))
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, nil
	case http.StatusOK:
		var batch api.DiscoveryBatch
		if err := json.Unmarshal(body, &batch); err != nil {
			return nil, fmt.Errorf("malformed answer: %w", err)
		}
		*etag = resp.Header.Get("ETag")
		return &batch, nil
	default:
		return nil, fmt.Errorf("GET /v1/exports: %s: %.200s", resp.Status, body)
	}
}
