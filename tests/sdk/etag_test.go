package sdk_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// exchange is one long poll as a proxy between the SDK and a real server
// saw it.
type exchange struct {
	status            int
	ifNoneMatch, etag string
}

// recordingProxy forwards to addr and keeps every exchange.
type recordingProxy struct {
	mu   sync.Mutex
	seen []exchange
}

func (p *recordingProxy) start(t *testing.T, addr string) string {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		p.mu.Lock()
		p.seen = append(p.seen, exchange{rec.Code, r.Header.Get("If-None-Match"), rec.Header().Get("ETag")})
		p.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// sentBack checks that each poll sent the ETag of the last answer as
// If-None-Match, exactly as it came, and that some poll did.
func (p *recordingProxy) sentBack() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	held, sent := "", 0
	for i, x := range p.seen {
		if x.ifNoneMatch != held {
			return fmt.Errorf("poll %d sent If-None-Match %q, want %q (the ETag of the answer held)", i, x.ifNoneMatch, held)
		}
		if x.ifNoneMatch != "" {
			sent++
		}
		if x.status == http.StatusOK {
			if !strings.HasPrefix(x.etag, `"`) {
				return fmt.Errorf("answer %d has ETag %q, not a quoted string", i, x.etag)
			}
			held = x.etag
		}
	}
	if sent < 2 {
		return fmt.Errorf("%d polls sent an ETag back (of %d)", sent, len(p.seen))
	}
	return nil
}

// The SDK's long polls send back the ETag mesh-core and the config-center
// sent, as they sent it.
func TestLongPollsSendTheETagBack(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	mc := coretest.Start(t, etcd, prefix, nil)
	cc := centertest.Start(t, etcd, prefix, nil)

	var discovery, config recordingProxy
	token := testenv.ServiceToken(t, etcd, prefix, "comment-svc")
	d := sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: discovery.start(t, mc.Addr()), Token: token, Wait: 200 * time.Millisecond})
	defer d.Close()
	d.Watch("comment-svc", nil, nil)
	w := sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: config.start(t, cc.Addr()), Token: token,
		Service: "comment-svc", Instance: "10.0.0.1:9000", Wait: 200 * time.Millisecond})
	w.Start()
	defer w.Close()

	// A change on each side in between: a new answer, a new ETag.
	r := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: mc.Addr(), Token: token,
		Registration: sdk.Registration{Service: "comment-svc", Instance: "10.0.0.1:9000", Addr: "10.0.0.1:9000"}})
	defer r.Close()
	req, _ := http.NewRequest("PUT", "http://"+cc.Addr()+"/v1/configs/limit/comment-svc", strings.NewReader(`{"qps_limit": 100}`))
	req.Header.Set("Authorization", "Bearer "+centertest.AdminToken)
	resp, err := testenv.HTTP.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT a config: %v %v", resp, err)
	}
	resp.Body.Close()
	testenv.Eventually(t, 20*time.Second, func() error {
		if s, ok := d.Get("comment-svc"); !ok || len(s.Instances) != 1 {
			return fmt.Errorf("discovery: no instance yet")
		}
		if a := w.Current(); a == nil || len(a.Configs) != 1 {
			return fmt.Errorf("config watch: no config yet")
		}
		if err := discovery.sentBack(); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
		if err := config.sentBack(); err != nil {
			return fmt.Errorf("config watch: %w", err)
		}
		return nil
	})
}
