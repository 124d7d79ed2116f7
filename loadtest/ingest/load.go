package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/telemetry/telemetrytest"
)

// bodySource hands out the request bodies. They are encoded again every
// half second with fresh timestamps (same services, instances and values):
// a calculator counts records older than its windows as late and does not
// aggregate them, which would flatter it on long runs.
type bodySource struct {
	cur  atomic.Pointer[[][]byte]
	done chan struct{}
}

func newBodies(n, reportsPerReq, edges int, seed uint64) *bodySource {
	b := &bodySource{done: make(chan struct{})}
	first := makeBodies(n, reportsPerReq, edges, seed)
	b.cur.Store(&first)
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-b.done:
				return
			case <-t.C:
				next := makeBodies(n, reportsPerReq, edges, seed)
				b.cur.Store(&next)
			}
		}
	}()
	return b
}

func (b *bodySource) get() [][]byte { return *b.cur.Load() }
func (b *bodySource) stop()         { close(b.done) }

// makeBodies encodes n distinct request bodies up front, so that the load
// generator spends its CPU on HTTP rather than on JSON. Timestamps are taken
// now: the mixer refuses reports older than an hour.
func makeBodies(n, reportsPerReq, edges int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	now := time.Now().UnixMilli()
	bodies := make([][]byte, n)
	for i := range bodies {
		batch := make([]api.Report, reportsPerReq)
		for j := range batch {
			batch[j] = telemetrytest.Report(rng, i*reportsPerReq+j, edges, now)
		}
		b, err := json.Marshal(batch)
		if err != nil {
			panic(err) // plain structs always encode
		}
		bodies[i] = b
	}
	return bodies
}

// newClient keeps exactly conns keep-alive connections open to one host.
// loadTLS is the load generator's TLS toward a mixer serving its edge over
// TLS (sextant+tls): keep-alive connections, and sessions resumed when a
// connection is made again. The serving certificate is the mixer's own,
// issued by the authority the run made; it is not verified here (once per
// connection, it is not what the benchmark measures).
var loadTLS = &tls.Config{InsecureSkipVerify: true, ClientSessionCache: tls.NewLRUClientSessionCache(256), MinVersion: tls.VersionTLS12}

// tlsClient reads the mixer's /metrics, over TLS when it serves TLS.
var tlsClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: loadTLS}}

func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
			TLSClientConfig:     loadTLS,
		},
	}
}

// loadResult is what the client saw during one run.
type loadResult struct {
	elapsed   time.Duration
	ok        int            // answers 202 with the expected accepted count
	latencies []int64        // of the ok answers, in ns
	errors    map[string]int // everything else, by "status: body" sample
}

func (r loadResult) errorCount() int {
	n := 0
	for _, v := range r.errors {
		n += v
	}
	return n
}

// load keeps conns requests in flight for d, cycling through bodies.
func load(client *http.Client, url string, bodies *bodySource, reportsPerReq, conns int, d time.Duration) loadResult {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	want := fmt.Appendf(nil, `"accepted":%d`, reportsPerReq)
	results := make([]loadResult, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conns {
		wg.Go(func() { results[w] = worker(ctx, client, url, bodies, w, want) })
	}
	wg.Wait()
	total := loadResult{elapsed: time.Since(start), errors: map[string]int{}}
	for _, r := range results {
		total.ok += r.ok
		total.latencies = append(total.latencies, r.latencies...)
		for k, v := range r.errors {
			total.errors[k] += v
		}
	}
	slices.Sort(total.latencies)
	return total
}

// tokenEnv holds the operators' token of the servers the tool starts.
const tokenEnv = "SEXTANT_ADMIN_TOKEN"

// worker posts one body after another until ctx ends. A request cut off by
// the deadline is neither counted nor an error.
func worker(ctx context.Context, client *http.Client, url string, bodies *bodySource, w int, want []byte) loadResult {
	res := loadResult{errors: map[string]int{}}
	for i := w; ctx.Err() == nil; i++ {
		pool := bodies.get()
		body := pool[i%len(pool)]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			panic(err) // the URL was checked before the run
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+os.Getenv(tokenEnv))
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				res.errors["transport: "+err.Error()]++
			}
			continue
		}
		answer, err := io.ReadAll(resp.Body) // to the end, so the connection is reused
		resp.Body.Close()
		lat := time.Since(t0)
		switch {
		case err != nil && ctx.Err() != nil:
		case err == nil && resp.StatusCode == http.StatusAccepted && bytes.Contains(answer, want):
			res.ok++
			res.latencies = append(res.latencies, int64(lat))
		default:
			res.errors[fmt.Sprintf("%d: %.200s", resp.StatusCode, answer)]++
		}
	}
	return res
}

// percentileMs reads the p-th percentile (0..100) of sorted ns latencies.
func percentileMs(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return float64(sorted[max(i, 0)]) / 1e6
}
