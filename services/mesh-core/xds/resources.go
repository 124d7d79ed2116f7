// Package xds serves mesh-core's state over xDS (docs/xds.md): an ADS
// server that makes every gRPC client (`xds:///S`) and Envoy a data plane
// of Sextant, with the same weights, overload decisions and governance the
// SDK applies.
package xds

import (
	"cmp"
	"math"
	"regexp"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/priorityrules"
)

// DropCategory names Sextant's overload drops in ClusterLoadAssignment
// drop_overloads (and in the clients' load reports).
const DropCategory = "sextant_overload"

// ringSize is the ring of the ring_hash policy: grpc-go caps rings at 4,096
// entries, where a share of the ring is within a few percent of the
// endpoint's share of the weight.
const ringSize = 4096

// Listener is the API listener named service: what a gRPC client resolves
// for `xds:///service`. Its routes come over ADS (RDS), so a governance
// change sends routes only. With fault, the fault filter runs before the
// router, idle until a route's config (PriorityRoutes) asks it to abort.
func Listener(service string, fault bool) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	filters := []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}}
	if fault {
		f, err := anypb.New(&faultv3.HTTPFault{})
		if err != nil {
			return nil, err
		}
		filters = append([]*hcmv3.HttpFilter{{Name: faultFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: f}}}, filters...)
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: service,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: service,
		}},
		HttpFilters: filters,
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{Name: service, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}}, nil
}

// adsSource is "over the ADS stream this came on".
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

// RouteConfiguration is service's routes as caller sees them: one route per
// method named in the caller's rpc_timeout or retry documents for service,
// then a catch-all with their "*" entries. gov may be nil (no governance).
// With shed (PriorityRoutes; nil otherwise), each route comes with the
// variants that shed by priority (withPriorities).
func RouteConfiguration(service string, gov *Governance, shed *Shed) *routev3.RouteConfiguration {
	var routes []*routev3.Route
	for _, m := range gov.methods() {
		routes = append(routes, withPriorities(&routev3.Route{
			Name:   m,
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/[^/]+/" + regexp.QuoteMeta(m)}}},
			Action: &routev3.Route_Route{Route: routeAction(service, gov, m)},
		}, shed)...)
	}
	routes = append(routes, withPriorities(&routev3.Route{
		Name:   "default",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: routeAction(service, gov, "*")},
	}, shed)...)
	return &routev3.RouteConfiguration{Name: service, VirtualHosts: []*routev3.VirtualHost{{
		Name: service, Domains: []string{"*"}, Routes: routes,
	}}}
}

// routeAction routes to service's cluster with method's timeout and retry
// policy (the "*" entries when method has none).
func routeAction(service string, gov *Governance, method string) *routev3.RouteAction {
	ra := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: service}}
	if d, ok := gov.timeout(method); ok {
		// Envoy reads timeout; gRPC clients read max_stream_duration (gRFC
		// A31): both carry the caller's rpc_timeout.
		ra.Timeout = durationpb.New(d)
		ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(d)}
	}
	ra.RetryPolicy = gov.retryPolicy(method)
	return ra
}

// Cluster is service's cluster as caller sees it: endpoints over EDS, the
// ring_hash policy (see lbPolicy), and outlier detection from the caller's
// circuit_break document. gov may be nil.
func Cluster(service string, gov *Governance) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 service,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: service},
		// ring_hash without a hash policy picks a random point of the
		// ring per call, so calls split in proportion to the endpoint
		// weights in gRPC (whose round_robin and weighted_round_robin
		// ignore EDS endpoint weights: the latter weighs by ORCA load
		// reports) and in Envoy alike (docs/xds.md).
		LbPolicy: clusterv3.Cluster_RING_HASH,
		LbConfig: &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			MinimumRingSize: wrapperspb.UInt64(ringSize),
			HashFunction:    clusterv3.Cluster_RingHashLbConfig_XX_HASH,
		}},
		ConnectTimeout:   gov.connectTimeout(),
		OutlierDetection: gov.outlierDetection(),
	}
}

// LoadAssignment is service's endpoints: its healthy instances (ejected ones
// are left out) with their dynamic weights, grouped by zone and cluster
// into localities whose weight is the sum of theirs, so that an endpoint's
// share is its weight over the total whichever way a client combines the
// two; and the service's overload decision as a drop percentage (none when
// decision is nil: the routes shed, PriorityRoutes).
func LoadAssignment(service string, members []api.Instance, decision *api.Overload, defaultPriority int32) *endpointv3.ClusterLoadAssignment {
	type key struct{ zone, cluster string }
	groups := map[key]*endpointv3.LocalityLbEndpoints{}
	var order []key
	for _, in := range members {
		if !in.Healthy {
			continue
		}
		host, port, ok := splitHostPort(in.Addr)
		if !ok {
			continue
		}
		k := key{in.Zone, in.Cluster}
		g := groups[k]
		if g == nil {
			g = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: in.Zone, SubZone: in.Cluster}}
			groups[k] = g
			order = append(order, k)
		}
		w := uint32(max(1, in.Weight))
		g.LbEndpoints = append(g.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
				}}},
			}},
			HealthStatus:        corev3.HealthStatus_HEALTHY,
			LoadBalancingWeight: wrapperspb.UInt32(w),
		})
		sum := uint64(w)
		if g.LoadBalancingWeight != nil {
			sum += uint64(g.LoadBalancingWeight.Value)
		}
		g.LoadBalancingWeight = wrapperspb.UInt32(uint32(min(sum, math.MaxUint32)))
	}
	slices.SortFunc(order, func(a, b key) int { return cmp.Or(cmp.Compare(a.zone, b.zone), cmp.Compare(a.cluster, b.cluster)) })
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: service}
	for _, k := range order {
		cla.Endpoints = append(cla.Endpoints, groups[k])
	}
	if ppm := DropPerMillion(decision, defaultPriority); decision != nil && ppm > 0 {
		cla.Policy = &endpointv3.ClusterLoadAssignment_Policy{DropOverloads: []*endpointv3.ClusterLoadAssignment_Policy_DropOverload{{
			Category:       DropCategory,
			DropPercentage: dropFraction(ppm),
		}}}
	}
	return cla
}

// dropFraction is ppm per million in the finest denominator whose
// numerator times a million fits 32 bits: grpc-go (1.83) computes
// numerator*1e6/denominator in uint32, so 50 % written per million (or per
// ten thousand) wraps around and drops every call. Past 0.43 % the share
// is given per ten thousand, past 42.9 % per hundred (rounded).
func dropFraction(ppm uint32) *typev3.FractionalPercent {
	const fits = math.MaxUint32 / 1_000_000 // 4294
	switch {
	case ppm <= fits:
		return &typev3.FractionalPercent{Numerator: ppm, Denominator: typev3.FractionalPercent_MILLION}
	case (ppm+50)/100 <= fits:
		return &typev3.FractionalPercent{Numerator: (ppm + 50) / 100, Denominator: typev3.FractionalPercent_TEN_THOUSAND}
	}
	return &typev3.FractionalPercent{Numerator: (ppm + 5_000) / 10_000, Denominator: typev3.FractionalPercent_HUNDRED}
}

// DropPerMillion is the share of an xDS client's calls (per million) that the
// decision sheds. An xDS client sends no admission level: its calls are
// taken to carry the business priority the service gives requests that
// match no rule (defaultPriority) and a uniformly spread user priority, as
// the SDK's gate gives such requests at the service. So a level within
// that priority sheds the share of its 64 user priorities below it; a
// level above it sheds every call, one below none.
func DropPerMillion(decision *api.Overload, defaultPriority int32) uint32 {
	level := decision.Level() // 0 for nil
	if level <= 0 {
		return 0
	}
	below := level - defaultPriority*api.UserLevels // user priorities of the default priority shed
	switch {
	case below <= 0:
		return 0
	case below >= api.UserLevels:
		return 1_000_000
	}
	return uint32(int64(below) * 1_000_000 / api.UserLevels)
}

// DefaultPriority is what DropPerMillion assumes for xDS clients when the
// service has no priority_rules.
const DefaultPriority = priorityrules.DefaultPriority

func splitHostPort(addr string) (string, uint32, bool) {
	i := len(addr) - 1
	for i >= 0 && addr[i] != ':' {
		i--
	}
	if i <= 0 {
		return "", 0, false
	}
	host, portText := addr[:i], addr[i+1:]
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return "", 0, false
	}
	return host, uint32(port), true
}
