// Package testenv is the generic harness Sextant's integration tests share:
// real servers (an embedded etcd, influxd) on free loopback ports, each
// stopped when its test ends, and waiting for conditions and metrics. It
// knows no service (tests/layers checks it): each service offers its own
// helper to start it for a test, as net/http/httptest does (coretest,
// centertest, mixertest, calculatortest), and scenarios across services live
// in tests/.
package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/bearer"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdembed"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/freeport"
	"github.com/sextant-mesh/sextant/internal/influxdev"
)

// FreeAddr returns a loopback host:port that was free a moment ago, for
// servers that cannot be handed a listener.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return addr
}

// Etcd is an embedded etcd server for one test.
type Etcd struct {
	*etcdembed.Server
	Endpoint          string
	t                 testing.TB
	dir, client, peer string
	opts              []etcdembed.Option
	// access is how the test's own clients connect: the credentials of
	// StartEtcdTLS and EnableAuth.
	access etcdx.Config
}

// StartEtcd starts an embedded etcd on free ports with its data in a
// temporary folder; it stops when the test ends.
func StartEtcd(t testing.TB, opts ...etcdembed.Option) *Etcd {
	t.Helper()
	e := &Etcd{t: t, dir: t.TempDir(), client: FreeAddr(t), peer: FreeAddr(t), opts: opts}
	e.start()
	t.Cleanup(func() {
		if e.Server != nil {
			e.Server.Close()
		}
	})
	return e
}

// StartEtcdTLS starts an embedded etcd as StartEtcd does, serving clients
// over TLS only with a certificate of ca and requiring a client certificate
// ca signed. The test's clients (Client, Config) present one ca issued.
func StartEtcdTLS(t testing.TB, ca *CA) *Etcd {
	t.Helper()
	cert, key := ca.Issue(t, "etcd")
	e := StartEtcd(t, etcdembed.ClientTLS(cert, key, ca.CertFile))
	e.access.CAFile = ca.CertFile
	e.access.CertFile, e.access.KeyFile = ca.Issue(t, "sextant-test")
	return e
}

func (e *Etcd) start() {
	e.t.Helper()
	srv, err := etcdembed.Start(e.dir, e.client, e.peer, e.opts...)
	if err != nil {
		e.t.Fatalf("embedded etcd: %v", err)
	}
	e.Server, e.Endpoint = srv, srv.ClientURL
	e.access.Endpoints = srv.ClientURL
}

// Config is how the test's own clients reach etcd, under prefix: what the
// per-service helpers (coretest, centertest, mixertest, calculatortest)
// start a service with.
func (e *Etcd) Config(prefix string) etcdx.Config {
	c := e.access
	c.Prefix = prefix
	return c
}

// EnableAuth turns etcd's authentication on: a root user (which the test's
// own clients use from then on) and user, with password, in a role that may
// read and write every key under each of prefixes.
func (e *Etcd) EnableAuth(t testing.TB, user, password string, prefixes ...string) {
	t.Helper()
	cli := e.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	root := "root-" + user + "-password"
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", root); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "sextant"); return err },
	}
	for _, p := range prefixes {
		steps = append(steps, func() error {
			_, err := cli.RoleGrantPermission(ctx, "sextant", p, clientv3.GetPrefixRangeEnd(p), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		})
	}
	steps = append(steps,
		func() error { _, err := cli.UserAdd(ctx, user, password); return err },
		func() error { _, err := cli.UserGrantRole(ctx, user, "sextant"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	)
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("etcd auth: %v", err)
		}
	}
	e.access.Username, e.access.Password = "root", root
}

// Stop stops the server, as an outage; Restart brings it back with its data
// on the same address.
func (e *Etcd) Stop() {
	e.Server.Close()
	e.Server = nil
}

// Restart starts the server stopped by Stop.
func (e *Etcd) Restart() { e.start() }

// Client returns an etcd client for the test, closed when it ends.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := etcdx.NewClient(e.Config(""))
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Prefix is a fresh etcd prefix per test, so tests sharing a server do not see
// each other's keys.
func Prefix(t testing.TB) string { return fmt.Sprintf("/sextant-test/%s/", t.Name()) }

// Eventually polls cond until it returns nil, failing the test with cond's
// last error after timeout. Timeouts here are generous limits for a loaded
// machine, not speed assertions.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Context is a context that ends with the test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// StartInfluxd starts a real influxd 1.8 (bin/influxd, which `make test`
// installs) on free loopback ports with its data in a temporary folder; it
// stops when the test ends. Without one the test fails, naming the make
// target that builds it: `go test ./...` on a fresh clone says what to run.
func StartInfluxd(t testing.TB) *influxdev.Server {
	t.Helper()
	wd, _ := os.Getwd()
	bin, err := influxdev.Find(wd)
	if err != nil {
		t.Fatalf("%v: run `make bin/influxd` first (or `make test`, which builds it and runs every test)", err)
	}
	s, err := influxdev.Start(bin, t.TempDir(), FreeAddr(t), FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// AdminToken is the operators' token of every service a test starts with the
// per-service test helpers (coretest, centertest, mixertest, calculatortest).
const AdminToken = "test-admin-token"

// HTTP is a client for tests that call Sextant's APIs as an operator: it
// sends AdminToken with every request that carries no credential of its own.
var HTTP = bearer.Client(AdminToken)

// ServiceToken issues a data-plane token of service as the config-center
// does (the record it writes in etcd under prefix) and returns it. Services
// learn it from their mirror of etcd a moment later; the SDK's clients
// retry until then.
func ServiceToken(t testing.TB, etcd *Etcd, prefix, service string) string {
	t.Helper()
	record, token := authn.NewToken(authn.DataPlane(service, "test"), time.Hour, time.Now())
	b, _ := json.Marshal(record)
	if _, err := etcd.Client(t).Put(context.Background(), api.Keys{Prefix: prefix}.Token(record.ID), string(b)); err != nil {
		t.Fatalf("token of %s: %v", service, err)
	}
	return token
}
