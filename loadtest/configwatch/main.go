// Command configwatch measures what a config change costs the
// config-center when many SDKs long-poll GET /v1/watch, and whether the
// change wakes only the watches it concerns.
//
// One child process runs an embedded etcd and one config-center
// (GOMAXPROCS from -gomaxprocs). This process writes -configs configs (a
// limit for each of the services svc-00000, svc-00001, ...), then starts
// -watches simulated SDKs, spread evenly over the first -watch-services
// services, each looping on GET /v1/watch?service=S&instance=I&wait=<-wait>&
// version=<last seen> over its own keep-alive connection (the client of
// loadtest/internal/longpoll: raw HTTP/1.1, no JSON decoding). Once every
// watch is held, it writes -changes new limits, one every -interval, each
// to the next watched service (PUT /v1/configs/limit/<service>), and
// reports for each how long after the PUT was sent 50 %, 99 % and 100 % of
// the watches of that service held it, how many missed it, how many other
// watches were answered (none should be), and how many answers the
// config-center computed (sextant_configcenter_watch_answers_computed_total:
// two per concerned watch, one when it is woken and one when it polls
// again, if nothing else is woken). It also reports the child's memory per
// held watch, and the CPU of the child and of this process over the
// changes. See docs/benchmarks.md.
//
//	go run ./loadtest/configwatch -configs 10000 -watches 10000 -watch-services 1000
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

type options struct {
	configs, watches, watchServices, changes, procs, writers, ramp int
	interval, wait                                                 time.Duration
}

// serveArg, as the only argument, makes this binary the child.
const serveArg = "-serve-config-center"

func main() {
	if len(os.Args) == 2 && os.Args[1] == serveArg {
		exit(serve())
	}
	var o options
	flag.IntVar(&o.configs, "configs", 10000, "configs written before the watches start: a limit for each of as many services")
	flag.IntVar(&o.watches, "watches", 10000, "simulated SDKs, each with one watch (and one connection) open")
	flag.IntVar(&o.watchServices, "watch-services", 1000, "the watches are spread over this many of the services (a change concerns watches/watch-services of them)")
	flag.IntVar(&o.changes, "changes", 10, "config changes measured, each to the next watched service")
	flag.DurationVar(&o.interval, "interval", time.Second, "time between two changes")
	flag.IntVar(&o.procs, "gomaxprocs", 1, "GOMAXPROCS of the config-center process; this one takes the remaining cores")
	flag.DurationVar(&o.wait, "wait", 60*time.Second, "wait of each watch (the config-center allows up to 60s)")
	flag.IntVar(&o.writers, "writers", 16, "concurrent writes while the configs are written")
	flag.IntVar(&o.ramp, "ramp", 2000, "watches started per second (a config-center that computes every first answer may fall behind a faster ramp)")
	flag.Parse()
	exit(run(o))
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "configwatch:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func (o options) check() error {
	switch {
	case o.configs < 1 || o.watches < 1 || o.watchServices < 1 || o.changes < 1 || o.procs < 1 || o.writers < 1 || o.ramp < 1:
		return errors.New("-configs, -watches, -watch-services, -changes, -gomaxprocs, -writers and -ramp must be positive")
	case o.watchServices > o.configs || o.watchServices > o.watches:
		return errors.New("-watch-services may not exceed -configs or -watches")
	case o.changes > maxChanges:
		return fmt.Errorf("-changes: at most %d", maxChanges)
	case o.interval <= 0 || o.wait <= 0 || o.wait > 60*time.Second:
		return errors.New("-interval must be positive, -wait in (0, 60s]")
	}
	return nil
}

func run(o options) error {
	if err := o.check(); err != nil {
		return err
	}
	if err := longpoll.CheckFiles(o.watches); err != nil {
		return err
	}
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
		ch.Stop() // no orphan config-center on Ctrl-C
		os.Exit(130)
	}()
	fmt.Printf("%d configs, %d watches over %d services (wait=%s), %d changes every %s; config-center+etcd GOMAXPROCS=%d, load generator GOMAXPROCS=%d, %d cores\n",
		o.configs, o.watches, o.watchServices, o.wait, o.changes, o.interval, o.procs, runtime.GOMAXPROCS(0), runtime.NumCPU())
	rep, err := runLoad(o, ch.addr, ch.Pid())
	if err != nil {
		return err
	}
	rep.print()
	return nil
}
