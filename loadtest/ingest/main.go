// Command ingest measures what ingest costs per report: the whole path a
// user runs (telemetry-mixer, forwarder, Kitex, a weight-calculator shard
// aggregating), with and without a real influxd, against the same endpoint
// on Gin and encoding/json and against a Hertz handler that does nothing.
//
// Each server runs in processes of its own while this process generates the
// load; the figure that matters is reports per CPU-second of the Sextant
// processes (mixer and calculator together). See docs/benchmarks.md.
//
//	go run ./loadtest/ingest -compare
package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/internal/longpoll"
	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
)

// poolSize distinct bodies are enough to keep caches from flattering anyone.
const poolSize = 64

// The kinds a column can be.
const (
	kindPath     = "sextant"        // the whole path
	kindInflux   = "sextant+influx" // the whole path, writing time series to influxd
	kindMTLS     = "sextant+mtls"   // the whole path, the mixer's Kitex hop to the calculator over mTLS
	kindTLS      = "sextant+tls"    // the whole path over TLS: the mixer's HTTP edge too
	kindBaseline = "baseline"       // Gin + encoding/json, decode and validate only
	kindNoop     = "noop"           // Hertz reading the body, nothing else
	kindEdge     = "edge"           // the mixer's HTTP edge with a counting sink
)

type options struct {
	compare                  bool
	target                   string
	conns, edges, rpr, procs int
	duration, warmup         time.Duration
	withMTLS                 bool // -compare adds the whole path over mTLS
	mtls                     bool // this deployment's Kitex hop is mTLS
	edgeTLS                  bool // and its HTTP edge is TLS
}

func main() {
	var o options
	var only, serveKind string
	var po pathOptions
	flag.BoolVar(&o.compare, "compare", false, "run the whole path without and with influxd, the baseline and the no-op, and print them side by side (the default)")
	flag.StringVar(&only, "only", "", "run one column: sextant, sextant+influx, sextant+mtls, sextant+tls, baseline, noop or edge")
	flag.StringVar(&o.target, "addr", "", "load an already running mixer at host:port instead of spawning (client-side numbers only); with -serve, where to listen")
	flag.StringVar(&serveKind, "serve", "", "internal: be the server of this kind, listening on -addr")
	flag.StringVar(&po.etcd, "etcd", "", "internal: the etcd of the whole path")
	flag.StringVar(&po.influx, "influx-url", "", "internal: the influxd of the whole path")
	flag.StringVar(&po.caKey, "ca-key-file", "", "internal: the CA key file of the whole path over mTLS")
	flag.BoolVar(&po.edgeTLS, "edge-tls", false, "internal: the mixer serves its HTTP edge over TLS")
	flag.BoolVar(&o.withMTLS, "mtls", false, "with -compare, also run the whole path with the mixer's Kitex hop to the calculator over mTLS (column sextant+mtls) and with the HTTP edge over TLS too (column sextant+tls)")
	flag.IntVar(&o.conns, "conns", 32, "keep-alive connections, each with one request in flight")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per column")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before the measured time")
	flag.IntVar(&o.edges, "edges", 50, "call edges per report")
	flag.IntVar(&o.rpr, "reports-per-request", 1, "reports per request (a JSON array)")
	flag.IntVar(&o.procs, "gomaxprocs", 1, "GOMAXPROCS of each server process")
	profiles := flag.String("cpuprofile-dir", "", "write a CPU profile of each server process (warm-up included) into this folder, as <kind>-<pid>.prof")
	flag.Parse()
	if *profiles != "" {
		os.Setenv(profileEnv, *profiles) // the server processes inherit it
	}
	var err error
	if serveKind != "" {
		noopAnswer = fmt.Appendf(nil, `{"accepted":%d}`, o.rpr)
		err = serve(serveKind, o.target, po)
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
	kinds := []string{kindPath, kindInflux, kindBaseline, kindNoop}
	if o.withMTLS {
		kinds = []string{kindPath, kindMTLS, kindTLS, kindInflux, kindBaseline, kindNoop}
	}
	switch {
	case o.target != "":
		kinds = []string{o.target}
	case o.compare || only == "":
	case only == kindPath || only == kindInflux || only == kindMTLS || only == kindTLS || only == kindBaseline || only == kindNoop || only == kindEdge:
		kinds = []string{only}
	default:
		return fmt.Errorf("-only %q: want sextant, sextant+influx, sextant+mtls, sextant+tls, baseline, noop or edge", only)
	}
	// The reports are of 200 services, so the load generator posts as an
	// operator (a data plane's token may report only its own service); the
	// server processes take the token from the environment they inherit.
	if os.Getenv(tokenEnv) == "" {
		os.Setenv(tokenEnv, longpoll.RandomToken())
	}
	bodies := newBodies(poolSize, o.rpr, o.edges, uint64(time.Now().UnixNano()))
	defer bodies.stop()
	fmt.Printf("load: %d conns, %s measured after %s warm-up, %d reports/request, %d edges/report, %.1f KiB/request\n",
		o.conns, o.duration, o.warmup, o.rpr, o.edges, float64(len(bodies.get()[0]))/1024)
	if o.target == "" {
		fmt.Printf("each server process with GOMAXPROCS=%d; the columns one after the other\n", o.procs)
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
	by := map[string]column{}
	for _, c := range cols {
		by[c.name] = c
	}
	path, okPath := by[kindPath]
	infl, okInflux := by[kindInflux]
	base, okBase := by[kindBaseline]
	noop, okNoop := by[kindNoop]
	if okPath && okNoop {
		fmt.Printf("whole path / no-op reports per second: %.2f\n", path.reportsPerSec()/noop.reportsPerSec())
	}
	if okPath && okBase {
		influxRatio := math.NaN()
		if okInflux {
			influxRatio = infl.reportsPerCPU() / base.reportsPerCPU()
		}
		fmt.Printf("ratio sextant/baseline: %.2f (influx on: %.2f)\n", path.reportsPerCPU()/base.reportsPerCPU(), influxRatio)
	}
	return nil
}

// column is one deployment's figures; NaN when not measured.
type column struct {
	name      string
	res       loadResult
	reports   float64
	cpuSec    float64            // of the Sextant processes together
	procCPU   map[string]float64 // per process, by name
	clientCPU float64            // tells whether the load generator, not the server, was the limit
	allocs    float64            // bytes allocated by the Sextant processes with /metrics
	gcs       float64            // their GC cycles
	delivered float64            // records the calculator counted, whatever their outcome
	accepted  float64            // reports the mixer accepted (its counter)
	points    float64            // time-series points written and dropped, both services
	dropped   float64
	rssMiB    map[string]float64
}

func (c column) reportsPerCPU() float64 { return c.reports / c.cpuSec }
func (c column) reportsPerSec() float64 { return c.reports / c.res.elapsed.Seconds() }

// counters is what is read of a deployment before and after the measured time.
type counters struct {
	cpu                 map[string]float64
	client              float64
	allocs, gcs         float64
	delivered, accepted float64
	points, dropped     float64
}

func readCounters(d *deployment) (counters, error) {
	c := counters{cpu: map[string]float64{}}
	var errs []error
	for _, p := range d.procs {
		v, err := proc.CPUSeconds(p.pid)
		errs = append(errs, err)
		c.cpu[p.name] = v
		if p.metrics == "" {
			continue
		}
		m, err := scrape(p.metrics)
		errs = append(errs, err)
		c.allocs += m["go_memstats_alloc_bytes_total"]
		c.gcs += m["go_gc_duration_seconds_count"]
		c.points += m["sextant_mixer_tsdb_points_total"] + m["sextant_calculator_tsdb_points_total"]
		c.dropped += m["sextant_mixer_tsdb_dropped_total"] + m["sextant_calculator_tsdb_dropped_total"]
		c.accepted += m["sextant_mixer_reports_accepted_total"]
		c.delivered += m["sextant_calculator_records_total"]
	}
	var err error
	c.client, err = proc.CPUSeconds(os.Getpid())
	return c, errors.Join(append(errs, err)...)
}

// measure warms one deployment up, loads it for the measured time, waits
// until the mixer holds nothing more (its work for the reports accepted
// ends when the calculator has them), and reads the counters on either side.
func measure(o options, kind string, bodies *bodySource) (column, error) {
	col := column{name: kind, cpuSec: math.NaN(), clientCPU: math.NaN(), allocs: math.NaN(), gcs: math.NaN(),
		delivered: math.NaN(), accepted: math.NaN(), points: math.NaN(), dropped: math.NaN()}
	var d *deployment
	var err error
	switch {
	case o.target != "":
		d = &deployment{url: "http://" + o.target + "/v1/telemetry", stop: func() {}}
	case kind == kindPath || kind == kindInflux || kind == kindMTLS || kind == kindTLS:
		o.mtls = kind == kindMTLS || kind == kindTLS
		o.edgeTLS = kind == kindTLS
		d, err = startPath(o, kind == kindInflux)
	default:
		d, err = spawn(kind, o.procs)
	}
	if err != nil {
		return col, err
	}
	defer d.stop()
	client := newClient(o.conns)
	defer client.CloseIdleConnections()
	load(client, d.url, bodies, o.rpr, o.conns, o.warmup)
	settle(d)
	c0, err := readCounters(d)
	if err != nil {
		return col, err
	}
	col.res = load(client, d.url, bodies, o.rpr, o.conns, o.duration)
	col.reports = float64(col.res.ok * o.rpr)
	settle(d)
	c1, err := readCounters(d)
	if err != nil || len(d.procs) == 0 {
		return col, err
	}
	col.cpuSec, col.procCPU, col.rssMiB = 0, map[string]float64{}, map[string]float64{}
	for _, p := range d.procs {
		col.procCPU[p.name] = c1.cpu[p.name] - c0.cpu[p.name]
		if p.sextant {
			col.cpuSec += col.procCPU[p.name]
		}
		col.rssMiB[p.name], _ = proc.StatusMiB(p.pid, "VmHWM")
	}
	col.clientCPU = c1.client - c0.client
	if d.mixerMetrics != "" {
		col.allocs, col.gcs = c1.allocs-c0.allocs, c1.gcs-c0.gcs
		col.delivered, col.accepted = c1.delivered-c0.delivered, c1.accepted-c0.accepted
		col.points, col.dropped = c1.points-c0.points, c1.dropped-c0.dropped
	}
	return col, nil
}

// settle waits (up to 30 s) until the mixer holds no record, so that the CPU
// read after the run includes forwarding and aggregating all it accepted.
func settle(d *deployment) {
	if d.mixerMetrics == "" {
		return
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m, err := scrape(d.mixerMetrics); err == nil && m["sextant_mixer_queue_records"] == 0 {
			return
		}
	}
}

// printTable prints the columns side by side, one row per figure.
func printTable(cols []column) {
	fmt.Printf("%-34s", "")
	for _, c := range cols {
		fmt.Printf(" %15s", c.name)
	}
	fmt.Println()
	row := func(label, format string, f func(column) float64) {
		fmt.Printf("%-34s", label)
		for _, c := range cols {
			cell := "-"
			if v := f(c); !math.IsNaN(v) && !math.IsInf(v, 0) {
				cell = fmt.Sprintf(format, v)
			}
			fmt.Printf(" %15s", cell)
		}
		fmt.Println()
	}
	secs := func(c column) float64 { return c.res.elapsed.Seconds() }
	per := func(v, n float64) float64 {
		if n == 0 {
			return math.NaN()
		}
		return v / n
	}
	row("requests/s", "%.0f", func(c column) float64 { return float64(c.res.ok) / secs(c) })
	row("reports/s", "%.0f", func(c column) float64 { return c.reports / secs(c) })
	row("p50 latency (ms)", "%.2f", func(c column) float64 { return percentileMs(c.res.latencies, 50) })
	row("p99 latency (ms)", "%.2f", func(c column) float64 { return percentileMs(c.res.latencies, 99) })
	row("errors (non-202)", "%.0f", func(c column) float64 { return float64(c.res.errorCount()) })
	names := map[string]bool{}
	for _, c := range cols {
		for n := range c.procCPU {
			names[n] = true
		}
	}
	var sorted []string
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		row(n+" CPU-s", "%.2f", func(c column) float64 {
			if v, ok := c.procCPU[n]; ok {
				return v
			}
			return math.NaN()
		})
	}
	row("Sextant CPU-s (all its processes)", "%.2f", func(c column) float64 { return c.cpuSec })
	row("µs CPU per report", "%.1f", func(c column) float64 { return c.cpuSec / c.reports * 1e6 })
	row("reports per CPU-s", "%.0f", column.reportsPerCPU)
	row("KB allocated per report", "%.2f", func(c column) float64 { return per(c.allocs/1000, c.reports) })
	row("GC cycles/s", "%.1f", func(c column) float64 { return c.gcs / secs(c) })
	row("records delivered per report", "%.2f", func(c column) float64 { return per(c.delivered, c.accepted) })
	row("time-series points per report", "%.2f", func(c column) float64 { return per(c.points, c.accepted) })
	row("time-series points dropped", "%.0f", func(c column) float64 { return c.dropped })
	row("load generator CPU-s", "%.2f", func(c column) float64 { return c.clientCPU })
	for _, n := range sorted {
		row(n+" max RSS (MiB)", "%.1f", func(c column) float64 {
			if v, ok := c.rssMiB[n]; ok {
				return v
			}
			return math.NaN()
		})
	}
}
