package center_test

import (
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
)

// Over an etcd that requires client certificates and has auth enabled, the
// config-center with its certificate and a user whose role grants its two
// prefixes (Sextant's and the Kitex suite's) stores and serves a config.
func TestEtcdOverTLSWithUserAndPassword(t *testing.T) {
	ca := testenv.NewCA(t)
	etcd := testenv.StartEtcdTLS(t, ca)
	prefix := testenv.Prefix(t)
	kitexPrefix := "/" + strings.Trim(prefix, "/") + "-kitex/"
	etcd.EnableAuth(t, "config-center", "s3cret", prefix, kitexPrefix)
	cert, key := ca.Issue(t, "config-center")
	cc := centertest.Start(t, etcd, prefix, func(c *center.Config) {
		c.Etcd.CAFile, c.Etcd.CertFile, c.Etcd.KeyFile = ca.CertFile, cert, key
		c.Etcd.Username, c.Etcd.Password = "config-center", "s3cret"
	})
	api := apiClient{t: t, base: "http://" + cc.Addr(), token: centertest.AdminToken}
	v := validDocs["rpc_timeout"]
	path := "/v1/configs/rpc_timeout/" + v.scope
	if r := api.do("PUT", path, v.doc); r.status != 200 {
		t.Fatalf("PUT: %s", r)
	}
	if r := api.do("GET", path, ""); r.status != 200 || !sameJSON(t, documentOf(t, r), []byte(v.doc)) {
		t.Fatalf("GET: %s", r)
	}
	resp, err := etcd.Client(t).Get(testenv.Context(t), kitexPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count == 0 {
		t.Fatalf("keys of the Kitex suite under %s: %v, %v", kitexPrefix, resp, err)
	}
}
