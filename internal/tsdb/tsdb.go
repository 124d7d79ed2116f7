// Package tsdb writes Sextant's time series to InfluxDB with the
// influxdb-client-go/v2 non-blocking write API (batching, retries), behind a
// bounded queue of its own: the client's WritePoint blocks while a batch is
// being sent, and a service must never wait on InfluxDB. What does not fit,
// or fails for good, is counted as dropped.
package tsdb

import (
	"context"
	"flag"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"
	"github.com/influxdata/influxdb-client-go/v2/api/write"
	"github.com/prometheus/client_golang/prometheus"
)

// Config says where the time series go. An empty URL turns them off.
type Config struct {
	URL string // e.g. http://127.0.0.1:7786
	// Database and RetentionPolicy make the bucket "db/rp" of InfluxDB 1.8's
	// 2.x compatibility API; Token is "user:password", or ":" without auth.
	Database        string
	RetentionPolicy string
	Token           string
	// Queue bounds the points waiting to be handed to the client.
	Queue int
	// BatchSize and FlushInterval tune the client's batches.
	BatchSize     uint
	FlushInterval time.Duration
	// ExportEvery is how often a service writes its own counters.
	ExportEvery time.Duration
}

// DefaultConfig has the time series off.
func DefaultConfig() Config {
	return Config{Database: "sextant", RetentionPolicy: "autogen", Token: ":", Queue: 50_000,
		BatchSize: 2000, FlushInterval: time.Second, ExportEvery: 10 * time.Second}
}

// Writer takes points without ever blocking.
type Writer struct {
	cfg     Config
	client  influxdb2.Client
	api     api.WriteAPI
	queue   chan *write.Point
	written atomic.Int64
	dropped atomic.Int64
	errors  atomic.Int64
	log     *slog.Logger
	done    chan struct{}
	once    sync.Once
}

// New makes a writer; with cfg.URL empty it is a no-op that says so once.
func New(cfg Config, service string, log *slog.Logger) *Writer {
	w := &Writer{cfg: cfg, log: log, done: make(chan struct{})}
	if cfg.URL == "" {
		log.Info("time series are off: no InfluxDB configured (--influx-url)")
		close(w.done)
		return w
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 50_000
	}
	opts := influxdb2.DefaultOptions().
		SetBatchSize(max(cfg.BatchSize, 1)).
		SetFlushInterval(uint(max(cfg.FlushInterval, 100*time.Millisecond).Milliseconds())).
		SetRetryBufferLimit(uint(cfg.Queue)).
		SetMaxRetries(5).
		SetRetryInterval(500).
		SetMaxRetryInterval(5_000).
		SetExponentialBase(2).
		SetMaxRetryTime(30_000).
		SetHTTPRequestTimeout(5).
		AddDefaultTag("source", service)
	w.client = influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, opts)
	w.api = w.client.WriteAPI("", cfg.Database+"/"+cfg.RetentionPolicy)
	// A batch is retried twice, then dropped and counted.
	w.api.SetWriteFailedCallback(func(batch string, _ http2.Error, retryAttempts uint) bool {
		if retryAttempts < 2 {
			return true
		}
		w.dropped.Add(int64(strings.Count(strings.TrimSpace(batch), "\n") + 1))
		return false
	})
	w.queue = make(chan *write.Point, cfg.Queue)
	go w.forward()
	go w.countErrors()
	return w
}

// Enabled tells whether points go anywhere.
func (w *Writer) Enabled() bool { return w.queue != nil }

// Write queues a point, or counts it dropped when the queue is full.
func (w *Writer) Write(measurement string, tags map[string]string, fields map[string]any, at time.Time) {
	if w.queue == nil {
		return
	}
	select {
	case w.queue <- influxdb2.NewPoint(measurement, tags, fields, at):
	default:
		w.dropped.Add(1)
	}
}

func (w *Writer) forward() {
	defer close(w.done)
	for p := range w.queue {
		w.api.WritePoint(p)
		w.written.Add(1)
	}
}

// countErrors counts batches the client gave up on; their points are lost.
func (w *Writer) countErrors() {
	for err := range w.api.Errors() {
		if w.errors.Add(1) == 1 || w.errors.Load()%100 == 0 {
			w.log.Warn("writing time series to InfluxDB failed; retrying, then dropping", "err", err, "errors", w.errors.Load())
		}
	}
}

// Close flushes what is queued (for at most ctx) and stops.
func (w *Writer) Close(ctx context.Context) {
	w.once.Do(func() {
		if w.queue == nil {
			return
		}
		close(w.queue)
		select {
		case <-w.done:
		case <-ctx.Done():
		}
		w.api.Flush()
		w.client.Close()
	})
}

// Register adds the writer's counters to a service's metrics.
func (w *Writer) Register(reg prometheus.Registerer, prefix string) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_tsdb_points_total",
			Help: "Points handed to the InfluxDB client."}, func() float64 { return float64(w.written.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_tsdb_dropped_total",
			Help: "Points dropped: the queue to InfluxDB was full, or InfluxDB failed a batch three times."}, func() float64 { return float64(w.dropped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_tsdb_write_errors_total",
			Help: "Failed InfluxDB writes (retried by the client, then dropped)."}, func() float64 { return float64(w.errors.Load()) }),
	)
}

// RegisterFlags binds the time-series settings every service shares.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "influx-url", c.URL, "InfluxDB URL for the time series (e.g. http://127.0.0.1:7786); empty turns them off")
	fs.StringVar(&c.Database, "influx-db", c.Database, "InfluxDB database")
	fs.StringVar(&c.RetentionPolicy, "influx-rp", c.RetentionPolicy, "InfluxDB retention policy")
	fs.StringVar(&c.Token, "influx-token", c.Token, `InfluxDB credentials as "user:password" (":" without auth)`)
	fs.IntVar(&c.Queue, "influx-queue", c.Queue, "points held for InfluxDB; beyond it they are dropped and counted")
}

// Export writes, every ExportEvery until ctx ends, the service's own Prometheus
// counters and gauges whose names start with prefix as one point of
// measurement (label values summed), so the control plane's dashboards need
// no Prometheus.
func (w *Writer) Export(ctx context.Context, g prometheus.Gatherer, measurement, prefix string, tags map[string]string) {
	if !w.Enabled() {
		return
	}
	t := time.NewTicker(max(w.cfg.ExportEvery, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if fields := gatherFields(g, prefix); len(fields) > 0 {
				w.Write(measurement, tags, fields, now)
			}
		}
	}
}

func gatherFields(g prometheus.Gatherer, prefix string) map[string]any {
	families, err := g.Gather()
	if err != nil {
		return nil
	}
	fields := map[string]any{}
	for _, f := range families {
		name, ok := strings.CutPrefix(f.GetName(), prefix)
		if !ok {
			continue
		}
		var sum, count float64
		for _, m := range f.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += m.Histogram.GetSampleSum()
				count += float64(m.Histogram.GetSampleCount())
			}
		}
		fields[name] = sum
		if count > 0 {
			fields[name+"_count"] = count
		}
	}
	return fields
}
