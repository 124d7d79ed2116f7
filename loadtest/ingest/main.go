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
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
)

// poolSize distinct bodies are enough to keep caches from flattering anyone.
const poolSize = 64

type options struct {
	compare                  bool
	target                   string
	conns, edges, rpr, procs int
	duration, warmup         time.Duration
}

func main() {
	var o options
	var only, serveKind string
	flag.BoolVar(&o.compare, "compare", false, "run sextant, then baseline, and print both (the default)")
	flag.StringVar(&only, "only", "", "run one server: sextant or baseline")
	flag.StringVar(&o.target, "addr", "", "load an already running mixer at host:port instead of spawning (client-side numbers only); with -serve, where to listen")
	flag.StringVar(&serveKind, "serve", "", "internal: be the server of this kind, listening on -addr")
	flag.IntVar(&o.conns, "conns", 32, "keep-alive connections, each with one request in flight")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per server")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before the measured time")
	flag.IntVar(&o.edges, "edges", 50, "call edges per report")
	flag.IntVar(&o.rpr, "reports-per-request", 10, "reports per request (a JSON array)")
	flag.IntVar(&o.procs, "gomaxprocs", 1, "GOMAXPROCS of each server process")
	flag.Parse()
	var err error
	if serveKind != "" {
		err = serve(serveKind, o.target)
	} else {
		err = run(o, only)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}

func run(o options, only string) error {
	if o.conns < 1 || o.rpr < 1 || o.edges < 0 || o.duration <= 0 {
		return errors.New("-conns and -reports-per-request must be positive, -edges not negative")
	}
	kinds := []string{"sextant", "baseline"}
	switch {
	case o.target != "":
		kinds = []string{o.target}
	case o.compare || only == "":
	case only == "sextant" || only == "baseline":
		kinds = []string{only}
	default:
		return fmt.Errorf("-only %q: want sextant or baseline", only)
	}
	bodies := makeBodies(poolSize, o.rpr, o.edges, uint64(time.Now().UnixNano()))
	fmt.Printf("load: %d conns, %s measured after %s warm-up, %d reports/request, %d edges/report, %.0f KiB/request\n",
		o.conns, o.duration, o.warmup, o.rpr, o.edges, float64(len(bodies[0]))/1024)
	if o.target == "" {
		fmt.Printf("each server in its own process with GOMAXPROCS=%d, one after the other\n", o.procs)
	}
	var cols []column
	for _, k := range kinds {
		c, err := measure(o, k, bodies)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		for answer, n := range c.res.errors {
			fmt.Printf("%s: %d answers not 202: %s\n", k, n, answer)
		}
		cols = append(cols, c)
	}
	printTable(cols)
	if len(cols) == 2 {
		fmt.Printf("ratio sextant/baseline: %.2f\n", cols[0].reportsPerCPU()/cols[1].reportsPerCPU())
	}
	return nil
}

// column is one server's figures; CPU and RSS are NaN when not measured.
type column struct {
	name         string
	res          loadResult
	reports      float64
	cpuSec       float64
	clientCPUSec float64 // tells whether the load generator, not the server, was the limit
	rssMiB       float64
}

func (c column) reportsPerCPU() float64 { return c.reports / c.cpuSec }

// measure warms one server up, then loads it for the measured time, reading
// the CPU time of both processes on either side of that interval.
func measure(o options, kind string, bodies [][]byte) (column, error) {
	col := column{name: kind, cpuSec: math.NaN(), clientCPUSec: math.NaN(), rssMiB: math.NaN()}
	addr := o.target
	var ch *proc.Child
	if addr == "" {
		var err error
		if ch, addr, err = spawn(kind, o.procs); err != nil {
			return col, err
		}
		defer ch.Stop()
	}
	client := newClient(o.conns)
	defer client.CloseIdleConnections()
	url := "http://" + addr + "/v1/telemetry"
	load(client, url, bodies, o.rpr, o.conns, o.warmup)
	srv0, cli0, err := cpuPair(ch)
	if err != nil {
		return col, err
	}
	col.res = load(client, url, bodies, o.rpr, o.conns, o.duration)
	col.reports = float64(col.res.ok * o.rpr)
	srv1, cli1, err := cpuPair(ch)
	if err != nil || ch == nil {
		return col, err
	}
	col.cpuSec, col.clientCPUSec = srv1-srv0, cli1-cli0
	col.rssMiB, err = proc.StatusMiB(ch.Pid(), "VmHWM")
	return col, err
}

// cpuPair reads the server's and this process's CPU seconds (none without a child).
func cpuPair(ch *proc.Child) (srv, cli float64, err error) {
	if ch == nil {
		return 0, 0, nil
	}
	srv, err1 := proc.CPUSeconds(ch.Pid())
	cli, err2 := proc.CPUSeconds(os.Getpid())
	return srv, cli, errors.Join(err1, err2)
}

// printTable prints the servers side by side, one row per figure.
func printTable(cols []column) {
	fmt.Printf("%-24s", "")
	for _, c := range cols {
		fmt.Printf(" %16s", c.name)
	}
	fmt.Println()
	row := func(label, format string, f func(column) float64) {
		fmt.Printf("%-24s", label)
		for _, c := range cols {
			cell := "-"
			if v := f(c); !math.IsNaN(v) {
				cell = fmt.Sprintf(format, v)
			}
			fmt.Printf(" %16s", cell)
		}
		fmt.Println()
	}
	secs := func(c column) float64 { return c.res.elapsed.Seconds() }
	row("requests/s", "%.0f", func(c column) float64 { return float64(c.res.ok) / secs(c) })
	row("reports/s", "%.0f", func(c column) float64 { return c.reports / secs(c) })
	row("p50 latency (ms)", "%.2f", func(c column) float64 { return percentileMs(c.res.latencies, 50) })
	row("p99 latency (ms)", "%.2f", func(c column) float64 { return percentileMs(c.res.latencies, 99) })
	row("errors (non-202)", "%.0f", func(c column) float64 { return float64(c.res.errorCount()) })
	row("server CPU-s", "%.2f", func(c column) float64 { return c.cpuSec })
	row("CPU-s per 10k reports", "%.3f", func(c column) float64 { return c.cpuSec / c.reports * 1e4 })
	row("reports per CPU-s", "%.0f", column.reportsPerCPU)
	row("load generator CPU-s", "%.2f", func(c column) float64 { return c.clientCPUSec })
	row("server max RSS (MiB)", "%.1f", func(c column) float64 { return c.rssMiB })
}
