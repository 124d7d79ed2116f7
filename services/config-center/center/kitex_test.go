package center_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/kerrors"
	cfgclient "github.com/kitex-contrib/config-etcd/client"
	cfgetcd "github.com/kitex-contrib/config-etcd/etcd"

	"github.com/sextant-mesh/sextant/internal/kitexx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
	"github.com/sextant-mesh/sextant/services/config-center/center"
)

// slowServer answers every call after 300 ms.
type slowServer struct{}

func (*slowServer) Ingest(context.Context, *aggregator.ReportBatch) (*aggregator.IngestResponse, error) {
	time.Sleep(300 * time.Millisecond)
	return &aggregator.IngestResponse{}, nil
}

// A stock Kitex client with the kitex-contrib/config-etcd suite and no
// Sextant code in it follows an rpc_timeout written through Sextant's API:
// a 100 ms timeout makes its calls to a 300 ms server time out, and deleting
// the config restores Kitex's default (1 s), so they succeed again.
func TestStockKitexClientFollowsRPCTimeout(t *testing.T) {
	var kitexPrefix string
	etcd, _, cc := setup(t, func(c *center.Config) { kitexPrefix = c.KitexPrefix })

	ln, err := kitexx.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := aggregatorsvc.NewServer(&slowServer{}, kitexx.ServerOptions("comment-svc", ln)...)
	done := kitexx.Serve(srv)
	defer func() { srv.Stop(); <-done }()

	ec, err := cfgetcd.NewClient(cfgetcd.Options{Node: []string{strings.TrimPrefix(etcd.Endpoint, "http://")}, Prefix: kitexPrefix})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := aggregatorsvc.NewClient("comment-svc", client.WithHostPorts(ln.Addr().String()),
		client.WithSuite(cfgclient.NewSuite("comment-svc", "feed-api", ec)))
	if err != nil {
		t.Fatal(err)
	}
	call := func() error {
		_, err := kc.Ingest(context.Background(), &aggregator.ReportBatch{})
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("before any config (default 1 s timeout): %v", err)
	}

	path := "/v1/configs/rpc_timeout/feed-api/comment-svc"
	put := cc.do("PUT", path, `{"*": {"rpc_timeout_ms": 100, "conn_timeout_ms": 50}}`)
	if put.status != 200 {
		t.Fatalf("PUT: %s", put)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := call(); !errors.Is(err, kerrors.ErrRPCTimeout) {
			return fmt.Errorf("call with the 100 ms timeout: %v", err)
		}
		return nil
	})

	if r := cc.do("DELETE", path, "", "If-Match", put.header.Get("ETag")); r.status != 200 {
		t.Fatalf("DELETE: %s", r)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := call(); err != nil {
			return fmt.Errorf("call after the delete: %v", err)
		}
		return nil
	})
}
