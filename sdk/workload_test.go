package sdk_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// A workload exists for a credential only, is active once its
// config-center is known, and $SEXTANT_MTLS=off turns it off.
func TestWorkloadOf(t *testing.T) {
	t.Setenv(sdk.TokenEnv, "")
	t.Setenv(sdk.ServiceAccountTokenEnv, "")
	t.Setenv(sdk.ConfigCenterEnv, "")
	if w := sdk.WorkloadOf(""); w != nil || w.Active() {
		t.Fatalf("a workload without a credential: %v", w)
	}
	// A service-account token file that does not exist is no credential.
	file := filepath.Join(t.TempDir(), "token")
	t.Setenv(sdk.ServiceAccountTokenEnv, file)
	if w := sdk.WorkloadOf(""); w != nil {
		t.Fatal("a workload for a missing token file")
	}
	if err := os.WriteFile(file, []byte("jwt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if w := sdk.WorkloadOf(""); w == nil || w.Active() {
		t.Fatalf("a token file: %v, want a workload not active yet", w)
	}
	// The same credential, the same workload; a ConfigWatcher names its
	// config-center (unreachable here: the identity keeps asking).
	token := fmt.Sprintf("token-of-orders-%d", time.Now().UnixNano()) // workloads live as long as the process
	w := sdk.WorkloadOf(token)
	if w == nil || w.Active() || sdk.WorkloadOf(token) != w {
		t.Fatal("one workload per credential")
	}
	sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: "127.0.0.1:1", Service: "orders", Instance: "i", Token: token})
	if !w.Active() || w.Identity() != nil {
		t.Fatalf("after a ConfigWatcher: active %v, identity %v", w.Active(), w.Identity())
	}
	t.Setenv(sdk.MTLSEnv, "off")
	if sdk.WorkloadOf(token) != nil {
		t.Fatal("SEXTANT_MTLS=off: a workload")
	}
}

// A Registrar asks what to advertise every second and registers again at
// once when it changes.
func TestRegistrarAdvertisesTLSModeChanges(t *testing.T) {
	var mu sync.Mutex
	var seen []string // the tls metadata of each registration
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			var reg api.Registration
			_ = json.NewDecoder(r.Body).Decode(&reg)
			mu.Lock()
			seen = append(seen, reg.Metadata[api.TLSMetadataKey])
			mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	var mode sync.Map
	mode.Store("m", "")
	reg := sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: srv.Listener.Addr().String(),
		Registration: sdk.Registration{Service: "orders", Instance: "orders-1", Addr: "127.0.0.1:9", TTLSeconds: 60},
		TLSMode:      func() string { v, _ := mode.Load("m"); return v.(string) }})
	defer reg.Close()
	// waitFor waits for the n-th registration, advertising want.
	waitFor := func(n int, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			got := len(seen)
			mu.Unlock()
			if got >= n && reg.Advertised() == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d registrations, advertised %q; want %d, %q", got, reg.Advertised(), n, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(1, "")
	mode.Store("m", api.TLSPermissive)
	waitFor(2, api.TLSPermissive)
	mode.Store("m", api.TLSStrict)
	waitFor(3, api.TLSStrict)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || seen[0] != "" || seen[1] != api.TLSPermissive || seen[2] != api.TLSStrict {
		t.Fatalf("registrations advertised %q, want \"\", permissive, strict", seen)
	}
}

// A TLSListener a Registrar of the process finds on the registration's
// port advertises its mode once it has a certificate to serve.
func TestRegistrarAdvertisesItsListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ready sync.Map
	l := sdk.NewListener(raw, sdk.ListenerOptions{Advertise: true, Config: func() *tls.Config {
		if _, ok := ready.Load("cert"); ok {
			return &tls.Config{}
		}
		return nil
	}})
	defer l.Close()
	if l.Advertised() != "" {
		t.Fatalf("no certificate yet: advertised %q", l.Advertised())
	}
	ready.Store("cert", true)
	if l.Advertised() != api.TLSPermissive {
		t.Fatalf("with a certificate: advertised %q, want permissive", l.Advertised())
	}
}
