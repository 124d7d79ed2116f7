// Command registry measures what registered instances and their heartbeats
// cost mesh-core and etcd, and how long a dead instance takes to disappear.
//
// Two child processes run an embedded etcd and one mesh-core over it, so
// that the CPU of each is measured apart. This process registers -instances
// instances (POST /v1/instances, over -concurrency keep-alive connections),
// -per-service to a service, with ttl_s -ttl, then heartbeats each once every
// -heartbeat (PUT /v1/instances/{service}/{instance}/heartbeat), spread
// evenly over the period, over -conns keep-alive connections. After a
// warm-up of one period it measures -duration: etcd's writes as etcd counts
// them (its own Prometheus metrics: raft proposals committed, mvcc puts,
// leases granted and renewed), the CPU of etcd, mesh-core and this process,
// the heartbeats answered per second and their latency. At the start of the
// span -dead instances stop heartbeating; long polls on their services
// (GET /v1/discovery/{service}) tell when each is gone, which is reported as
// the time since its last answered heartbeat, beside its ttl_s.
//
// -heartbeat takes a list (5s,2s): the same instances are then measured at
// each period in turn, with other dead instances each time, and the figures
// are printed side by side. See docs/benchmarks.md.
//
//	go run ./loadtest/registry -instances 100000 -heartbeat 5s,2s
package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/loadtest/internal/longpoll"
)

type options struct {
	instances, perService, dead, concurrency, conns, procs int
	heartbeats                                             []time.Duration
	ttl                                                    int64
	duration                                               time.Duration
}

// durations is a flag holding a comma-separated list of durations.
type durations []time.Duration

func (d *durations) String() string {
	var s []string
	for _, v := range *d {
		s = append(s, v.String())
	}
	return strings.Join(s, ",")
}

func (d *durations) Set(v string) error {
	*d = nil
	for f := range strings.SplitSeq(v, ",") {
		x, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		*d = append(*d, x)
	}
	return nil
}

func main() {
	switch {
	case len(os.Args) == 2 && os.Args[1] == serveEtcdArg:
		exit(serveEtcd())
	case len(os.Args) == 3 && os.Args[1] == serveMeshCoreArg:
		exit(serveMeshCore(os.Args[2]))
	}
	o := options{heartbeats: durations{5 * time.Second}}
	flag.IntVar(&o.instances, "instances", 100_000, "instances registered")
	flag.IntVar(&o.perService, "per-service", 100, "instances per service")
	flag.Var((*durations)(&o.heartbeats), "heartbeat", "period of each instance's heartbeats; a list (5s,2s) measures each in turn")
	flag.Int64Var(&o.ttl, "ttl", 15, "ttl_s of each registration; heartbeats must come more often")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "measured span at each heartbeat period (after a warm-up of one period)")
	flag.IntVar(&o.dead, "dead", 100, "instances that stop heartbeating at the start of each measured span")
	flag.IntVar(&o.concurrency, "concurrency", 64, "registrations in flight (one keep-alive connection each)")
	flag.IntVar(&o.conns, "conns", 100, "keep-alive connections the heartbeats are spread over (one in flight on each)")
	flag.IntVar(&o.procs, "gomaxprocs", runtime.NumCPU(), "GOMAXPROCS of the etcd and of the mesh-core process")
	flag.Parse()
	exit(run(o))
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func (o options) check() error {
	switch {
	case o.instances < 1 || o.perService < 1 || o.concurrency < 1 || o.conns < 1 || o.procs < 1:
		return errors.New("-instances, -per-service, -concurrency, -conns and -gomaxprocs must be positive")
	case o.dead < 0 || o.dead > o.instances/2:
		return errors.New("-dead must be in [0, instances/2]")
	case o.ttl < 5 || o.ttl > 3600:
		return errors.New("-ttl must be in [5, 3600] (mesh-core's bounds)")
	case o.duration <= 0 || len(o.heartbeats) == 0:
		return errors.New("-duration and -heartbeat must be given")
	}
	for _, p := range o.heartbeats {
		if p <= 0 || p >= time.Duration(o.ttl)*time.Second {
			return fmt.Errorf("-heartbeat %s: must be positive and shorter than -ttl %ds", p, o.ttl)
		}
	}
	return nil
}

func run(o options) error {
	if err := o.check(); err != nil {
		return err
	}
	debug.SetGCPercent(400) // the load generator spends less on garbage collection
	etcd, etcdURL, err := spawn(o.procs, serveEtcdArg)
	if err != nil {
		return err
	}
	defer etcd.Stop()
	mc, httpAddr, err := spawn(o.procs, serveMeshCoreArg, etcdURL)
	if err != nil {
		return err
	}
	defer mc.Stop()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		mc.Stop() // no orphans on Ctrl-C
		etcd.Stop()
		os.Exit(130)
	}()
	fmt.Printf("registry: %d instances in %d services, ttl_s %d, heartbeats every %s over %d connections, %d dead per span, %s measured; "+
		"etcd and mesh-core GOMAXPROCS=%d each, load generator GOMAXPROCS=%d, %d cores\n",
		o.instances, (o.instances+o.perService-1)/o.perService, o.ttl, (*durations)(&o.heartbeats), o.conns, o.dead, o.duration,
		o.procs, runtime.GOMAXPROCS(0), runtime.NumCPU())
	rep, err := runLoad(o, target{etcdURL: etcdURL, http: httpAddr, etcdPid: etcd.Pid(), meshPid: mc.Pid()})
	if err != nil {
		return err
	}
	rep.print(o)
	return nil
}

type report struct {
	reg    regReport
	phases []phaseReport
}

// runLoad registers the fleet (heartbeats already running at the first
// period, so that the first registered do not expire while the last
// register), then measures each heartbeat period in turn.
func runLoad(o options, tg target) (*report, error) {
	f := newFleet(o.instances, o.perService, o.ttl)
	// Each service's data-plane token, issued as the config-center would;
	// mesh-core learns them from etcd a moment later.
	var err error
	if f.tokens, err = longpoll.IssueTokens(tg.etcdURL, api.DefaultPrefix, f.services()...); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	conns := make([]*conn, o.conns)
	for i := range conns {
		conns[i] = newConn(tg.http)
	}
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	h := startHeartbeats(tg, f, o.heartbeats[0], conns)
	before, err := takeSample(tg)
	if err != nil {
		h.stop()
		return nil, err
	}
	rep := &report{reg: register(tg, f, o.concurrency)}
	after, err := takeSample(tg)
	if err != nil {
		h.stop()
		return nil, err
	}
	rep.reg.etcd = after.etcd.sub(before.etcd)
	rep.reg.etcdCPU, rep.reg.mesh = after.etcdCPU-before.etcdCPU, after.meshCPU-before.meshCPU
	if rep.reg.ok == 0 {
		h.stop()
		return rep, fmt.Errorf("no registration succeeded (%d failed)", rep.reg.failed)
	}
	for p, period := range o.heartbeats {
		if p > 0 {
			h = startHeartbeats(tg, f, period, conns)
		}
		ph, err := measure(o, tg, f, h, period, p)
		if err != nil {
			return rep, err
		}
		rep.phases = append(rep.phases, ph)
	}
	return rep, nil
}

func (r *report) print(o options) {
	g := r.reg
	fmt.Printf("registration: %d instances in %.1f s (%.0f/s, %d concurrent), latency p50 %.1f ms p99 %.1f ms, %d failed, %d retried; "+
		"etcd: %.0f raft proposals, %.0f puts, %.0f leases granted; CPU: etcd %.1f s, mesh-core %.1f s\n",
		g.ok, g.took.Seconds(), float64(g.ok)/g.took.Seconds(), o.concurrency, g.p50, g.p99, g.failed, g.retries,
		g.etcd["etcd_server_proposals_committed_total"], g.etcd["etcd_mvcc_put_total"], g.etcd["etcd_debugging_lease_granted_total"],
		g.etcdCPU, g.mesh)
	row := func(label string, cell func(p *phaseReport) string) {
		fmt.Printf("%-44s", label)
		for i := range r.phases {
			fmt.Printf(" %18s", cell(&r.phases[i]))
		}
		fmt.Println()
	}
	perSec := func(p *phaseReport, v float64) string { return fmt.Sprintf("%.1f", v/p.took.Seconds()) }
	cores := func(p *phaseReport, v float64) string {
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf("%.2f", v/p.took.Seconds())
	}
	row("heartbeat period", func(p *phaseReport) string { return p.period.String() })
	row("measured span, s", func(p *phaseReport) string { return fmt.Sprintf("%.1f", p.took.Seconds()) })
	row("live instances heartbeating", func(p *phaseReport) string { return fmt.Sprint(p.alive) })
	row("heartbeats/s wanted", func(p *phaseReport) string { return fmt.Sprintf("%.0f", float64(p.alive)/p.period.Seconds()) })
	row("heartbeats/s answered 200", func(p *phaseReport) string { return perSec(p, float64(p.hb.ok)) })
	row("heartbeat latency p50 / p99, ms", func(p *phaseReport) string {
		return fmt.Sprintf("%.2f / %.2f", quantile(p.hbLat, 0.5), quantile(p.hbLat, 0.99))
	})
	row("heartbeats 404 / failed; most behind, s", func(p *phaseReport) string {
		return fmt.Sprintf("%d / %d; %.1f", p.hb.notFound, p.hb.errors, p.hb.maxLag.Seconds())
	})
	for _, c := range etcdCounters {
		row("etcd "+c.label+"/s", func(p *phaseReport) string { return perSec(p, p.etcd[c.name]) })
	}
	row("CPU, cores: etcd", func(p *phaseReport) string { return cores(p, p.etcdCPU) })
	row("CPU, cores: mesh-core", func(p *phaseReport) string { return cores(p, p.meshCPU) })
	row("CPU, cores: load generator (this process)", func(p *phaseReport) string { return cores(p, p.clientCPU) })
	row("CPU, cores: other processes; steal", func(p *phaseReport) string {
		return cores(p, p.otherCPU) + "; " + cores(p, p.steal)
	})
	row("VmRSS MiB: etcd, mesh-core", func(p *phaseReport) string { return fmt.Sprintf("%.0f, %.0f", p.etcdRSS, p.meshRSS) })
	row(fmt.Sprintf("dead detected (of %d)", o.dead), func(p *phaseReport) string { return fmt.Sprintf("%d of %d", len(p.detect), p.dead) })
	row(fmt.Sprintf("dead gone after last heartbeat, s (ttl_s %d)", o.ttl), func(p *phaseReport) string {
		return fmt.Sprintf("%.1f/%.1f/%.1f", quantile(p.detect, 0.5), quantile(p.detect, 0.99), quantile(p.detect, 1))
	})
	fmt.Printf("%-44s %18s\n", "", "(p50/p99/max)")
	row("live instances lost (404, or missing)", func(p *phaseReport) string { return fmt.Sprintf("%d, %d", p.lost, p.liveMissing) })
	for _, p := range r.phases {
		if p.watchErrors > 0 {
			fmt.Printf("heartbeat %s: %d discovery polls failed\n", p.period, p.watchErrors)
		}
	}
}
