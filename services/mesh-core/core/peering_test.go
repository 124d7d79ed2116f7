package core_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// exportsOf calls GET /v1/exports with token ("" for none).
func exportsOf(t *testing.T, mc *core.MeshCore, token, query string) (int, api.DiscoveryBatch, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+mc.Addr()+"/v1/exports?"+query, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("exports: %v", err)
	}
	defer resp.Body.Close()
	var b api.DiscoveryBatch
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			t.Fatalf("exports answer: %v", err)
		}
	}
	return resp.StatusCode, b, resp.Header
}

// instancesBy lists an answer's instances as "instance@cluster/peer".
func instancesBy(a answer) []string {
	var out []string
	for _, in := range a.Instances {
		out = append(out, in.Instance+"@"+in.Cluster+"/"+in.Peer)
	}
	slices.Sort(out)
	return out
}

// Two control planes that export the same service to each other: each
// serves its own instance and the other's, marked; what one imported is
// never exported again (no loop); the export endpoint needs a credential,
// answers the exported services only, with local instances only, and
// long-polls; a policy may weigh an imported instance; a peer that goes is
// dropped after the TTL, and imported again when it returns.
func TestMutualPeering(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefixA, prefixB := testenv.Prefix(t)+"a/", testenv.Prefix(t)+"b/"
	addrA, addrB := testenv.FreeAddr(t), testenv.FreeAddr(t)
	tokenForA := testenv.ServiceToken(t, etcd, prefixB, "peer-a") // B issues A's token
	tokenForB := testenv.ServiceToken(t, etcd, prefixA, "peer-b") // A issues B's token
	const ttl = time.Second
	startA := func() *core.MeshCore {
		return coretest.Start(t, etcd, prefixA, func(c *core.Config) {
			c.HTTPAddr = addrA
			c.Peering = core.PeeringConfig{Export: []string{"svc"}, TTL: ttl, Wait: time.Second,
				Peers: []core.Peer{{Name: "b", URL: "http://" + addrB, Token: tokenForA}}}
		})
	}
	a := startA()
	b := coretest.Start(t, etcd, prefixB, func(c *core.Config) {
		c.HTTPAddr = addrB
		c.Peering = core.PeeringConfig{Export: []string{"svc"}, TTL: ttl, Wait: time.Second,
			Peers: []core.Peer{{Name: "a", URL: "http://" + addrA, Token: tokenForB}}}
	})
	register(t, a, "svc", "10.0.0.1:80", 60)
	register(t, a, "hidden", "10.0.0.1:81", 60)
	register(t, b, "svc", "10.0.1.1:80", 60)
	want := func(mc *core.MeshCore, service string, instances ...string) {
		t.Helper()
		waitFor(t, mc, service, func(got answer) error {
			if g := instancesBy(got); !slices.Equal(g, instances) {
				return fmt.Errorf("%s: %v, want %v", service, g, instances)
			}
			return nil
		})
	}
	want(a, "svc", "10.0.0.1:80@/", "10.0.1.1:80@b/b")
	want(b, "svc", "10.0.0.1:80@a/a", "10.0.1.1:80@/")
	want(b, "hidden")

	// The export endpoint: a credential, the exported services, local instances only.
	if status, _, _ := exportsOf(t, a, "", ""); status != http.StatusUnauthorized {
		t.Errorf("exports without a token: %d, want 401", status)
	}
	status, batch, hdr := exportsOf(t, a, tokenForB, "wait=0s")
	if status != http.StatusOK || len(batch.Services) != 1 || batch.Services[0].Service != "svc" ||
		len(batch.Services[0].Instances) != 1 || batch.Services[0].Instances[0].Instance != "10.0.0.1:80" {
		t.Fatalf("A's exports: %d %+v, want svc with its own instance only", status, batch)
	}
	if hdr.Get("ETag") == "" {
		t.Error("exports answer without an ETag")
	}
	v := fmt.Sprint(batch.Version)
	if status, _, _ := exportsOf(t, a, tokenForB, "wait=0s&version="+v); status != http.StatusNotModified {
		t.Errorf("exports at the same version: %d, want 304", status)
	}
	// A change of what B imported does not change what A exports.
	register(t, b, "svc", "10.0.1.2:80", 60)
	want(a, "svc", "10.0.0.1:80@/", "10.0.1.1:80@b/b", "10.0.1.2:80@b/b")
	if status, _, _ := exportsOf(t, a, tokenForB, "wait=0s&version="+v); status != http.StatusNotModified {
		t.Errorf("A's exports after B's change: %d, want 304 (imports are not exported)", status)
	}
	// A held poll is released by a local change.
	released := make(chan int, 1)
	go func() {
		s, got, _ := exportsOf(t, a, tokenForB, "wait=20s&version="+v)
		if len(got.Services) != 1 {
			released <- s * 10
			return
		}
		released <- s*10 + len(got.Services[0].Instances)
	}()
	time.Sleep(100 * time.Millisecond) // let the poll be held; the result holds either way
	register(t, a, "svc", "10.0.0.2:80", 60)
	select {
	case r := <-released:
		if r != 2002 {
			t.Errorf("released export poll: status*10+instances = %d, want 200 with 2 instances", r)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the held export poll was not released by a local registration")
	}

	// A policy of B may weigh (and eject) an instance imported from A.
	p := policy("svc", 1, map[string]int32{"10.0.1.1:80": 500, "10.0.1.2:80": 500, "10.0.0.1:80": 0})
	resp, err := publisher(t, b).PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: p})
	if err != nil || resp.StoredVersion != 1 {
		t.Fatalf("policy weighing an imported instance: %+v %v", resp, err)
	}
	waitFor(t, b, "svc", func(got answer) error {
		for _, in := range got.Instances {
			if in.Instance == "10.0.0.1:80" && (in.Healthy || in.Weight != 0) {
				return fmt.Errorf("imported 10.0.0.1:80: healthy %v weight %d, want ejected by B's policy", in.Healthy, in.Weight)
			}
			if in.Instance == "10.0.0.2:80" && (!in.Healthy || in.Weight != 100) {
				return fmt.Errorf("imported 10.0.0.2:80: healthy %v weight %d, want A's weight as it came (100)", in.Healthy, in.Weight)
			}
		}
		return nil
	})

	// A goes: B keeps A's instances until the TTL, then drops them; B's own
	// instances and readiness stay. A comes back: imported again.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	want(b, "svc", "10.0.1.1:80@/", "10.0.1.2:80@/")
	if st := b.Peers()["a"]; st.State != core.PeerLost || st.Instances != 0 {
		t.Errorf("peer a after the TTL: %+v, want lost", st)
	}
	if r := call(t, "GET", "http://"+b.Addr()+"/readyz", nil); r.status != http.StatusOK || !strings.Contains(string(r.body), `"lost"`) {
		t.Errorf("B's readyz with A lost: %d %s", r.status, r.body)
	}
	// The test client's idle keep-alive connections lead to the stopped A.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	a = startA()
	register(t, a, "svc", "10.0.0.1:80", 60) // a stopping replica may take its instances with its session
	register(t, a, "svc", "10.0.0.2:80", 60)
	want(b, "svc", "10.0.0.1:80@a/a", "10.0.0.2:80@a/a", "10.0.1.1:80@/", "10.0.1.2:80@/")
	if st := b.Peers()["a"]; st.State != core.PeerConnected || st.Instances != 2 || st.Services != 1 {
		t.Errorf("peer a back: %+v, want connected with 2 instances of 1 service", st)
	}
}

// A mesh-core that exports nothing answers an empty batch, and holds a poll
// at that version for its wait (a peer does not poll in a loop).
func TestNothingExported(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	a := coretest.Start(t, etcd, testenv.Prefix(t), nil)
	status, batch, _ := exportsOf(t, a, testenv.AdminToken, "wait=0s")
	if status != http.StatusOK || len(batch.Services) != 0 || batch.Version == 0 {
		t.Fatalf("exports of a mesh-core exporting nothing: %d %+v", status, batch)
	}
	start := time.Now()
	status, _, _ = exportsOf(t, a, testenv.AdminToken, fmt.Sprintf("wait=1s&version=%d", batch.Version))
	if took := time.Since(start); status != http.StatusNotModified || took < 900*time.Millisecond {
		t.Errorf("a poll at the version of nothing exported: %d after %s, want 304 after the wait (1s)", status, took)
	}
}

// A peer behind a network that drops packets leaves polls hanging rather
// than failing them: it counts as unreachable once a poll goes unanswered
// past its wait (and a slack), and its instances are dropped after the TTL.
func TestPeerBehindABlackHole(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	a := coretest.Start(t, etcd, testenv.Prefix(t)+"a/", func(c *core.Config) { c.Peering.Export = []string{"svc"} })
	register(t, a, "svc", "10.0.0.1:80", 60)
	var hang atomic.Bool
	released := make(chan struct{})
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select { // the black hole: no answer, no error
			case <-r.Context().Done():
			case <-released:
			}
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, "http://"+a.Addr()+r.URL.RequestURI(), nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(func() { close(released); proxy.Close() })
	b := coretest.Start(t, etcd, testenv.Prefix(t)+"b/", func(c *core.Config) {
		c.Peering.Peers = []core.Peer{{Name: "a", URL: proxy.URL, Token: testenv.AdminToken}}
		c.Peering.TTL, c.Peering.Wait = 2*time.Second, time.Second
	})
	waitFor(t, b, "svc", func(got answer) error {
		if len(got.Instances) != 1 || got.Instances[0].Peer != "a" {
			return fmt.Errorf("svc in B: %+v, want A's instance", got.Instances)
		}
		return nil
	})
	hang.Store(true)
	testenv.Eventually(t, 20*time.Second, func() error {
		if st := b.Peers()["a"]; st.State != core.PeerUnreachable || !strings.Contains(st.Error, "no answer") {
			return fmt.Errorf("peer a: %+v, want unreachable, no answer", st)
		}
		return nil
	})
	waitFor(t, b, "svc", func(got answer) error {
		if len(got.Instances) != 0 {
			return fmt.Errorf("svc in B: %d instances, want A's dropped", len(got.Instances))
		}
		return nil
	})
	if st := b.Peers()["a"]; st.State != core.PeerLost {
		t.Errorf("peer a after the TTL: %+v, want lost", st)
	}
}

// An https:// peer is verified with --peer-ca-file; without it, the
// system's roots refuse the peer's private CA and nothing is imported.
func TestPeerOverTLS(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	ca := testenv.NewCA(t)
	cert, key := ca.Issue(t, "mesh-core-a")
	a := coretest.Start(t, etcd, testenv.Prefix(t)+"a/", func(c *core.Config) {
		c.Peering.Export = []string{"svc"}
		c.TLS.CertFile, c.TLS.KeyFile = cert, key
	})
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	testenv.Eventually(t, 10*time.Second, func() error {
		req, _ := http.NewRequest("POST", "https://"+a.Addr()+"/v1/instances", strings.NewReader(`{"service":"svc","instance":"10.0.0.1:80"}`))
		req.Header.Set("Authorization", "Bearer "+testenv.AdminToken)
		resp, err := tlsClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("register over TLS: %d", resp.StatusCode)
		}
		return nil
	})
	url := "https://" + a.Addr()
	trusting := coretest.Start(t, etcd, testenv.Prefix(t)+"b/", func(c *core.Config) {
		c.Peering.Peers = []core.Peer{{Name: "a", URL: url, Token: testenv.AdminToken, CAFile: ca.CertFile}}
	})
	other := coretest.Start(t, etcd, testenv.Prefix(t)+"c/", func(c *core.Config) {
		c.Peering.Peers = []core.Peer{{Name: "a", URL: url, Token: testenv.AdminToken}}
	})
	waitFor(t, trusting, "svc", func(got answer) error {
		if len(got.Instances) != 1 || got.Instances[0].Peer != "a" {
			return fmt.Errorf("svc: %+v, want A's instance over TLS", got.Instances)
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := other.Peers()["a"]; st.State != core.PeerLost || !strings.Contains(st.Error, "certificate") {
			return fmt.Errorf("peer a without its CA: %+v, want lost on the certificate", st)
		}
		return nil
	})
	bad := core.DefaultConfig()
	bad.Peering.Peers = []core.Peer{{Name: "a", URL: url, CAFile: cert + ".missing"}}
	bad.Etcd = etcd.Config(testenv.Prefix(t) + "d/")
	bad.HTTPAddr, bad.KitexAddr, bad.PollAddr = "127.0.0.1:0", "127.0.0.1:0", ""
	if _, err := core.New(bad, logx.Discard()); err == nil || !strings.Contains(err.Error(), "--peer-ca-file") {
		t.Errorf("New with a missing --peer-ca-file: %v", err)
	}
}

// A starting mesh-core is ready once every peer's first poll has ended (or
// after at most 5 s): its first snapshots already hold what it imports. A
// peer that never answers holds it back no longer than that.
func TestReadyWithTheFirstPeerAnswers(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	a := coretest.Start(t, etcd, testenv.Prefix(t)+"a/", func(c *core.Config) { c.Peering.Export = []string{"svc"} })
	register(t, a, "svc", "10.0.0.1:80", 60)
	released := make(chan struct{})
	hole := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // never answers
		case <-r.Context().Done():
		case <-released:
		}
	}))
	t.Cleanup(func() { close(released); hole.Close() })
	start := time.Now()
	b := coretest.Start(t, etcd, testenv.Prefix(t)+"b/", func(c *core.Config) {
		c.Peering.Peers = []core.Peer{{Name: "a", URL: "http://" + a.Addr(), Token: testenv.AdminToken},
			{Name: "hole", URL: hole.URL, Token: testenv.AdminToken}}
	})
	sawHole := false
	testenv.Eventually(t, 20*time.Second, func() error {
		reasons := testenv.Ready(t, b.Addr())
		for _, r := range reasons {
			sawHole = sawHole || strings.Contains(r, "peer hole")
		}
		if len(reasons) > 0 {
			return fmt.Errorf("not ready: %v", reasons)
		}
		return nil
	})
	if took := time.Since(start); !sawHole || took < 4*time.Second {
		t.Errorf("ready %s after start (saw the wait for the silent peer: %v), want after about 5 s", took, sawHole)
	}
	// Ready: A's instance is in the first snapshot.
	status, got := poll(t, b, "svc", 0, "0s")
	if status != http.StatusOK || len(got.Instances) != 1 || got.Instances[0].Peer != "a" {
		t.Errorf("svc from B once ready: %d %+v, want A's instance", status, got.Instances)
	}
}

// A peer refusing the token (401) is unreachable, not connected; the
// local mesh-core is ready all the same.
func TestPeerRefusesTheToken(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	a := coretest.Start(t, etcd, testenv.Prefix(t)+"a/", func(c *core.Config) { c.Peering.Export = []string{"svc"} })
	b := coretest.Start(t, etcd, testenv.Prefix(t)+"b/", func(c *core.Config) {
		c.Peering.Peers = []core.Peer{{Name: "a", URL: "http://" + a.Addr(), Token: "not-a-token"}}
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		st := b.Peers()["a"]
		if st.State != core.PeerLost || !strings.Contains(st.Error, "401") {
			return fmt.Errorf("peer a: %+v, want lost with the 401", st)
		}
		return nil
	})
	if v := testenv.Metric(t, b.Addr(), `sextant_meshcore_peer_polls_total{peer="a",result="error"}`); v < 1 {
		t.Errorf("peer poll errors: %v", v)
	}
	if r := call(t, "GET", "http://"+b.Addr()+"/readyz", nil); r.status != http.StatusOK {
		t.Errorf("readyz: %d %s", r.status, r.body)
	}
}

func TestPeeringFlags(t *testing.T) {
	cfg := core.DefaultConfig()
	fs := flag.NewFlagSet("mesh-core", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.RegisterFlags(fs)
	err := fs.Parse([]string{"--export", "a,b", "--export", "c", "--peer", "east=https://mesh-core.east:7703",
		"--peer-token-file", "east=/run/peer/east", "--peer-ca-file", "east=/run/peer/east-ca.crt", "--peer", "west=http://10.0.0.1:7703,north=http://10.0.0.2:7703", "--peer-ttl", "90s"})
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Peering
	if !slices.Equal(p.Export, []string{"a", "b", "c"}) || len(p.Peers) != 3 || p.Peers[2].URL != "http://10.0.0.2:7703" || p.Peers[0] != (core.Peer{Name: "east", URL: "https://mesh-core.east:7703", TokenFile: "/run/peer/east", CAFile: "/run/peer/east-ca.crt"}) ||
		p.Peers[1].URL != "http://10.0.0.1:7703" || p.TTL != 90*time.Second {
		t.Fatalf("parsed %+v", p)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--peer", "no-equals-sign"}); err == nil {
		t.Error("--peer without NAME=: no error")
	}
	for _, bad := range []core.PeeringConfig{
		{Export: []string{"a/b"}},
		{Peers: []core.Peer{{Name: "x", URL: "ftp://h:1"}}, TTL: time.Second, Wait: time.Second},
		{Peers: []core.Peer{{Name: "", URL: "http://h:1"}}, TTL: time.Second, Wait: time.Second},
		{Peers: []core.Peer{{Name: "x", URL: "http://h:1"}, {Name: "x", URL: "http://h:2"}}, TTL: time.Second, Wait: time.Second},
		{Peers: []core.Peer{{Name: "x", URL: "http://h:1"}}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: valid, want an error", bad)
		}
	}
	if _, err := core.New(core.Config{Peering: core.PeeringConfig{Export: []string{"a/b"}}}, nil); err == nil {
		t.Error("New with a bad --export: no error")
	}
}
