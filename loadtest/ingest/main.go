// Command ingest measures what the telemetry-mixer's HTTP edge costs per
// report, against the same endpoint on Gin and encoding/json.
//
// Both servers do the same work (read the body, decode it strictly, run
// telemetry.Validate on every report, hand the reports to an in-memory sink),
// so the difference is the HTTP stack and the JSON decoder. Each runs alone,
// in its own process, while this process generates the load; the figure that
// matters is reports per server CPU-second. See docs/benchmarks.md.
//
//	go run ./loadtest/ingest -compare
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"time"
)

type options struct {
	compare       bool
	only          string
	addr          string
	serve         string
	conns         int
	duration      time.Duration
	warmup        time.Duration
	edges         int
	reportsPerReq int
	bodies        int
	gomaxprocs    int
}

func main() {
	var o options
	flag.BoolVar(&o.compare, "compare", false, "run sextant, then baseline, and print both (the default)")
	flag.StringVar(&o.only, "only", "", "run one server: sextant or baseline")
	flag.StringVar(&o.addr, "addr", "", "load an already running mixer at host:port instead of spawning (client-side numbers only)")
	flag.StringVar(&o.serve, "serve", "", "internal: be the server of this kind, listening on -addr")
	flag.IntVar(&o.conns, "conns", 32, "keep-alive connections, each with one request in flight")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per server")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before the measured time")
	flag.IntVar(&o.edges, "edges", 50, "call edges per report")
	flag.IntVar(&o.reportsPerReq, "reports-per-request", 10, "reports per request (a JSON array)")
	flag.IntVar(&o.bodies, "bodies", 64, "distinct pre-encoded request bodies to cycle through")
	flag.IntVar(&o.gomaxprocs, "gomaxprocs", 1, "GOMAXPROCS of each server process")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.serve != "" {
		return serve(o.serve, o.addr)
	}
	if o.conns < 1 || o.reportsPerReq < 1 || o.edges < 0 || o.bodies < 1 || o.duration <= 0 {
		return fmt.Errorf("-conns, -reports-per-request and -bodies must be positive, -edges not negative")
	}
	if o.only != "" && o.only != "sextant" && o.only != "baseline" {
		return fmt.Errorf("-only %q: want sextant or baseline", o.only)
	}
	kinds := []string{"sextant", "baseline"}
	switch {
	case o.addr != "":
		kinds = []string{o.addr}
	case o.only != "" && !o.compare:
		kinds = []string{o.only}
	}
	bodies := makeBodies(o.bodies, o.reportsPerReq, o.edges, uint64(time.Now().UnixNano()))
	fmt.Printf("load: %d conns, %s measured after %s warm-up, %d reports/request, %d edges/report, %.0f KiB/request, server GOMAXPROCS=%d\n",
		o.conns, o.duration, o.warmup, o.reportsPerReq, o.edges, avgKiB(bodies), o.gomaxprocs)
	var cols []column
	for _, k := range kinds {
		c, err := measure(o, k, bodies)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		printErrors(k, c.res.errors)
		cols = append(cols, c)
	}
	printTable(cols, o.reportsPerReq)
	if len(cols) == 2 {
		fmt.Printf("ratio sextant/baseline: %.2f\n", cols[0].reportsPerCPU(o.reportsPerReq)/cols[1].reportsPerCPU(o.reportsPerReq))
	}
	return nil
}

// column is one server's figures; CPU and RSS are NaN when not measured.
type column struct {
	name   string
	res    loadResult
	cpuSec float64
	rssMiB float64
}

func (c column) reportsPerCPU(rpr int) float64 { return float64(c.res.ok*rpr) / c.cpuSec }

// measure warms one server up, then loads it for the measured time, reading
// its CPU time on both sides of that interval.
func measure(o options, kind string, bodies [][]byte) (column, error) {
	col := column{name: kind, cpuSec: math.NaN(), rssMiB: math.NaN()}
	addr := kind
	var ch *child
	if o.addr == "" {
		var err error
		if ch, err = spawn(kind, o.gomaxprocs); err != nil {
			return col, err
		}
		defer ch.stop()
		addr = ch.addr
	}
	client := newClient(o.conns)
	defer client.CloseIdleConnections()
	url := "http://" + addr + "/v1/telemetry"
	load(client, url, bodies, o.reportsPerReq, o.conns, o.warmup)
	if ch == nil {
		col.res = load(client, url, bodies, o.reportsPerReq, o.conns, o.duration)
		return col, nil
	}
	tick := clockTick()
	before, err := ch.cpuSeconds(tick)
	if err != nil {
		return col, err
	}
	col.res = load(client, url, bodies, o.reportsPerReq, o.conns, o.duration)
	after, err := ch.cpuSeconds(tick)
	if err != nil {
		return col, err
	}
	col.cpuSec = after - before
	col.rssMiB, err = ch.maxRSSMiB()
	return col, err
}

func printErrors(name string, errs map[string]int) {
	for k, n := range errs {
		fmt.Printf("%s: %d answers not ok: %s\n", name, n, k)
	}
}

// printTable prints the servers side by side, one row per figure.
func printTable(cols []column, rpr int) {
	row := func(label, format string, f func(column) float64) {
		fmt.Printf("%-24s", label)
		for _, c := range cols {
			if v := f(c); math.IsNaN(v) {
				fmt.Printf(" %14s", "-")
			} else {
				fmt.Printf(" %14s", fmt.Sprintf(format, v))
			}
		}
		fmt.Println()
	}
	fmt.Printf("%-24s", "")
	for _, c := range cols {
		fmt.Printf(" %14s", c.name)
	}
	fmt.Println()
	secs := func(c column) float64 { return c.res.elapsed.Seconds() }
	row("requests/s", "%.0f", func(c column) float64 { return float64(c.res.ok) / secs(c) })
	row("reports/s", "%.0f", func(c column) float64 { return float64(c.res.ok*rpr) / secs(c) })
	row("p50 latency (ms)", "%.2f", func(c column) float64 { return percentileMs(c.res.latencies, 50) })
	row("p99 latency (ms)", "%.2f", func(c column) float64 { return percentileMs(c.res.latencies, 99) })
	row("errors (non-202)", "%.0f", func(c column) float64 { return float64(errCount(c.res.errors)) })
	row("server CPU-s", "%.2f", func(c column) float64 { return c.cpuSec })
	row("CPU-s per 10k reports", "%.3f", func(c column) float64 { return c.cpuSec / float64(c.res.ok*rpr) * 1e4 })
	row("reports per CPU-s", "%.0f", func(c column) float64 { return c.reportsPerCPU(rpr) })
	row("server max RSS (MiB)", "%.1f", func(c column) float64 { return c.rssMiB })
}

func errCount(errs map[string]int) int {
	n := 0
	for _, v := range errs {
		n += v
	}
	return n
}

func avgKiB(bodies [][]byte) float64 {
	total := 0
	for _, b := range bodies {
		total += len(b)
	}
	return float64(total) / float64(len(bodies)) / 1024
}
