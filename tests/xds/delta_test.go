package xds_test

import (
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
	"github.com/sextant-mesh/sextant/services/mesh-core/xds"
)

// An Envoy-like node on a delta ADS stream: clusters by wildcard, then the
// endpoints of the one it learnt; each response acknowledged, the status
// shows it synced, and a weight change arrives as a delta.
func TestDeltaStream(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) { c.XDSAddr = "127.0.0.1:0" })
	p := &plane{etcd: etcd, prefix: prefix, mc: mc, policy: time.Now().UnixMilli()}
	b1, b2 := startBackend(t), startBackend(t)
	p.register(t, b1, "z1")
	p.register(t, b2, "z2")
	p.pub = startPlanePublisher(t, mc)

	conn, err := grpc.NewClient(mc.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(testenv.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-1", Cluster: "caller", UserAgentName: "envoy"}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	// recv reads responses, acknowledging each, until one of typeURL names service.
	recv := func(typeURL string) *discoveryv3.DeltaDiscoveryResponse {
		t.Helper()
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce}); err != nil {
				t.Fatal(err)
			}
			for _, r := range resp.Resources {
				if resp.TypeUrl == resourcev3.ListenerType {
					t.Fatalf("Envoy was sent listener %s", r.Name)
				}
				if resp.TypeUrl == typeURL && r.Name == service {
					return resp
				}
			}
		}
	}
	recv(resourcev3.ClusterType)
	// Envoy is sent no API listener (it would reject them): its listener
	// subscription is answered with none.
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{service}}); err != nil {
		t.Fatal(err)
	}
	weightOf := func(resp *discoveryv3.DeltaDiscoveryResponse, addr string) uint32 {
		var cla endpointv3.ClusterLoadAssignment
		if err := resp.Resources[0].Resource.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		for _, l := range cla.Endpoints {
			for _, e := range l.LbEndpoints {
				a := e.GetEndpoint().GetAddress().GetSocketAddress()
				if fmt.Sprintf("%s:%d", a.Address, a.GetPortValue()) == addr {
					return e.LoadBalancingWeight.GetValue()
				}
			}
		}
		return 0
	}
	if w := weightOf(recv(resourcev3.EndpointType), b1.addr); w != 100 {
		t.Fatalf("static weight %d, want 100", w)
	}
	p.publish(t, map[string]int32{b1.addr: 700, b2.addr: 300}, nil)
	if w := weightOf(recv(resourcev3.EndpointType), b1.addr); w != 700 {
		t.Fatalf("weight after the policy %d, want 700", w)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, n := range mc.XDS().Status() {
			if n.Node == "envoy-1" {
				if !n.Delta || n.Service != "caller" || n.Types["cds"].State != xds.Synced || n.Types["eds"].State != xds.Synced || n.Types["lds"].State != xds.Synced {
					return fmt.Errorf("status %+v", n)
				}
				return nil
			}
		}
		return fmt.Errorf("envoy-1 not in the status")
	})
}
