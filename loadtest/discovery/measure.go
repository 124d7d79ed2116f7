package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/client"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
	"github.com/sextant-mesh/sextant/loadtest/internal/longpoll"
	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
)

// maxChanges: change k gives the marker instance weight k+1, at most 999.
const maxChanges = 998

// report is one run's figures; the /proc ones are NaN without a child.
type report struct {
	pollers       int
	changes       []changeStats
	ramp, settled time.Duration
	idle, busy    procStats // before the pollers; with every poll held
	peakMiB       float64
	// Over idleFor with every poll held and no change: CPU per second.
	idleFor                      time.Duration
	idleCPUPerSec, idleCliPerSec float64
	// From the first publish until every poller held the last change and
	// mesh-core was back to its idle rate (quietAfter after that).
	window, quietAfter    time.Duration
	cpuSec, clientCPUSec  float64
	clientUser, clientSys float64
	otherCPUSec, stealSec float64 // other processes' CPU and steal: noise
	counts                longpoll.Counts
	errors                string
}

// changeStats is one change: when the pollers had read it, from
// PublishPolicy's return (read) and from its call (called), when mesh-core
// had built their answers (built), how many missed it.
type changeStats struct {
	read, called, built quantiles
	missed              int
	publish             time.Duration // how long PublishPolicy took
}

// quantiles: ms from PublishPolicy's return until 50, 99 and 100 % of the
// pollers (+Inf: never).
type quantiles struct{ p50, p99, p100 float64 }

func quantilesOf(ms []float64) quantiles {
	q := longpoll.QuantilesOf(ms)
	return quantiles{q.P50, q.P99, q.P100}
}

// procStats is the mesh-core process at one moment.
type procStats struct{ rssMiB, goroutines, waiting, heapMiB, stackMiB float64 }

// idleFor is how long CPU is measured with every poll held, before the changes.
const idleFor = 2 * time.Second

// runLoad measures the mesh-core at tg; pid, when not 0, is its process.
func runLoad(o options, tg target, pid int) (*report, error) {
	pub, err := meshcoresvc.NewClient("mesh-core", client.WithHostPorts(tg.kitex), client.WithRPCTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	pr := probe{pid: pid, m: longpoll.NewMetrics(tg.http)}
	defer pr.m.Close()
	if err := setup(longpoll.WithToken(pr.m.HC, tg.admin), pub, tg.http, o.instances); err != nil {
		return nil, err
	}
	rep := &report{pollers: o.pollers, idle: pr.sample(), idleFor: idleFor}
	computedAt := make([]atomic.Int64, o.changes+1)
	f := newFanout(tg.pollAddr(o.port), tg.poller, o, computedAt)
	defer f.Stop()
	if rep.ramp, rep.settled, err = f.Start(60*time.Second + time.Duration(o.pollers)*time.Millisecond); err != nil {
		return nil, err
	}
	// An answered poller is not yet waiting again: measure once all are held.
	longpoll.WaitUntil(30*time.Second, func() bool { return pr.sample().waiting >= float64(o.pollers) })
	rep.busy = pr.sample()

	cpu0, cli0 := cpuSeconds(pid), longpoll.SelfCPU()
	time.Sleep(idleFor)
	rep.idleCPUPerSec = (cpuSeconds(pid) - cpu0) / idleFor.Seconds()
	rep.idleCliPerSec = (longpoll.SelfCPU() - cli0) / idleFor.Seconds()

	if o.cpuProfile != "" {
		stop, err := startProfile(o.cpuProfile)
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	counts0 := f.Counts()
	cpu0, cli0 = cpuSeconds(pid), longpoll.SelfCPU()
	user0, sys0 := longpoll.SelfUserSys()
	busy0, steal0 := proc.MachineCPU()
	pubs, err := publishChanges(pub, o, computedAt)
	if err != nil {
		return nil, err
	}
	n := int64(o.pollers)
	longpoll.WaitUntil(o.interval+10*time.Second, func() bool { return f.Held(o.changes) == n })
	// The answered pollers poll again, and mesh-core reads those polls too.
	rep.quietAfter = longpoll.UntilQuiet(func() float64 { return cpuSeconds(pid) }, rep.idleCPUPerSec)
	rep.window = time.Since(pubs[0].start)
	rep.cpuSec, rep.clientCPUSec = cpuSeconds(pid)-cpu0, longpoll.SelfCPU()-cli0
	user1, sys1 := longpoll.SelfUserSys()
	rep.clientUser, rep.clientSys = user1-user0, sys1-sys0
	busy1, steal1 := proc.MachineCPU()
	rep.otherCPUSec, rep.stealSec = busy1-busy0-rep.cpuSec-rep.clientCPUSec, steal1-steal0
	rep.counts = f.Counts().Sub(counts0)
	rep.peakMiB = statusMiB(pid, "VmHWM")
	f.Stop()
	rep.changes = stats(f, o.pollers, pubs, pubs[len(pubs)-1].at.Add(o.interval))
	rep.errors = f.Errors()
	return rep, nil
}

// published is one change: when PublishPolicy was called and returned.
type published struct{ start, at time.Time }

// publishChanges publishes changes 1..n, the first at once, then one every interval.
func publishChanges(pub meshcoresvc.Client, o options, computedAt []atomic.Int64) ([]published, error) {
	t := time.NewTicker(o.interval)
	defer t.Stop()
	pubs := make([]published, o.changes)
	for k := 1; k <= o.changes; k++ {
		if k > 1 {
			<-t.C
		}
		start := time.Now()
		computedAt[k].Store(start.UnixMilli())
		if err := publish(pub, k, o.instances, start.UnixMilli()); err != nil {
			return nil, fmt.Errorf("change %d: %w", k, err)
		}
		pubs[k-1] = published{start: start, at: time.Now()}
	}
	return pubs, nil
}

// stats computes each change's figures. A poller missed a change if it did
// not hold it before the next was published (before end, for the last).
func stats(f *longpoll.Fanout, pollers int, pubs []published, end time.Time) []changeStats {
	out := make([]changeStats, len(pubs))
	read, called, built := make([]float64, pollers), make([]float64, pollers), make([]float64, pollers)
	for i, p := range pubs {
		deadline := end
		if i+1 < len(pubs) {
			deadline = pubs[i+1].at
		}
		for j := range pollers {
			seen, b, ok := f.Seen(j, i+1)
			read[j], called[j], built[j] = math.Inf(1), math.Inf(1), math.Inf(1)
			if ok {
				read[j], called[j] = float64(seen.Sub(p.at))/1e6, float64(seen.Sub(p.start))/1e6
			}
			if b != 0 { // whole ms (policy_age_ms): take the middle of it
				built[j] = float64(b) + 0.5 - float64(p.at.UnixMicro())/1e3
			}
			if !ok || !seen.Before(deadline) {
				out[i].missed++
			}
		}
		out[i].read, out[i].called, out[i].built, out[i].publish = quantilesOf(read), quantilesOf(called), quantilesOf(built), p.at.Sub(p.start)
	}
	return out
}

// instanceID names the j-th registered instance (and is its address).
func instanceID(j int) string { return fmt.Sprintf("10.1.%d.%d:9000", j/250, j%250+1) }

// weightsFor is the policy of change k (0: the one in place before the
// measured changes). The marker instance 0 gets weight k+1, so that an
// answer tells its change; every other weight moves with k too.
func weightsFor(k, instances int) []*meshcore.InstanceWeight {
	ws := make([]*meshcore.InstanceWeight, instances)
	for j := range ws {
		ws[j] = &meshcore.InstanceWeight{Instance: instanceID(j), Weight: int32(1 + (k+37*j)%1000), Reason: "loadtest"}
	}
	return ws
}

// publish stores change k as policy version k+1, computed at atMs.
func publish(pub meshcoresvc.Client, k, instances int, atMs int64) error {
	p := &meshcore.Policy{Service: service, Version: int64(k + 1), ComputedAtMs: atMs, CalculatorId: "loadtest-discovery",
		Overload: &meshcore.Overload{State: "normal"}, Weights: weightsFor(k, instances)}
	_, err := pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: p})
	return err
}

// setup registers the instances (an hour's lease: nobody heartbeats), waits
// until mesh-core shows them all (a policy may name registered instances
// only), then publishes change 0 and waits until mesh-core shows it.
func setup(hc *http.Client, pub meshcoresvc.Client, addr string, instances int) error {
	for j := range instances {
		body, _ := json.Marshal(map[string]any{"service": service, "instance": instanceID(j), "ttl_s": 3600})
		resp, err := hc.Post("http://"+addr+"/v1/instances", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("register %s: HTTP %d", instanceID(j), resp.StatusCode)
		}
	}
	shows := func(cond func([]byte) bool) bool {
		return longpoll.WaitUntil(20*time.Second, func() bool {
			resp, err := hc.Get("http://" + addr + "/v1/discovery/" + service + "?version=0&wait=0s")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			return err == nil && cond(body)
		})
	}
	if !shows(func(b []byte) bool { return bytes.Count(b, []byte(`"instance":`)) == instances }) {
		return fmt.Errorf("mesh-core does not show the %d instances after 20s", instances)
	}
	if err := publish(pub, 0, instances, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("initial policy: %w", err)
	}
	if !shows(func(b []byte) bool { return changeOf(b) == 0 }) {
		return fmt.Errorf("mesh-core does not show the initial policy after 20s")
	}
	return nil
}

// probe reads the mesh-core process: /proc when pid is not 0, /metrics always.
type probe struct {
	pid int
	m   *longpoll.Metrics
}

func (p probe) sample() procStats {
	v := p.m.Read("go_goroutines", "sextant_meshcore_pollers_waiting", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes")
	return procStats{rssMiB: statusMiB(p.pid, "VmRSS"), goroutines: v[0], waiting: v[1], heapMiB: v[2] / (1 << 20), stackMiB: v[3] / (1 << 20)}
}

// startProfile writes a CPU profile of this process to path until stop.
func startProfile(path string) (stop func(), err error) {
	out, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); out.Close() }, nil
}
