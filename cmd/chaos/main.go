// Command chaos is Sextant's chaos suite (issue 16): it runs the control
// plane as separate processes (each service's binary, and a three-member
// etcd cluster of this binary's etcd-member subcommand) on loopback free
// ports, drives a steady load of data planes with the Go SDK, injects one
// fault at a time and asserts, per scenario:
//
//   - no call of the SDK clients fails (fail static);
//   - no weight or overload threshold the SDK holds flips to a default
//     during the fault (against the answer it held before);
//   - every telemetry window is sent, pending, or counted as dropped;
//   - every window a backend reporter had accepted reached the calculator,
//     but what the fault may lose by its nature (a mixer's SIGKILL: what
//     it accepted in its last flush interval), within a bound;
//   - mesh-core serves a policy published after the fault ended, within
//     the recovery bound (the measured time is printed).
//
// It ends with the line "N passed, N failed". `make chaos` builds the
// service binaries and this command once into bin/chaos/ and runs it;
// `make chaos-short` runs two scenarios. See docs/development.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

func notifyTerm(c chan os.Signal) { signal.Notify(c, syscall.SIGTERM, os.Interrupt) }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "etcd-member" {
		if err := runEtcdMember(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "etcd-member:", err)
			os.Exit(1)
		}
		return
	}
	self, _ := os.Executable()
	binDir := flag.String("bin", filepath.Dir(self), "folder of the service binaries (mesh-core, weight-calculator, telemetry-mixer, config-center)")
	run := flag.String("run", "", "run only the scenarios whose name matches this regular expression")
	short := flag.Bool("short", false, "run the short form: "+fmt.Sprint(shortScenarios))
	o := options{}
	flag.DurationVar(&o.fault, "fault", 5*time.Second, "how long each fault lasts, except the etcd outages (quorum lost, mesh-core partitioned from etcd), which last the policy TTL and 5 s more")
	flag.DurationVar(&o.policyTTL, "policy-ttl", 15*time.Second, "mesh-core's --policy-ttl (2 min by default): a restarted calculator must publish within it, and an etcd outage longer than it must not expire a policy")
	flag.DurationVar(&o.recoveryBound, "recovery-bound", 30*time.Second, "longest recovery to a fresh policy after a fault ends")
	flag.IntVar(&o.rate, "rate", 100, "calls a second of the SDK client")
	keep := flag.Bool("keep", false, "keep the data folder (service logs) after the run, as when a scenario failed")
	flag.Parse()

	var filter *regexp.Regexp
	if *run != "" {
		filter = regexp.MustCompile(*run)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dataDir, err := os.MkdirTemp("", "sextant-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("chaos: data and service logs in %s\n", dataDir)
	passed, failed := runSuite(ctx, *binDir, dataDir, o, func(name string) bool {
		if *short && !contains(shortScenarios, name) {
			return false
		}
		return filter == nil || filter.MatchString(name)
	})
	if *keep || failed > 0 {
		fmt.Printf("chaos: data and service logs kept in %s\n", dataDir)
	} else {
		os.RemoveAll(dataDir)
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		stop()
		os.Exit(1)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
