package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/sextant-mesh/sextant/api"
)

// State is what the server translates: mesh-core's snapshots.
type State interface {
	// Service returns service's instances (weights merged) and overload
	// decision; ok is false when mesh-core holds nothing of it.
	Service(name string) (members []api.Instance, decision *api.Overload, ok bool)
	// Services names every service mesh-core holds.
	Services() []string
}

// Options configure a Server.
type Options struct {
	// TLS serves ADS over mTLS: it must require a client certificate
	// chained to Sextant's authority (mtls.Security.XDSServerTLS). Nil
	// serves plaintext, on a loopback address only (New refuses others).
	TLS *tls.Config
	// Identify names the service of a verified client certificate chain
	// (its SPIFFE ID); required with TLS.
	Identify func(state tls.ConnectionState) (service string, err error)
	Log      *slog.Logger
	// Registerer takes the server's metrics; nil for none.
	Registerer prometheus.Registerer
	// PriorityRoutes sheds an overloaded service's calls on the routes, by
	// the priority headers the caller sends (withPriorities), instead of a
	// uniform drop_overloads in its endpoints. Routes are per caller group,
	// so an overload change is then sent to every group, not built once.
	PriorityRoutes bool
}

// Server is the ADS server. Its caches, per resource type:
//
//   - Listeners and ClusterLoadAssignments are the same for every node: one
//     LinearCache each, shared by all. A weight change (the frequent one)
//     rebuilds one ClusterLoadAssignment, marshalled once, whatever the
//     number of connected nodes.
//   - RouteConfigurations and Clusters carry the caller's governance (the
//     config-center's client-scoped kinds): one LinearCache per node group,
//     the caller service (and, while its rollouts run, the class of its
//     nodes in their canaries), created when the group's first node asks.
//     A service without governance for that caller shares the same default
//     resource object in every group.
//
// go-control-plane's snapshot cache would build a snapshot per node;
// LinearCache per type holds a resource once and answers each
// subscription with the names it asked for, which is what a fleet of gRPC
// clients (each subscribing to the few services it calls) needs.
type Server struct {
	state State
	opts  Options
	log   *slog.Logger
	lds   *cachev3.LinearCache
	eds   *cachev3.LinearCache
	// noListeners answers Envoy's listener requests: Envoy takes no API
	// listener over LDS (it would reject them all), its listeners are its own.
	noListeners *cachev3.LinearCache
	status      *statusBook
	gov         *governanceStore

	mu     sync.Mutex
	groups map[groupKey]*group
	seq    int             // groups made, for their version prefixes
	known  map[string]bool // services with resources
	// defaults are each service's route and cluster without governance.
	defRoutes   map[string]types.Resource
	defClusters map[string]types.Resource
	// sheds are the services' overload decisions on the routes
	// (PriorityRoutes), nil while they shed nothing.
	sheds map[string]*Shed

	dirtyMu  sync.Mutex
	dirty    map[string]bool // services to translate again
	govDirty map[[2]string]bool
	wake     chan struct{}

	grpc          *grpc.Server
	ln            net.Listener
	versionPrefix string
}

// newCache is a LinearCache of typeURL holding initial, its versions
// prefixed with prefix.
func (s *Server) newCache(typeURL, prefix string, initial map[string]types.Resource) *cachev3.LinearCache {
	opts := []cachev3.LinearCacheOption{cachev3.WithLogger(quiet{}), cachev3.WithVersionPrefix(prefix)}
	if initial != nil {
		opts = append(opts, cachev3.WithInitialResources(initial))
	}
	return cachev3.NewLinearCache(typeURL, opts...)
}

// groupKey names a node group: the caller service, and the class of its
// nodes in the caller's running rollouts (governanceStore.classOf).
type groupKey struct{ caller, class string }

// group is the caches of one node group.
type group struct {
	rds, cds *cachev3.LinearCache
}

// New binds addr; Run serves.
func New(addr string, state State, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.TLS != nil && opts.Identify == nil {
		return nil, errors.New("xds: TLS needs Identify")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	// In plaintext a node names its own service (node.cluster), which picks
	// its governance, and nothing authenticates it: loopback only.
	if tcp, ok := ln.Addr().(*net.TCPAddr); opts.TLS == nil && (!ok || !tcp.IP.IsLoopback()) {
		ln.Close()
		return nil, fmt.Errorf("xds: %s is not a loopback address: ADS without TLS serves loopback only (give mesh-core its CA key, --ca-key-file, or certificates)", addr)
	}
	s := &Server{
		state: state, opts: opts, log: opts.Log,
		// Versions carry a prefix of this process: a client that reconnects
		// to another replica (or to this one restarted) with version "7"
		// must not be taken to hold that replica's "7".
		versionPrefix: strconv.FormatInt(time.Now().UnixNano(), 36) + "-",
		ln:            ln,
		groups:        map[groupKey]*group{}, known: map[string]bool{},
		defRoutes: map[string]types.Resource{}, defClusters: map[string]types.Resource{}, sheds: map[string]*Shed{},
		dirty: map[string]bool{}, govDirty: map[[2]string]bool{}, wake: make(chan struct{}, 1),
	}
	s.lds, s.eds = s.newCache(resourcev3.ListenerType, s.versionPrefix, nil), s.newCache(resourcev3.EndpointType, s.versionPrefix, nil)
	s.noListeners = s.newCache(resourcev3.ListenerType, s.versionPrefix, nil)
	s.status = newStatusBook(opts.Log, opts.Registerer)
	s.gov = newGovernanceStore(s.governanceChanged)
	s.gov.onPriority = s.Changed
	gopts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(64),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if opts.TLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(s.status.countRefusals(opts.TLS))))
	}
	s.grpc = grpc.NewServer(gopts...)
	srv := serverv3.NewServer(context.Background(), (*muxCache)(s), s.status.callbacks(s))
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(s.grpc, srv)
	return s, nil
}

// Addr is the ADS listen address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Governance is where the config-center's documents come in (its mirror
// handlers).
func (s *Server) Governance() *governanceStore { return s.gov }

// Changed tells the server that service's snapshot changed. It returns at
// once (mesh-core's cache calls it with its lock held): the translation
// runs on the server's own goroutine, which takes every change made
// meanwhile in one pass.
func (s *Server) Changed(service string) {
	s.dirtyMu.Lock()
	s.dirty[service] = true
	s.dirtyMu.Unlock()
	s.poke()
}

func (s *Server) governanceChanged(server, caller string) {
	s.dirtyMu.Lock()
	s.govDirty[[2]string{server, caller}] = true
	s.dirtyMu.Unlock()
	s.poke()
}

func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	for _, name := range s.state.Services() {
		s.Changed(name)
	}
	s.translate()
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.ln) }()
	for {
		select {
		case <-ctx.Done():
			// ADS streams never end on their own: stop cuts them.
			s.grpc.Stop()
			<-errc
			return nil
		case err := <-errc:
			return fmt.Errorf("xds: %w", err)
		case <-s.wake:
			s.translate()
		}
	}
}

// translate rebuilds the resources of the services that changed and of the
// (server, caller) pairs whose governance changed.
func (s *Server) translate() {
	s.dirtyMu.Lock()
	dirty, govDirty := s.dirty, s.govDirty
	s.dirty, s.govDirty = map[string]bool{}, map[[2]string]bool{}
	s.dirtyMu.Unlock()
	if len(dirty) == 0 && len(govDirty) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lds, eds := map[string]types.Resource{}, map[string]types.Resource{}
	var gone []string
	added := map[string]bool{}  // services new to xDS
	reshed := map[string]bool{} // services whose routes shed otherwise
	for name := range dirty {
		members, decision, ok := s.state.Service(name)
		if !ok {
			if s.known[name] {
				gone = append(gone, name)
				delete(s.known, name)
				delete(s.defRoutes, name)
				delete(s.defClusters, name)
				delete(s.sheds, name)
			}
			continue
		}
		prio := s.gov.defaultPriority(name)
		if s.opts.PriorityRoutes {
			if shed := shedOf(decision, prio); !equalShed(shed, s.sheds[name]) {
				s.sheds[name] = shed
				reshed[name] = true
			}
			decision = nil // the routes shed
		}
		eds[name] = LoadAssignment(name, members, decision, prio)
		if !s.known[name] {
			l, err := Listener(name, s.opts.PriorityRoutes)
			if err != nil {
				s.log.Error("xds listener not built", "service", name, "err", err)
				continue
			}
			lds[name] = l
			s.known[name] = true
			s.defClusters[name] = Cluster(name, nil)
			added[name] = true
		}
		if added[name] || reshed[name] {
			s.defRoutes[name] = RouteConfiguration(name, nil, s.sheds[name])
		}
	}
	if err := s.eds.UpdateResources(eds, gone); err != nil {
		s.log.Error("xds endpoints not updated", "err", err)
	}
	if err := s.lds.UpdateResources(lds, gone); err != nil {
		s.log.Error("xds listeners not updated", "err", err)
	}
	for k, g := range s.groups {
		if k.class != "" && g.rds.NumCacheWatches() == 0 && g.cds.NumCacheWatches() == 0 {
			delete(s.groups, k) // a canary's group nobody watches any more
			continue
		}
		routes, clusters := map[string]types.Resource{}, map[string]types.Resource{}
		for name := range added {
			routes[name], clusters[name] = s.routeFor(name, k), s.clusterFor(name, k)
		}
		for name := range reshed {
			routes[name] = s.routeFor(name, k)
		}
		// A governance change is sent to every group of the caller, as new
		// objects even where they are equal: a node whose class the change
		// moved gets a response, and its next request finds its new group.
		for pair := range govDirty {
			if pair[1] == k.caller && s.known[pair[0]] {
				routes[pair[0]], clusters[pair[0]] = s.routeFor(pair[0], k), s.clusterFor(pair[0], k)
			}
		}
		if len(routes) > 0 || len(gone) > 0 {
			_ = g.rds.UpdateResources(routes, gone)
			_ = g.cds.UpdateResources(clusters, gone)
		}
	}
}

// routeFor is server's RouteConfiguration for the nodes of k; mu is held.
func (s *Server) routeFor(server string, k groupKey) types.Resource {
	if g := s.gov.view(server, k.caller, k.class); !g.empty() {
		return RouteConfiguration(server, g, s.sheds[server])
	}
	return s.defRoutes[server]
}

// clusterFor is server's Cluster for the nodes of k; mu is held.
func (s *Server) clusterFor(server string, k groupKey) types.Resource {
	if g := s.gov.view(server, k.caller, k.class); !g.empty() {
		return Cluster(server, g)
	}
	return s.defClusters[server]
}

func equalShed(a, b *Shed) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// groupOf returns the caches of k, made with every known service's
// resources as its nodes see them on first use. Each group's versions
// have a prefix of their own: a node moving to another group is sent what
// that group holds, whatever the counters say.
func (s *Server) groupOf(k groupKey) *group {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.groups[k]; g != nil {
		return g
	}
	routes := make(map[string]types.Resource, len(s.known))
	clusters := make(map[string]types.Resource, len(s.known))
	for name := range s.known {
		routes[name], clusters[name] = s.routeFor(name, k), s.clusterFor(name, k)
	}
	s.seq++
	prefix := s.versionPrefix + strconv.Itoa(s.seq) + "-"
	g := &group{
		rds: s.newCache(resourcev3.RouteType, prefix, routes),
		cds: s.newCache(resourcev3.ClusterType, prefix, clusters),
	}
	s.groups[k] = g
	return g
}

// Resources returns every resource a node of caller with id node would be
// sent, by type URL (for tests and validation).
func (s *Server) Resources(caller, node string) map[string]map[string]types.Resource {
	g := s.groupOf(groupKey{caller, s.gov.classOf(caller, node)})
	return map[string]map[string]types.Resource{
		resourcev3.ListenerType: s.lds.GetResources(),
		resourcev3.RouteType:    g.rds.GetResources(),
		resourcev3.ClusterType:  g.cds.GetResources(),
		resourcev3.EndpointType: s.eds.GetResources(),
	}
}

// Status is every connected node's sync state.
func (s *Server) Status() []NodeStatus { return s.status.snapshot() }

// muxCache sends each watch to the cache of its type and, for routes and
// clusters, of its node's group: the caller service, which the status
// callbacks set on the node from its certificate (or, in plaintext, as the
// node declares it in node.cluster).
type muxCache Server

var _ cachev3.Cache = (*muxCache)(nil)

func (m *muxCache) cacheFor(typeURL string, node *corev3.Node) cachev3.Cache {
	s := (*Server)(m)
	switch typeURL {
	case resourcev3.ListenerType:
		if node.GetUserAgentName() == "envoy" {
			return s.noListeners
		}
		return s.lds
	case resourcev3.EndpointType:
		return s.eds
	case resourcev3.RouteType:
		return s.groupOf(s.keyOf(node)).rds
	case resourcev3.ClusterType:
		return s.groupOf(s.keyOf(node)).cds
	}
	return nil
}

// keyOf is node's group, decided at each of its requests: its class moves
// as rollouts start, grow and end.
func (s *Server) keyOf(node *corev3.Node) groupKey {
	caller := node.GetCluster()
	return groupKey{caller, s.gov.classOf(caller, node.GetId())}
}

// CreateWatch implements cachev3.ConfigWatcher.
func (m *muxCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	c := m.cacheFor(req.GetTypeUrl(), req.GetNode())
	if c == nil {
		return func() {}, nil // a type Sextant does not serve: never answered
	}
	return c.CreateWatch(req, sub, ch)
}

// CreateDeltaWatch implements cachev3.ConfigWatcher.
func (m *muxCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	c := m.cacheFor(req.GetTypeUrl(), req.GetNode())
	if c == nil {
		return func() {}, nil
	}
	return c.CreateDeltaWatch(req, sub, ch)
}

// Fetch implements cachev3.ConfigFetcher; Sextant serves no REST xDS.
func (m *muxCache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("xds: fetch is not served")
}

// quiet drops go-control-plane's own debug logs.
type quiet struct{}

func (quiet) Debugf(string, ...any) {}
func (quiet) Infof(string, ...any)  {}
func (quiet) Warnf(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
