package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/loadtest/internal/longpoll"
	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
)

// A watch tells its change by the limit's qps_limit: baseQPS+k for change
// k, baseQPS before the changes.
const (
	baseQPS    = 1000
	maxChanges = 100_000
)

const computedMetric = "sextant_configcenter_watch_answers_computed_total"

// serviceName is the i-th service with a config.
func serviceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// instanceName is the name watch i gives.
func instanceName(i int) string { return fmt.Sprintf("10.9.%d.%d:8080", i/250, i%250+1) }

// report is one run's figures; the /proc ones are NaN without a child.
type report struct {
	o             options
	setup         time.Duration // writing the configs
	changes       []changeStats
	ramp, settled time.Duration
	idle, busy    procStats // before the watches; with every watch held
	peakMiB       float64
	// With every watch held and no change: CPU per second.
	idleCPUPerSec, idleCliPerSec float64
	// From the first write until the last change's watches held it and
	// their new polls were computed.
	window                time.Duration
	cpuSec, clientCPUSec  float64
	otherCPUSec, stealSec float64
	quietAfter            time.Duration // from the last change's watches holding it until the config-center was idle
	counts                longpoll.Counts
	computed              float64 // answers the config-center computed in the window
	concerned             int     // watches the changes concerned, summed
	errors                string
}

// changeStats is one change: when its watches had read it, how many
// missed it, how long the write took.
type changeStats struct {
	service   int
	concerned int
	read      longpoll.Quantiles
	missed    int
	write     time.Duration
}

// procStats is the config-center process at one moment.
type procStats struct{ rssMiB, heapMiB, stackMiB, goroutines, computed float64 }

const idleFor = 2 * time.Second

// watchedBy is the service watch i watches.
func (o options) watchedBy(i int) int { return i % o.watchServices }

// changed is the service change k (1..) writes.
func (o options) changed(k int) int { return (k - 1) % o.watchServices }

// concernedBy lists the watches of service s.
func (o options) concernedBy(s int) []int {
	var out []int
	for i := s; i < o.watches; i += o.watchServices {
		out = append(out, i)
	}
	return out
}

var (
	versionKey = []byte(`"version":`)
	qpsKey     = []byte(`"qps_limit":`)
)

var errNoVersion = errors.New(`watch answer without "version"`)

// decode reads a watch answer: its version (the first "version" member:
// service and instance, before it, are names without quotes) and its
// change, from the limit's qps_limit (the only one in the answer).
func decode(body []byte) (longpoll.Answer, error) {
	v, ok := longpoll.Int(body, versionKey)
	if !ok {
		return longpoll.Answer{}, errNoVersion
	}
	a := longpoll.Answer{Version: v, Change: -1}
	if q, ok := longpoll.Int(body, qpsKey); ok && q >= baseQPS && q-baseQPS <= maxChanges {
		a.Change = int(q - baseQPS)
	}
	return a, nil
}

// runLoad measures the config-center at addr; pid, when not 0, is its process.
func runLoad(o options, addr string, pid int) (*report, error) {
	m := longpoll.NewMetrics(addr)
	defer m.Close()
	w := writer{addr: addr, hc: longpoll.WithToken(&http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: o.writers}}, adminToken)}
	defer w.hc.CloseIdleConnections()
	rep := &report{o: o}
	t0 := time.Now()
	revs, err := w.setup(o)
	if err != nil {
		return nil, err
	}
	rep.setup = time.Since(t0)
	pr := probe{pid: pid, m: m}
	rep.idle = pr.sample()
	sdkToken, err := w.issueToken("loadtest-sdk")
	if err != nil {
		return nil, err
	}

	f := longpoll.New(longpoll.Config{
		Addr: addr, Token: sdkToken, Pollers: o.watches, Changes: o.changes, BufSize: 1024, RampRate: o.ramp,
		Target: func(i int) string {
			return "/v1/watch?service=" + serviceName(o.watchedBy(i)) + "&instance=" + instanceName(i) + "&wait=" + o.wait.String() + "&version="
		},
		Decode: func(_ int, body []byte) (longpoll.Answer, error) { return decode(body) },
	})
	defer f.Stop()
	if rep.ramp, rep.settled, err = f.Start(60*time.Second + time.Duration(o.watches)*time.Millisecond); err != nil {
		return nil, err
	}
	// A watch is held once its second poll was computed (the first, with
	// version 0, is answered at once). A config-center without the counter
	// (before fd120cf) holds a goroutine per held watch.
	counted := !math.IsNaN(rep.idle.computed)
	held := func() bool {
		s := pr.sample()
		if counted {
			return s.computed-rep.idle.computed >= float64(2*o.watches)
		}
		return s.goroutines-rep.idle.goroutines >= float64(o.watches)
	}
	if !longpoll.WaitUntil(30*time.Second, held) {
		s := pr.sample()
		return nil, fmt.Errorf("watches not held after 30s: the config-center computed %.0f answers (want %d), runs %.0f goroutines (%.0f before)",
			s.computed-rep.idle.computed, 2*o.watches, s.goroutines, rep.idle.goroutines)
	}
	rep.busy = pr.sample()

	cpu0, cli0 := cpuSeconds(pid), longpoll.SelfCPU()
	time.Sleep(idleFor)
	rep.idleCPUPerSec = (cpuSeconds(pid) - cpu0) / idleFor.Seconds()
	rep.idleCliPerSec = (longpoll.SelfCPU() - cli0) / idleFor.Seconds()

	counts0, computed0 := f.Counts(), pr.sample().computed
	cpu0, cli0 = cpuSeconds(pid), longpoll.SelfCPU()
	busy0, steal0 := proc.MachineCPU()
	writes := make([]written, o.changes)
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for k := 1; k <= o.changes; k++ {
		if k > 1 {
			<-tick.C
		}
		s := o.changed(k)
		start := time.Now()
		rev, err := w.put(s, baseQPS+k, revs[s])
		if err != nil {
			return nil, fmt.Errorf("change %d: %w", k, err)
		}
		revs[s] = rev
		writes[k-1] = written{start: start, at: time.Now()}
		rep.concerned += len(o.concernedBy(s))
	}
	last := int64(len(o.concernedBy(o.changed(o.changes))))
	longpoll.WaitUntil(o.interval+10*time.Second, func() bool { return f.Held(o.changes) == last })
	// The answered watches poll again, and that poll is computed too.
	if counted {
		longpoll.WaitUntil(2*time.Second, func() bool { return pr.sample().computed-computed0 >= float64(2*rep.concerned) })
	}
	// Work a change causes may go on after its watches are answered (before
	// fd120cf every held watch recomputed its answer): measure until the
	// config-center is back to its idle rate.
	rep.quietAfter = longpoll.UntilQuiet(func() float64 { return cpuSeconds(pid) }, rep.idleCPUPerSec)
	rep.window = time.Since(writes[0].start)
	rep.cpuSec, rep.clientCPUSec = cpuSeconds(pid)-cpu0, longpoll.SelfCPU()-cli0
	busy1, steal1 := proc.MachineCPU()
	rep.otherCPUSec, rep.stealSec = busy1-busy0-rep.cpuSec-rep.clientCPUSec, steal1-steal0
	rep.counts, rep.computed = f.Counts().Sub(counts0), pr.sample().computed-computed0
	rep.peakMiB = statusMiB(pid, "VmHWM")
	f.Stop()
	rep.changes = stats(f, o, writes, writes[len(writes)-1].at.Add(o.interval))
	rep.errors = f.Errors()
	return rep, nil
}

// written is one change: when its PUT was sent and when it returned.
type written struct{ start, at time.Time }

// stats computes each change's figures over the watches it concerns, in ms
// from when its PUT was sent: the PUT returns only after pruning history
// and audit, after the watches are answered. A watch missed a change if it did not hold it before the next was written
// (before end, for the last).
func stats(f *longpoll.Fanout, o options, writes []written, end time.Time) []changeStats {
	out := make([]changeStats, len(writes))
	for i, wr := range writes {
		deadline := end
		if i+1 < len(writes) {
			deadline = writes[i+1].at
		}
		who := o.concernedBy(o.changed(i + 1))
		read := make([]float64, len(who))
		for j, p := range who {
			seen, _, ok := f.Seen(p, i+1)
			read[j] = math.Inf(1)
			if ok {
				read[j] = float64(seen.Sub(wr.start)) / 1e6
			}
			if !ok || !seen.Before(deadline) {
				out[i].missed++
			}
		}
		out[i].service, out[i].concerned = o.changed(i+1), len(who)
		out[i].read, out[i].write = longpoll.QuantilesOf(read), wr.at.Sub(wr.start)
	}
	return out
}

// writer writes configs through the config-center's API.
type writer struct {
	addr string
	hc   *http.Client
}

// put writes qps_limit qps as service s's limit, over revision rev (0: a
// new config), and returns the new revision (the answer's ETag).
func (w writer) put(s, qps int, rev int64) (int64, error) {
	req, err := http.NewRequest(http.MethodPut, "http://"+w.addr+"/v1/configs/limit/"+serviceName(s),
		strings.NewReader(`{"qps_limit":`+strconv.Itoa(qps)+`}`))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if rev > 0 {
		req.Header.Set("If-Match", strconv.Quote(strconv.FormatInt(rev, 10)))
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		return 0, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("PUT limit/%s: HTTP %d: %.200s", serviceName(s), resp.StatusCode, body)
	}
	newRev, ok := longpoll.ParseETag(resp.Header.Get("ETag"))
	if !ok {
		return 0, fmt.Errorf("PUT limit/%s: ETag %q", serviceName(s), resp.Header.Get("ETag"))
	}
	return newRev, nil
}

// setup writes the configs, o.writers at a time, and waits until the
// config-center's view holds them all: it follows etcd in revision order,
// so once it shows a config written after all the others, it shows them.
// It returns each config's revision.
func (w writer) setup(o options) ([]int64, error) {
	revs := make([]int64, o.configs)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, o.writers)
	for g := range o.writers {
		wg.Go(func() {
			for s := int(next.Add(1) - 1); s < o.configs && errs[g] == nil; s = int(next.Add(1) - 1) {
				revs[s], errs[g] = w.put(s, baseQPS, 0)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	last := o.configs - 1
	rev, err := w.put(last, baseQPS+maxChanges+1, revs[last]) // a later write: when the view shows it, it shows all
	if err != nil {
		return nil, err
	}
	if revs[last], err = w.put(last, baseQPS, rev); err != nil {
		return nil, err
	}
	shows := func() bool {
		resp, err := w.hc.Get("http://" + w.addr + "/v1/watch?service=" + serviceName(last) + "&instance=setup&wait=0s&version=0")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		q, ok := longpoll.Int(body, qpsKey)
		return ok && q == baseQPS
	}
	if !longpoll.WaitUntil(30*time.Second, shows) {
		return nil, fmt.Errorf("the config-center does not show the %d configs after 30s", o.configs)
	}
	return revs, nil
}

// probe reads the config-center process: /proc when pid is not 0, /metrics always.
type probe struct {
	pid int
	m   *longpoll.Metrics
}

func (p probe) sample() procStats {
	v := p.m.Read("go_goroutines", computedMetric, "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes")
	return procStats{rssMiB: statusMiB(p.pid, "VmRSS"), goroutines: v[0], computed: v[1], heapMiB: v[2] / (1 << 20), stackMiB: v[3] / (1 << 20)}
}

// issueToken asks the config-center for a data-plane token of service, as
// `sextant token create` does; the simulated SDKs watch with it.
func (w *writer) issueToken(service string) (string, error) {
	body, _ := json.Marshal(api.TokenRequest{Service: service})
	resp, err := w.hc.Post("http://"+w.addr+"/v1/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var issued api.TokenIssued
	if err := json.NewDecoder(resp.Body).Decode(&issued); err != nil || resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("token of %s: HTTP %d", service, resp.StatusCode)
	}
	// The config-center verifies it from its mirror of etcd, a moment later.
	if !longpoll.WaitUntil(10*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, "http://"+w.addr+"/v1/configs?service="+service, nil)
		req.Header.Set("Authorization", "Bearer "+issued.Token)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	}) {
		return "", fmt.Errorf("token of %s: not accepted after 10s", service)
	}
	return issued.Token, nil
}
