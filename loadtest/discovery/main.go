// Command discovery measures how fast mesh-core fans a policy change out to
// data planes that long-poll it, and what holding those polls open costs.
//
// One child process runs an embedded etcd and one mesh-core (GOMAXPROCS from
// -gomaxprocs); this process registers -instances instances of comment-svc
// and starts -pollers simulated data planes, each looping on
// GET /v1/discovery/comment-svc?wait=<-wait>&version=<last seen> over its
// own keep-alive connection. The client is loadtest/internal/longpoll's:
// raw HTTP/1.1, a request built once per poller, answers read into a reused
// buffer and scanned for three integers, never decoded, so that it costs
// less CPU than mesh-core and the figures are mesh-core's. Once every
// poller holds the current snapshot and waits, it publishes -changes new
// policies through Kitex PublishPolicy, one every -interval. For each change
// it reports how long after PublishPolicy returned 50 %, 99 % and 100 % of
// the pollers had read it (or something newer), the same from the call
// (mesh-core may answer the pollers before its reply to PublishPolicy is
// written, so times from the return can be negative), how many missed it (held it
// only after the next change was published), and, from each answer's
// policy_age_ms, when mesh-core had built those answers. It also reports the
// child's memory and goroutines per held poll, and the CPU time of the child
// and of this process (the load generator), side by side, both idle with
// every poll held and across the changes. See docs/benchmarks.md.
//
//	go run ./loadtest/discovery -pollers 10000
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/internal/longpoll"
)

const service = "comment-svc"

type options struct {
	pollers, instances, changes, procs int
	cpuProfile, port                   string
	interval, wait                     time.Duration
}

// serveArg, as the only argument, makes this binary the child; it is not
// a flag so that -help does not show it.
const serveArg = "-serve-mesh-core"

func main() {
	if len(os.Args) == 2 && os.Args[1] == serveArg {
		exit(serve())
	}
	var o options
	flag.IntVar(&o.pollers, "pollers", 10000, "simulated data planes, each with one long poll (and one connection) open")
	flag.IntVar(&o.instances, "instances", 20, "registered instances of "+service)
	flag.IntVar(&o.changes, "changes", 10, "policy changes measured")
	flag.DurationVar(&o.interval, "interval", time.Second, "time between two changes")
	flag.IntVar(&o.procs, "gomaxprocs", 1, "GOMAXPROCS of the mesh-core process; this one takes the remaining cores")
	flag.DurationVar(&o.wait, "wait", 30*time.Second, "wait of each long poll (mesh-core allows up to 60s)")
	flag.StringVar(&o.port, "port", "poll", `mesh-core port the data planes poll: "poll" (the poll port, --poll-addr) or "http" (the Hertz HTTP port)`)
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the load generator) over the changes to this file")
	flag.Parse()
	exit(run(o))
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "discovery:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func (o options) check() error {
	switch {
	case o.pollers < 1 || o.instances < 1 || o.changes < 1 || o.procs < 1:
		return errors.New("-pollers, -instances, -changes and -gomaxprocs must be positive")
	case o.changes > maxChanges:
		return fmt.Errorf("-changes: at most %d (a change is told by a weight)", maxChanges)
	case o.port != "poll" && o.port != "http":
		return errors.New(`-port must be "poll" or "http"`)
	case o.interval <= 0 || o.wait <= 0 || o.wait > 60*time.Second:
		return errors.New("-interval must be positive, -wait in (0, 60s]")
	}
	return nil
}

func run(o options) error {
	if err := o.check(); err != nil {
		return err
	}
	if err := longpoll.CheckFiles(o.pollers); err != nil {
		return err
	}
	// The load generator keeps the cores the child does not get, and spends
	// less of them on garbage collection (a tenth of its CPU by default).
	runtime.GOMAXPROCS(max(1, runtime.NumCPU()-o.procs))
	debug.SetGCPercent(400)
	ch, err := spawn(o.procs)
	if err != nil {
		return err
	}
	defer ch.Stop()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		ch.Stop() // no orphan mesh-core on Ctrl-C
		os.Exit(130)
	}()
	fmt.Printf("%s: %d instances, %d pollers on the %s port (wait=%s), %d changes every %s; mesh-core+etcd GOMAXPROCS=%d, load generator GOMAXPROCS=%d, %d cores\n",
		service, o.instances, o.pollers, o.port, o.wait, o.changes, o.interval, o.procs, runtime.GOMAXPROCS(0), runtime.NumCPU())
	rep, err := runLoad(o, ch.target, ch.Pid())
	if err != nil {
		return err
	}
	rep.print()
	return nil
}

// print writes one line per change, then the medians and the costs.
func (r *report) print() {
	var cols [10][]float64 // read p50, p99, p100, missed, built p50, p99, p100, called p50, p99, p100
	for i, c := range r.changes {
		fmt.Printf("change %d: %s, missed %d (mesh-core built the answers: %s; publish took %.1f ms; from the publish call: %s)\n",
			i+1, c.read, c.missed, c.built, c.publish.Seconds()*1e3, c.called)
		for j, v := range []float64{c.read.p50, c.read.p99, c.read.p100, float64(c.missed), c.built.p50, c.built.p99, c.built.p100,
			c.called.p50, c.called.p99, c.called.p100} {
			cols[j] = append(cols[j], v)
		}
	}
	var m [10]float64
	for j, col := range cols {
		m[j] = longpoll.Median(col)
	}
	n := float64(r.pollers)
	fmt.Printf("median of %d changes: %s, missed %.0f (mesh-core built the answers: %s)\n",
		len(r.changes), quantiles{m[0], m[1], m[2]}, m[3], quantiles{m[4], m[5], m[6]})
	fmt.Printf("median of %d changes from the publish call (PublishPolicy returns after mesh-core may have answered): %s\n",
		len(r.changes), quantiles{m[7], m[8], m[9]})
	fmt.Printf("ramp: %d pollers started in %.1f s, all held %.1f s after the first\n", r.pollers, r.ramp.Seconds(), r.settled.Seconds())
	fmt.Printf("mesh-core process (with etcd), before the pollers: VmRSS %.1f MiB, Go heap in use %.1f MiB, stacks %.1f MiB, %.0f goroutines\n",
		r.idle.rssMiB, r.idle.heapMiB, r.idle.stackMiB, r.idle.goroutines)
	fmt.Printf("mesh-core process, %.0f polls held: VmRSS %.1f MiB, Go heap in use %.1f MiB, stacks %.1f MiB, %.0f goroutines; VmHWM at the end %.1f MiB\n",
		r.busy.waiting, r.busy.rssMiB, r.busy.heapMiB, r.busy.stackMiB, r.busy.goroutines, r.peakMiB)
	fmt.Printf("per held poll: VmRSS %.1f KiB, heap %.1f KiB, stack %.1f KiB, %.2f goroutines\n",
		(r.busy.rssMiB-r.idle.rssMiB)*1024/n, (r.busy.heapMiB-r.idle.heapMiB)*1024/n, (r.busy.stackMiB-r.idle.stackMiB)*1024/n,
		(r.busy.goroutines-r.idle.goroutines)/n)
	fmt.Printf("idle, every poll held, no change (%.0f s): mesh-core process %.3f CPU-s/s, load generator %.3f CPU-s/s\n",
		r.idleFor.Seconds(), r.idleCPUPerSec, r.idleCliPerSec)
	k := float64(len(r.changes))
	fmt.Printf("CPU from the first publish until every poller held the last change and mesh-core was idle again (%.1f s, idle %.1f s after): mesh-core process %.2f s, load generator %.2f s (user %.2f, system %.2f; %.2f of mesh-core's), other processes %.2f s, steal %.2f s\n",
		r.window.Seconds(), r.quietAfter.Seconds(), r.cpuSec, r.clientCPUSec, r.clientUser, r.clientSys, r.clientCPUSec/r.cpuSec, r.otherCPUSec, r.stealSec)
	idle := r.window.Seconds() / k
	fmt.Printf("per change: mesh-core %.0f ms CPU (%.0f ms above idle), load generator %.0f ms (%.0f ms above idle); per answer: mesh-core %.1f µs, load generator %.1f µs\n",
		r.cpuSec/k*1e3, (r.cpuSec/k-r.idleCPUPerSec*idle)*1e3, r.clientCPUSec/k*1e3, (r.clientCPUSec/k-r.idleCliPerSec*idle)*1e3,
		r.cpuSec/float64(r.counts.Answers)*1e6, r.clientCPUSec/float64(r.counts.Answers)*1e6)
	fmt.Printf("answers during the changes: %d (%d without news), %d not modified, %d errors\n",
		r.counts.Answers, r.counts.NoNews, r.counts.NotModified, r.counts.Errors)
	if r.errors != "" {
		fmt.Println(r.errors)
	}
}

func (q quantiles) String() string {
	return longpoll.Quantiles{P50: q.p50, P99: q.p99, P100: q.p100}.String()
}
