package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
)

const requestTimeout = 10 * time.Second

// target is a running etcd and mesh-core; a pid of 0 means the server runs
// in this process (its CPU is then not told apart).
type target struct {
	etcdURL, http    string
	etcdPid, meshPid int
}

// fleet is the instances this process plays: instance j is "i-<j>" of
// service "svc-<j / perService>".
type fleet struct {
	n, perService int
	ttl           int64
	registered    []atomic.Bool  // registered and not found lost since
	stopped       []atomic.Bool  // a dead instance: no longer heartbeats
	lastOK        []atomic.Int64 // unix ns of its last answered registration or heartbeat
	// tokens[s] is service s's data-plane token: an instance registers and
	// heartbeats with its own service's.
	tokens []string
}

func newFleet(n, perService int, ttl int64) *fleet {
	return &fleet{n: n, perService: perService, ttl: ttl,
		registered: make([]atomic.Bool, n), stopped: make([]atomic.Bool, n), lastOK: make([]atomic.Int64, n)}
}

func (f *fleet) service(j int) string  { return fmt.Sprintf("svc-%05d", j/f.perService) }
func (f *fleet) instance(j int) string { return fmt.Sprintf("i-%07d", j) }
func (f *fleet) token(j int) string    { return f.tokens[j/f.perService] }

// services lists the fleet's services, in order.
func (f *fleet) services() []string {
	out := make([]string, 0, (f.n+f.perService-1)/f.perService)
	for j := 0; j < f.n; j += f.perService {
		out = append(out, f.service(j))
	}
	return out
}

// dead are the instances that stop heartbeating in phase p: spread evenly
// over the fleet (so over services), a different one of each service in
// each phase.
func (f *fleet) dead(count, p int) []int {
	seen := map[int]bool{}
	var out []int
	for d := range count {
		j := (d*f.n/count + p) % f.n
		if !seen[j] && !f.stopped[j].Load() {
			seen[j] = true
			out = append(out, j)
		}
	}
	return out
}

// regReport is what the registration phase measured.
type regReport struct {
	took          time.Duration
	ok, failed    int
	retries       int
	p50, p99      float64 // ms
	etcd          counters
	etcdCPU, mesh float64 // CPU seconds
}

// register registers every instance of f over concurrency connections,
// retrying a failed registration up to 5 times.
func register(tg target, f *fleet, concurrency int) regReport {
	var next atomic.Int64
	var mu sync.Mutex
	var rep regReport
	var lat []float64
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			c := newConn(tg.http)
			defer c.close()
			var body []byte
			var mine []float64
			ok, failed, retries := 0, 0, 0
			for {
				j := int(next.Add(1) - 1)
				if j >= f.n {
					break
				}
				body = fmt.Appendf(body[:0], `{"service":%q,"instance":%q,"addr":"10.%d.%d.%d:8080","ttl_s":%d}`,
					f.service(j), f.instance(j), j>>16&255, j>>8&255, j&255, f.ttl)
				done := false
				for try := 0; try < 6 && !done; try++ {
					if try > 0 {
						retries++
						time.Sleep(100 * time.Millisecond)
					}
					t := time.Now()
					status, err := c.do("POST", "/v1/instances", f.token(j), body, requestTimeout)
					if err == nil && status == 201 {
						now := time.Now()
						mine = append(mine, float64(now.Sub(t))/1e6)
						f.lastOK[j].Store(now.UnixNano())
						f.registered[j].Store(true)
						done = true
					}
				}
				if done {
					ok++
				} else {
					failed++
				}
			}
			mu.Lock()
			rep.ok += ok
			rep.failed += failed
			rep.retries += retries
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	rep.took = time.Since(start)
	slices.Sort(lat)
	rep.p50, rep.p99 = quantile(lat, 0.50), quantile(lat, 0.99)
	return rep
}

// span is the measured span; heartbeats sent within it are counted.
type span struct{ start, end atomic.Int64 } // unix ns; 0: not yet

func (s *span) in(t int64) bool {
	st, e := s.start.Load(), s.end.Load()
	return st != 0 && t >= st && (e == 0 || t < e)
}

// hbStats is one heartbeat connection's account of the measured span.
type hbStats struct {
	sent, ok, notFound, errors int
	lat                        []float32 // ms
	maxLag                     time.Duration
}

// heartbeater heartbeats every registered, live instance of a fleet once
// every period, spread evenly over it: instance j at j/n of the period, over
// conns connections (connection w sends the instances j = w mod conns).
// One that falls behind sends at once until it has caught up.
type heartbeater struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stats  []hbStats
	span   span
	lost   atomic.Int64 // instances answered 404 (no longer registered)
}

func startHeartbeats(tg target, f *fleet, period time.Duration, conns []*conn) *heartbeater {
	ctx, cancel := context.WithCancel(context.Background())
	h := &heartbeater{cancel: cancel, stats: make([]hbStats, len(conns))}
	t0 := time.Now()
	k := len(conns)
	for w := range conns {
		h.wg.Go(func() { h.run(ctx, f, period, t0, w, k, conns[w]) })
	}
	return h
}

func (h *heartbeater) run(ctx context.Context, f *fleet, period time.Duration, t0 time.Time, w, k int, c *conn) {
	st := &h.stats[w]
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var path []byte
	for cycle := 0; ; cycle++ {
		base := t0.Add(time.Duration(cycle) * period)
		for j := w; j < f.n; j += k {
			due := base.Add(time.Duration(int64(j) * int64(period) / int64(f.n)))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			} else if ctx.Err() != nil {
				return
			}
			if !f.registered[j].Load() || f.stopped[j].Load() {
				continue
			}
			path = append(path[:0], "/v1/instances/"...)
			path = append(path, f.service(j)...)
			path = append(path, '/')
			path = append(path, f.instance(j)...)
			path = append(path, "/heartbeat"...)
			t := time.Now()
			status, err := c.do("PUT", string(path), f.token(j), nil, requestTimeout)
			now := time.Now()
			if err == nil && status == 200 {
				f.lastOK[j].Store(now.UnixNano())
			} else if err == nil && status == 404 {
				f.registered[j].Store(false)
				h.lost.Add(1)
			}
			if !h.span.in(t.UnixNano()) {
				continue
			}
			st.sent++
			switch {
			case err != nil || (status != 200 && status != 404):
				st.errors++
			case status == 404:
				st.notFound++
			default:
				st.ok++
				st.lat = append(st.lat, float32(now.Sub(t).Seconds()*1e3))
			}
			st.maxLag = max(st.maxLag, t.Sub(due))
		}
	}
}

// stop ends the heartbeats and merges what each connection counted.
func (h *heartbeater) stop() (total hbStats, lat []float64) {
	h.cancel()
	h.wg.Wait()
	for _, s := range h.stats {
		total.sent += s.sent
		total.ok += s.ok
		total.notFound += s.notFound
		total.errors += s.errors
		total.maxLag = max(total.maxLag, s.maxLag)
		for _, v := range s.lat {
			lat = append(lat, float64(v))
		}
	}
	slices.Sort(lat)
	return total, lat
}

// deadWatch follows one service that has dead instances by long-polling
// GET /v1/discovery/{service} and notes when each dead instance is gone.
type deadWatch struct {
	service string
	dead    []int
	goneAt  map[int]time.Time
	// liveMissing is the most live instances (registered, heartbeating)
	// missing from one answer read in the measured span: instances that
	// expired while alive. (Before the span, the newest registrations may
	// not have reached mesh-core's cache yet.)
	liveMissing int
	span        *span
	errors      int
}

// watchDead long-polls w.service until every dead instance is gone or ctx
// ends.
func (w *deadWatch) run(ctx context.Context, tg target, f *fleet) {
	c := newConn(tg.http)
	defer c.close()
	w.goneAt = map[int]time.Time{}
	var version int64
	lo := slices.Min(w.dead) / f.perService * f.perService
	hi := min(f.n, lo+f.perService)
	for ctx.Err() == nil && len(w.goneAt) < len(w.dead) {
		path := "/v1/discovery/" + w.service + "?wait=2s&version=" + strconv.FormatInt(version, 10)
		status, err := c.do("GET", path, f.token(lo), nil, requestTimeout)
		now := time.Now()
		if err != nil || (status != 200 && status != 304) {
			w.errors++
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if status == 304 {
			continue
		}
		var ans struct {
			Version   int64 `json:"version"`
			Instances []struct {
				Instance string `json:"instance"`
			} `json:"instances"`
		}
		if err := json.Unmarshal(c.body, &ans); err != nil {
			w.errors++
			continue
		}
		version = ans.Version
		present := make(map[string]bool, len(ans.Instances))
		for _, in := range ans.Instances {
			present[in.Instance] = true
		}
		for _, j := range w.dead {
			if _, seen := w.goneAt[j]; !seen && f.stopped[j].Load() && !present[f.instance(j)] {
				w.goneAt[j] = now
			}
		}
		if st := w.span.start.Load(); st == 0 || now.UnixNano() < st {
			continue
		}
		missing := 0
		for j := lo; j < hi; j++ {
			if f.registered[j].Load() && !f.stopped[j].Load() && !present[f.instance(j)] {
				missing++
			}
		}
		w.liveMissing = max(w.liveMissing, missing)
	}
}

// sample is what the processes had spent at one moment.
type sample struct {
	at                    time.Time
	etcd                  counters
	etcdCPU, meshCPU, cli float64
	busy, steal           float64
}

func takeSample(tg target) (sample, error) {
	m, err := scrape(tg.etcdURL + "/metrics")
	if err != nil {
		return sample{}, err
	}
	s := sample{at: time.Now(), etcd: m, etcdCPU: cpuSeconds(tg.etcdPid), meshCPU: cpuSeconds(tg.meshPid)}
	s.cli, _ = proc.CPUSeconds(os.Getpid())
	s.busy, s.steal = proc.MachineCPU()
	return s, nil
}

// phaseReport is one heartbeat period's measured span.
type phaseReport struct {
	period           time.Duration
	alive            int // instances heartbeating at the start of the span
	took             time.Duration
	etcd             counters
	etcdCPU          float64 // CPU seconds over the span
	meshCPU          float64
	clientCPU        float64
	otherCPU         float64 // every other process on the machine
	steal            float64
	hb               hbStats
	hbLat            []float64 // ms, sorted
	lost             int64     // instances answered 404 over the phase
	detect           []float64 // s from last heartbeat to gone, sorted
	dead             int
	liveMissing      int
	watchErrors      int
	etcdRSS, meshRSS float64 // MiB at the end of the span
}

// measure runs one phase on heartbeats already running every period: a
// warm-up of one period, then the measured span, at whose start the dead
// instances of phase p stop; it waits for them to be gone (up to twice
// their TTL and 10 s after the span started) and stops the heartbeats.
func measure(o options, tg target, f *fleet, h *heartbeater, period time.Duration, p int) (phaseReport, error) {
	rep := phaseReport{period: period}
	dead := f.dead(o.dead, p)
	rep.dead = len(dead)
	byService := map[string][]int{}
	for _, j := range dead {
		byService[f.service(j)] = append(byService[f.service(j)], j)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	var watches []*deadWatch
	var wg sync.WaitGroup
	for s, js := range byService {
		w := &deadWatch{service: s, dead: js, span: &h.span}
		watches = append(watches, w)
		wg.Go(func() { w.run(wctx, tg, f) })
	}

	time.Sleep(period) // warm-up: every instance heartbeats on this schedule once
	before, err := takeSample(tg)
	if err != nil {
		h.stop()
		return rep, err
	}
	h.span.start.Store(before.at.UnixNano())
	for _, j := range dead {
		f.stopped[j].Store(true)
	}
	for j := range f.n {
		if f.registered[j].Load() && !f.stopped[j].Load() {
			rep.alive++
		}
	}
	time.Sleep(o.duration)
	after, err := takeSample(tg)
	h.span.end.Store(after.at.UnixNano())
	if err != nil {
		h.stop()
		return rep, err
	}
	rep.etcdRSS, rep.meshRSS = rssMiB(tg.etcdPid), rssMiB(tg.meshPid)
	rep.took = after.at.Sub(before.at)
	rep.etcd = after.etcd.sub(before.etcd)
	rep.etcdCPU, rep.meshCPU, rep.clientCPU = after.etcdCPU-before.etcdCPU, after.meshCPU-before.meshCPU, after.cli-before.cli
	rep.otherCPU = (after.busy - before.busy) - rep.clientCPU - nanToZero(rep.etcdCPU) - nanToZero(rep.meshCPU)
	rep.steal = after.steal - before.steal

	// Detection: the dead must be gone within twice their TTL and 10 s.
	limit := time.Until(before.at.Add(2*time.Duration(o.ttl)*time.Second + 10*time.Second))
	doneWatching := make(chan struct{})
	go func() { wg.Wait(); close(doneWatching) }()
	select {
	case <-doneWatching:
	case <-time.After(limit):
		wcancel()
		<-doneWatching
	}
	rep.hb, rep.hbLat = h.stop()
	rep.lost = h.lost.Load()
	for _, w := range watches {
		for j, at := range w.goneAt {
			rep.detect = append(rep.detect, at.Sub(time.Unix(0, f.lastOK[j].Load())).Seconds())
		}
		rep.liveMissing += w.liveMissing
		rep.watchErrors += w.errors
	}
	slices.Sort(rep.detect)
	return rep, nil
}

// quantile of sorted values (nearest rank); NaN when there are none.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func nanToZero(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}
