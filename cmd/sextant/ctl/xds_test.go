package ctl_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// proxy-status lists the xDS nodes of a mesh-core replica with each type's
// sync state, and the NACKs.
func TestProxyStatus(t *testing.T) {
	etcd, prefix := testenv.StartEtcd(t), testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, func(c *core.Config) { c.XDSAddr = "127.0.0.1:0" })
	t.Setenv("SEXTANT_CONFIG", filepath.Join(t.TempDir(), "config"))
	t.Setenv("SEXTANT_MESH_CORE", mc.Addr())
	t.Setenv("SEXTANT_ADMIN_TOKEN", testenv.AdminToken)
	t.Setenv("SEXTANT_TOKEN", "")
	req, _ := http.NewRequest("POST", "http://"+mc.Addr()+"/v1/instances",
		strings.NewReader(`{"service": "echo", "instance": "10.0.0.1:80", "addr": "10.0.0.1:80", "ttl_s": 60}`))
	if resp, err := testenv.HTTP.Do(req); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %v %v", resp, err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if mc.XDS().Resources("front", "grpc-client-1")[resourcev3.ClusterType]["echo"] == nil {
			return fmt.Errorf("echo not served over xDS yet")
		}
		return nil
	})

	conn, err := grpc.NewClient(mc.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(testenv.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	eds := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "grpc-client-1", Cluster: "front"}, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"echo"}}
	cds := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: []string{"echo"}}
	for _, r := range []*discoveryv3.DiscoveryRequest{eds, cds} {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	go func() { // acknowledge every endpoints response, reject every cluster one
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			next := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResourceNames: []string{"echo"}, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
			if resp.TypeUrl == resourcev3.ClusterType {
				next.VersionInfo, next.ErrorDetail = "", &status.Status{Code: 3, Message: "cluster not liked"}
			}
			if stream.Send(next) != nil {
				return
			}
		}
	}()
	testenv.Eventually(t, 10*time.Second, func() error {
		out, _, err := run(t, "proxy-status")
		if err != nil {
			return err
		}
		for _, want := range []string{"NODE", "grpc-client-1", "front", "sotw", "NOT SENT", "SYNCED", "STALE",
			"grpc-client-1 CDS rejected version", "cluster not liked", "1 xDS nodes"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("no %q in:\n%s", want, out)
			}
		}
		return nil
	})
	out, _ := must(t, "proxy-status", "-o", "json", "--service", "other")
	contains(t, "proxy-status of another service", out, `"nodes": []`)
}
