package sdk_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// logBuffer is a slog destination a test reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// A data plane that starts while mesh-core and the config-center cannot be
// reached serves the instances and configs its previous run cached on
// disk, marked stale, until they answer; corrupt files and files of
// another format are ignored with a log line; a fresh answer replaces the
// cached one, and with the control plane reachable at start the cache is
// never read.
func TestDiskCacheServesAColdStartWithoutTheControlPlane(t *testing.T) {
	const svc = "comment-svc"
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	cc := centertest.Start(t, etcd, prefix, nil)
	token := testenv.ServiceToken(t, etcd, prefix, svc)
	dir := t.TempDir()

	r := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: mc.Addr(), Token: token,
		Registration: sdk.Registration{Service: svc, Instance: "10.0.0.1:9000", Addr: "10.0.0.1:9000"}})
	defer r.Close()
	req, _ := http.NewRequest("PUT", "http://"+cc.Addr()+"/v1/configs/limit/"+svc, strings.NewReader(`{"qps_limit": 100}`))
	resp, err := testenv.HTTP.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT a config: %v %v", resp, err)
	}
	resp.Body.Close()

	run := func(meshCore, configCenter string, log *slog.Logger) (*sdk.Discovery, *sdk.ConfigWatcher) {
		d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: meshCore, Token: token, Wait: 200 * time.Millisecond, CacheDir: dir, Logger: log})
		d.Watch(svc, nil, nil)
		w := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: configCenter, Token: token, Service: svc,
			Instance: "10.0.0.1:9000", Wait: 200 * time.Millisecond, CacheDir: dir, Logger: log})
		w.Start()
		return d, w
	}
	fresh := func(d *sdk.Discovery, w *sdk.ConfigWatcher) error {
		if s, ok := d.Get(svc); !ok || len(s.Instances) != 1 || s.Cached || s.Stale {
			return fmt.Errorf("discovery: no fresh answer with one instance yet")
		}
		if a := w.Current(); a == nil || len(a.Configs) != 1 {
			return fmt.Errorf("config watch: no config yet")
		}
		if _, ok := w.FromCache(); ok {
			return fmt.Errorf("config watch: the answer in hand is the cached one")
		}
		return nil
	}

	// The previous run: the answers are cached as they arrive.
	d, w := run(mc.Addr(), cc.Addr(), nil)
	testenv.Eventually(t, 20*time.Second, func() error { return fresh(d, w) })
	d.Close()
	w.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 2 {
		t.Fatalf("cache files %v, want one for discovery and one for the config", files)
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}

	// The control plane cannot be reached: the cached answers are served,
	// marked as such.
	nowhere := testenv.FreeAddr(t) // nothing listens there
	var logs logBuffer
	d, w = run(nowhere, nowhere, logs.logger())
	testenv.Eventually(t, 10*time.Second, func() error {
		s, ok := d.Get(svc)
		if !ok || len(s.Instances) != 1 || s.Instances[0].Instance != "10.0.0.1:9000" {
			return fmt.Errorf("discovery: no cached instance")
		}
		if !s.Cached || !s.Stale || s.ReceivedAt.IsZero() {
			return fmt.Errorf("the cached snapshot is not marked: cached %v, stale %v, received %v", s.Cached, s.Stale, s.ReceivedAt)
		}
		a := w.Current()
		if a == nil || len(a.Configs) != 1 || a.Configs[0].Kind != "limit" {
			return fmt.Errorf("config watch: no cached config")
		}
		if _, ok := w.FromCache(); !ok {
			return fmt.Errorf("config watch: the cached answer is not marked")
		}
		return nil
	})
	d.Close()
	w.Close()

	// Corrupt files and files of another format are ignored, with a log line.
	for _, f := range files {
		b, _ := os.ReadFile(f)
		switch {
		case strings.Contains(filepath.Base(f), "discovery"):
			b = b[:len(b)/2]
		default:
			b = bytes.Replace(b, []byte(`"format":1`), []byte(`"format":99`), 1)
		}
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logs = logBuffer{}
	d, w = run(nowhere, nowhere, logs.logger())
	testenv.Eventually(t, 10*time.Second, func() error {
		out := logs.String()
		if !strings.Contains(out, "ignoring a corrupt SDK cache file") || !strings.Contains(out, "ignoring an SDK cache file of another format") {
			return fmt.Errorf("no log line about the bad cache files yet: %s", out)
		}
		return nil
	})
	if s, ok := d.Get(svc); ok {
		t.Fatalf("served %+v from a corrupt cache file", s)
	}
	if a := w.Current(); a != nil {
		t.Fatalf("applied %+v from a cache file of another format", a)
	}
	d.Close()
	w.Close()

	// With the control plane reachable at start, the cache is not read (a
	// listener sees no cached snapshot), and the files are good again.
	var snaps recording
	d = sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: mc.Addr(), Token: token, Wait: 200 * time.Millisecond, CacheDir: dir})
	d.Watch(svc, nil, snaps.add)
	w = sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: cc.Addr(), Token: token, Service: svc,
		Instance: "10.0.0.1:9000", Wait: 200 * time.Millisecond, CacheDir: dir})
	w.Start()
	testenv.Eventually(t, 20*time.Second, func() error { return fresh(d, w) })
	d.Close()
	w.Close()
	for _, s := range snaps.all() {
		if s.Cached {
			t.Fatal("a cached snapshot was served while mesh-core answered")
		}
	}

	// A cached answer is replaced by the first fresh one: the previous run
	// cached one instance, mesh-core now has two.
	r2 := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: mc.Addr(), Token: token,
		Registration: sdk.Registration{Service: svc, Instance: "10.0.0.2:9000", Addr: "10.0.0.2:9000"}})
	defer r2.Close()
	proxy := &switchProxy{}
	addr := proxy.start(t, mc.Addr())
	d = sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: addr, Token: token, Wait: 200 * time.Millisecond, CacheDir: dir})
	defer d.Close()
	d.Watch(svc, nil, nil)
	testenv.Eventually(t, 10*time.Second, func() error {
		if s, ok := d.Get(svc); !ok || !s.Cached {
			return fmt.Errorf("no cached snapshot while mesh-core is away")
		}
		return nil
	})
	proxy.open()
	testenv.Eventually(t, 20*time.Second, func() error {
		if s, ok := d.Get(svc); !ok || s.Cached || len(s.Instances) != 2 {
			return fmt.Errorf("no fresh snapshot with two instances yet")
		}
		return nil
	})
}

// switchProxy answers 503 until open, then forwards to its target.
type switchProxy struct {
	mu     sync.Mutex
	opened bool
}

func (p *switchProxy) open() {
	p.mu.Lock()
	p.opened = true
	p.mu.Unlock()
}

func (p *switchProxy) start(t *testing.T, addr string) string {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		opened := p.opened
		p.mu.Unlock()
		if !opened {
			http.Error(w, "away", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
