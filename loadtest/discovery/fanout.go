package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Pollers start rampStep at a time, rampRate per second: 10,000 dials at
// once would overflow mesh-core's accept backlog (somaxconn), and a lost SYN
// is retried only after a second.
const (
	rampRate = 2000
	rampStep = 100
)

// fanout is the simulated data planes, one long-polling loop each.
type fanout struct {
	url        string // the discovery URL without its query
	wait       string
	client     *http.Client
	held       []atomic.Int64 // held[k]: pollers holding change k or newer
	computedAt []atomic.Int64 // computedAt[k]: computed_at_ms of change k's policy
	pollers    []*poller
	bufs       sync.Pool
	wg         sync.WaitGroup
	errCount   atomic.Int64
	firstErr   atomic.Value // string
}

// poller is one data plane; only its own goroutine writes it while it runs.
type poller struct {
	seen   []time.Time // seen[k]: when it first held change k or newer
	built  []int64     // built[k]: when mesh-core built that answer (Unix ms; 0 unknown)
	latest int         // the newest change it holds; -1 before its first answer
}

func newFanout(addr string, o options) *fanout {
	f := &fanout{
		url: "http://" + addr + "/v1/discovery/" + service, wait: o.wait.String(), client: newClient(o.pollers, o.wait),
		held: make([]atomic.Int64, o.changes+1), computedAt: make([]atomic.Int64, o.changes+1),
		bufs: sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
	for range o.pollers {
		f.pollers = append(f.pollers, &poller{seen: make([]time.Time, o.changes+1), built: make([]int64, o.changes+1), latest: -1})
	}
	return f
}

// newClient keeps one keep-alive connection per poller: with fewer idle
// slots than pollers, answers would close connections, the next polls dial
// again, and the closed ones pile up in TIME_WAIT until the ephemeral ports
// run out.
func newClient(pollers int, wait time.Duration) *http.Client {
	return &http.Client{
		Timeout: wait + 30*time.Second, // mesh-core holds each poll for up to wait
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        pollers,
			MaxIdleConnsPerHost: pollers,
			MaxConnsPerHost:     0,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// start ramps the pollers up and returns once every one holds change 0: how
// long the ramp took, and how long until then.
func (f *fanout) start(ctx context.Context) (ramp, settled time.Duration, err error) {
	t0 := time.Now()
	for i, p := range f.pollers {
		f.wg.Go(func() { p.run(ctx, f) })
		if (i+1)%rampStep == 0 {
			time.Sleep(rampStep * time.Second / rampRate)
		}
	}
	ramp = time.Since(t0)
	n := int64(len(f.pollers))
	if !waitUntil(60*time.Second, func() bool { return f.held[0].Load() == n }) {
		return ramp, 0, fmt.Errorf("%d of %d pollers got a first answer within 60s; %s", f.held[0].Load(), n, f.errors())
	}
	return ramp, time.Since(t0), nil
}

// stop ends every poll (cancel is start's context's) and waits for the pollers.
func (f *fanout) stop(cancel context.CancelFunc) {
	cancel()
	f.wg.Wait()
	f.client.CloseIdleConnections()
}

// run polls until ctx ends, always with the version it holds.
func (p *poller) run(ctx context.Context, f *fanout) {
	var last int64 // 0: answer at once
	for ctx.Err() == nil {
		r, err := f.poll(ctx, last)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			f.addError(err)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		default:
			last = r.version
			p.hold(f, r)
		}
	}
}

// reply is one answer as a poller read it.
type reply struct {
	version int64
	change  int       // -1 on a 304
	at      time.Time // when the poller had read it
	ageMs   int64     // policy_age_ms: mesh-core built it at computed_at_ms + ageMs
}

// hold records that the poller holds r's change, and so every older one.
func (p *poller) hold(f *fanout, r reply) {
	var built int64
	if r.change >= 0 && r.change < len(f.computedAt) && r.ageMs >= 0 {
		built = f.computedAt[r.change].Load() + r.ageMs
	}
	for k := min(r.change, len(p.seen)-1); p.latest < k; {
		p.latest++
		p.seen[p.latest], p.built[p.latest] = r.at, built
		f.held[p.latest].Add(1)
	}
}

// poll runs one long poll.
func (f *fanout) poll(ctx context.Context, last int64) (reply, error) {
	r := reply{version: last, change: -1}
	u := f.url + "?version=" + strconv.FormatInt(last, 10) + "&wait=" + f.wait
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return r, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	buf := f.bufs.Get().(*bytes.Buffer)
	defer f.bufs.Put(buf)
	buf.Reset()
	_, err = buf.ReadFrom(resp.Body) // to the end, so the connection is reused
	r.at = time.Now()
	switch {
	case err != nil:
		return r, err
	case resp.StatusCode == http.StatusNotModified:
		return r, nil
	case resp.StatusCode != http.StatusOK:
		return r, fmt.Errorf("HTTP %d: %.120s", resp.StatusCode, buf.Bytes())
	}
	if r.version, err = intField(buf.Bytes(), "version"); err != nil {
		return r, err
	}
	if r.ageMs, err = intField(buf.Bytes(), "policy_age_ms"); err != nil {
		r.ageMs = -1
	}
	r.change = changeOf(buf.Bytes())
	return r, nil
}

// markerKey starts the marker instance's object in an answer.
var markerKey = []byte(`"instance":"` + instanceID(0) + `"`)

// changeOf tells an answer's change by the marker instance's weight (see
// weightsFor); -1 before the first policy. The answer's version is a content
// hash, so it cannot tell the order of changes.
func changeOf(body []byte) int {
	_, rest, ok := bytes.Cut(body, markerKey)
	if !ok {
		return -1
	}
	w, err := intField(rest, "weight") // the next "weight" is the marker's own
	if err != nil {
		return -1
	}
	return int(w) - 1
}

// intField reads the first integer field called name without decoding the
// whole answer: decoding 10,000 answers per change would take this process's
// core from reading the later ones.
func intField(body []byte, name string) (int64, error) {
	_, rest, ok := bytes.Cut(body, []byte(`"`+name+`":`))
	end := bytes.IndexAny(rest, ",}")
	if !ok || end < 0 {
		return 0, fmt.Errorf("no %s in %.120s", name, body)
	}
	return strconv.ParseInt(string(bytes.TrimSpace(rest[:end])), 10, 64)
}

// addError counts a poll error and keeps the first one's message.
func (f *fanout) addError(err error) {
	if f.errCount.Add(1) == 1 {
		f.firstErr.Store(err.Error())
	}
}

// errors describes the poll errors so far; "" when none.
func (f *fanout) errors() string {
	if n := f.errCount.Load(); n > 0 {
		return fmt.Sprintf("%d poll errors, the first: %v", n, f.firstErr.Load())
	}
	return ""
}

// waitUntil polls cond every 10 ms; false if it did not hold within timeout.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
