package sdk

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// A heartbeat that fails while the lease may still be alive is retried
// soon enough for the first one after the failure to come before the
// lease ends: at most a fifth of the heartbeat interval apart, where the
// exponential backoff alone waited 0.8 s, then 1.6 s, 3.2 s (and made
// instances with a 10 s TTL leave discovery after a 5 s partition).
func TestHeartbeatRetriesBeforeTheLeaseEnds(t *testing.T) {
	var mu sync.Mutex
	var failing bool
	var attempts []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now()) // registrations and heartbeats
		switch {
		case failing:
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.Method == http.MethodPost:
			w.WriteHeader(http.StatusCreated)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	// TTL 6 s: a heartbeat every 2 s, retries at most 400 ms apart.
	r := StartRegistrar(RegistrarOptions{MeshCore: srv.URL, Registration: Registration{Service: "svc", Instance: "i1", Addr: "127.0.0.1:1", TTLSeconds: 6}})
	defer r.Close()
	waitAttempts := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := len(attempts)
			mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d heartbeats, want %d", got, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAttempts(2) // registered, a heartbeat answered: the lease is alive
	mu.Lock()
	failing = true
	first := len(attempts)
	mu.Unlock()
	time.Sleep(3500 * time.Millisecond)
	mu.Lock()
	failing = false
	failed := attempts[first:]
	mu.Unlock()
	if len(failed) < 3 {
		t.Fatalf("%d attempts in 3.5 s of failures", len(failed))
	}
	for i := 1; i < len(failed); i++ {
		if gap := failed[i].Sub(failed[i-1]); gap > 650*time.Millisecond {
			t.Fatalf("attempt %d %s after the one before, while the lease (6 s) may still be alive; want at most 400 ms", i, gap.Round(time.Millisecond))
		}
	}
}
