package main

import (
	"fmt"
	"math"

	"github.com/sextant-mesh/sextant/loadtest/internal/longpoll"
)

// print writes one line per change, then the medians and the costs.
func (r *report) print() {
	var p50, p99, p100, missed []float64
	for i, c := range r.changes {
		fmt.Printf("change %d (limit/%s, %d watches concerned): %s, missed %d (PUT took %.1f ms)\n",
			i+1, serviceName(c.service), c.concerned, c.read, c.missed, c.write.Seconds()*1e3)
		p50, p99, p100 = append(p50, c.read.P50), append(p99, c.read.P99), append(p100, c.read.P100)
		missed = append(missed, float64(c.missed))
	}
	med := longpoll.Quantiles{P50: longpoll.Median(p50), P99: longpoll.Median(p99), P100: longpoll.Median(p100)}
	fmt.Printf("median of %d changes: %s, missed %.0f\n", len(r.changes), med, longpoll.Median(missed))
	fmt.Printf("setup: %d configs written in %.1f s; ramp: %d watches started in %.1f s, all answered %.1f s after the first\n",
		r.o.configs, r.setup.Seconds(), r.o.watches, r.ramp.Seconds(), r.settled.Seconds())
	n := float64(r.o.watches)
	fmt.Printf("config-center process (with etcd), before the watches: VmRSS %.1f MiB, Go heap in use %.1f MiB, stacks %.1f MiB, %.0f goroutines\n",
		r.idle.rssMiB, r.idle.heapMiB, r.idle.stackMiB, r.idle.goroutines)
	fmt.Printf("config-center process, %d watches held: VmRSS %.1f MiB, Go heap in use %.1f MiB, stacks %.1f MiB, %.0f goroutines; VmHWM at the end %.1f MiB\n",
		r.o.watches, r.busy.rssMiB, r.busy.heapMiB, r.busy.stackMiB, r.busy.goroutines, r.peakMiB)
	fmt.Printf("per held watch: VmRSS %.1f KiB, heap %.1f KiB, stack %.1f KiB, %.2f goroutines\n",
		(r.busy.rssMiB-r.idle.rssMiB)*1024/n, (r.busy.heapMiB-r.idle.heapMiB)*1024/n, (r.busy.stackMiB-r.idle.stackMiB)*1024/n,
		(r.busy.goroutines-r.idle.goroutines)/n)
	fmt.Printf("idle, every watch held, no change (%.0f s): config-center process %.3f CPU-s/s, load generator %.3f CPU-s/s\n",
		idleFor.Seconds(), r.idleCPUPerSec, r.idleCliPerSec)
	if math.IsNaN(r.computed) {
		fmt.Printf("answers computed by the config-center: not counted (no %s in its /metrics)\n", computedMetric)
	} else {
		fmt.Printf("answers computed by the config-center during the changes: %.0f for %d concerned watches (%.2f per concerned watch; 2 = woken once, polled once)\n",
			r.computed, r.concerned, r.computed/float64(r.concerned))
	}
	fmt.Printf("answers read during the changes: %d (%d without news: watches answered that no change concerned), %d not modified, %d errors\n",
		r.counts.Answers, r.counts.NoNews, r.counts.NotModified, r.counts.Errors)
	k := float64(len(r.changes))
	idle := r.window.Seconds() / k
	fmt.Printf("CPU from the first write until the last change's watches held it and the config-center was idle again (%.1f s, idle %.1f s after): config-center process %.3f s, load generator %.3f s (%.2f of the config-center's), other processes %.2f s, steal %.2f s\n",
		r.window.Seconds(), r.quietAfter.Seconds(), r.cpuSec, r.clientCPUSec, r.clientCPUSec/r.cpuSec, r.otherCPUSec, r.stealSec)
	fmt.Printf("per change: config-center %.1f ms CPU (%.1f ms above idle), load generator %.1f ms (%.1f ms above idle); per concerned watch: config-center %.1f µs, load generator %.1f µs\n",
		r.cpuSec/k*1e3, (r.cpuSec/k-r.idleCPUPerSec*idle)*1e3, r.clientCPUSec/k*1e3, (r.clientCPUSec/k-r.idleCliPerSec*idle)*1e3,
		r.cpuSec/float64(r.concerned)*1e6, r.clientCPUSec/float64(r.concerned)*1e6)
	if r.errors != "" {
		fmt.Println(r.errors)
	}
}
