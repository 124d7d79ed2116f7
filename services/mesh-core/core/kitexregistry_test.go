package core_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"
	etcdregistry "github.com/kitex-contrib/registry-etcd"

	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo/comment"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

type echo struct{}

func (*echo) Get(context.Context, *demo.GetRequest) (*demo.GetResponse, error) {
	return &demo.GetResponse{}, nil
}

// A Kitex server registered with the stock kitex-contrib/registry-etcd, with
// no Sextant code in it, shows up in mesh-core's discovery, and leaves it
// when it stops.
func TestKitexRegistryEtcdInstancesAreDiscovered(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	mc := coretest.Start(t, etcd, testenv.Prefix(t), nil)
	reg, err := etcdregistry.NewEtcdRegistry([]string{strings.TrimPrefix(etcd.Endpoint, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := kitexx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := comment.NewServer(&echo{}, server.WithListener(ln), server.WithRegistry(reg),
		server.WithServerBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: "legacy-svc"}))
	done := make(chan error, 1)
	go func() { done <- srv.Run() }()
	addr := ln.Addr().String()

	waitFor(t, mc, "legacy-svc", func(a answer) error {
		if len(a.Instances) != 1 || a.Instances[0].Addr != addr || a.Instances[0].StaticWeight != 10 {
			return fmt.Errorf("instances %+v, want %s with Kitex's default weight 10", a.Instances, addr)
		}
		return nil
	})
	_ = srv.Stop() // deregisters
	<-done
	testenv.Eventually(t, 20*time.Second, func() error {
		_, a := poll(t, mc, "legacy-svc", 0, "0s")
		if len(a.Instances) != 0 {
			return fmt.Errorf("still listed after the server stopped: %+v", a.Instances)
		}
		return nil
	})
}
