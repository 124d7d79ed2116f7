// Package tsdb writes Sextant's time series to InfluxDB: points are written
// as line protocol straight into a buffer the writer reuses, and a flusher
// sends the buffer, gzip-compressed, through the HTTP service of
// influxdb-client-go/v2 (the 2.x write API InfluxDB 1.8 serves) every
// FlushInterval or BatchSize points. A service never waits on InfluxDB:
// points beyond Queue waiting to be sent are dropped and counted, and so are
// batches InfluxDB failed three times.
package tsdb

import (
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"
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
	// Queue bounds the points waiting to be sent.
	Queue int
	// A batch is sent every FlushInterval, or sooner when BatchSize points wait.
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

// attempts is how often a batch is tried before its points are dropped.
const attempts = 3

// Writer takes points without ever blocking.
type Writer struct {
	cfg     Config
	client  influxdb2.Client
	http    http2.Service
	url     string
	source  []byte // the escaped value of the tag source every point carries
	written atomic.Int64
	dropped atomic.Int64
	errors  atomic.Int64
	log     *slog.Logger

	mu      sync.Mutex
	buf     []byte // points not sent yet, line protocol
	points  int    // in buf
	sending int    // points of the batch being sent
	line    Line

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New makes a writer; with cfg.URL empty it is a no-op that says so once.
func New(cfg Config, service string, log *slog.Logger) *Writer {
	w := &Writer{cfg: cfg, log: log, done: make(chan struct{})}
	if cfg.URL == "" {
		log.Info("time series are off: no InfluxDB configured (--influx-url)")
		close(w.done)
		return w
	}
	if w.cfg.Queue <= 0 {
		w.cfg.Queue = 50_000
	}
	w.cfg.BatchSize = max(w.cfg.BatchSize, 1)
	w.cfg.FlushInterval = max(w.cfg.FlushInterval, 100*time.Millisecond)
	w.client = influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, influxdb2.DefaultOptions().SetHTTPRequestTimeout(5))
	w.http = w.client.HTTPService()
	w.url = w.http.ServerAPIURL() + "write?" + url.Values{
		"org": {""}, "bucket": {cfg.Database + "/" + cfg.RetentionPolicy}, "precision": {"ns"}}.Encode()
	w.source = appendEscaped(nil, service, tagEscapes)
	w.line.w = w
	w.kick, w.stop = make(chan struct{}, 1), make(chan struct{})
	go w.flusher()
	return w
}

// Enabled tells whether points go anywhere.
func (w *Writer) Enabled() bool { return w.stop != nil }

// Line is one point being written. Its methods append to the writer's
// buffer; End finishes the point and lets the writer go on.
type Line struct {
	w      *Writer
	fields bool // a field was written: the next one follows a comma
}

// Begin starts a point of measurement, or returns nil (and counts the point
// dropped) when the writer is off or Queue points wait already. A non-nil
// Line holds the writer until End.
func (w *Writer) Begin(measurement string) *Line {
	if !w.Enabled() {
		return nil
	}
	w.mu.Lock()
	if w.points+w.sending >= w.cfg.Queue {
		w.mu.Unlock()
		w.dropped.Add(1)
		return nil
	}
	w.buf = appendEscaped(w.buf, measurement, measurementEscapes)
	w.buf = append(w.buf, ",source="...)
	w.buf = append(w.buf, w.source...)
	w.line.fields = false
	return &w.line
}

// Tag adds a tag; an empty value is left out, as InfluxDB wants.
func (l *Line) Tag(key, value string) *Line {
	if value != "" {
		b := append(l.w.buf, ',')
		b = appendEscaped(b, key, tagEscapes)
		b = append(b, '=')
		l.w.buf = appendEscaped(b, value, tagEscapes)
	}
	return l
}

func (l *Line) key(key string) []byte {
	b := l.w.buf
	if l.fields {
		b = append(b, ',')
	} else {
		b = append(b, ' ')
		l.fields = true
	}
	b = appendEscaped(b, key, tagEscapes)
	return append(b, '=')
}

// Int adds an integer field.
func (l *Line) Int(key string, v int64) *Line {
	l.w.buf = append(strconv.AppendInt(l.key(key), v, 10), 'i')
	return l
}

// Float adds a float field.
func (l *Line) Float(key string, v float64) *Line {
	l.w.buf = strconv.AppendFloat(l.key(key), v, 'g', -1, 64)
	return l
}

// Bool adds a boolean field.
func (l *Line) Bool(key string, v bool) *Line {
	l.w.buf = strconv.AppendBool(l.key(key), v)
	return l
}

// String adds a string field.
func (l *Line) String(key, v string) *Line {
	b := append(l.key(key), '"')
	b = appendEscaped(b, v, stringEscapes)
	l.w.buf = append(b, '"')
	return l
}

// End gives the point its time and releases the writer.
func (l *Line) End(at time.Time) {
	w := l.w
	if !l.fields { // a point needs a field: this one is not written
		if i := bytes.LastIndexByte(w.buf, '\n'); i >= 0 {
			w.buf = w.buf[:i+1]
		} else {
			w.buf = w.buf[:0]
		}
		w.mu.Unlock()
		return
	}
	w.buf = append(w.buf, ' ')
	w.buf = append(strconv.AppendInt(w.buf, at.UnixNano(), 10), '\n')
	w.points++
	full := w.points >= int(w.cfg.BatchSize)
	w.mu.Unlock()
	if full {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// Write writes a point from maps, tags in key order: for the few points a
// service writes per round; hot paths use Begin.
func (w *Writer) Write(measurement string, tags map[string]string, fields map[string]any, at time.Time) {
	l := w.Begin(measurement)
	if l == nil {
		return
	}
	for _, k := range slices.Sorted(mapsKeys(tags)) {
		l.Tag(k, tags[k])
	}
	for _, k := range slices.Sorted(mapsKeys(fields)) {
		switch v := fields[k].(type) {
		case int:
			l.Int(k, int64(v))
		case int32:
			l.Int(k, int64(v))
		case int64:
			l.Int(k, v)
		case float64:
			l.Float(k, v)
		case float32:
			l.Float(k, float64(v))
		case bool:
			l.Bool(k, v)
		case string:
			l.String(k, v)
		default:
			l.String(k, fmt.Sprint(v))
		}
	}
	l.End(at)
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

var (
	measurementEscapes = ", "
	tagEscapes         = ",= "
	stringEscapes      = "\"\\"
)

// appendEscaped appends s with a backslash before each byte of special
// (and newlines, which line protocol cannot hold, as spaces).
func appendEscaped(b []byte, s, special string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\n':
			b = append(b, ' ')
		case strings.IndexByte(special, c) >= 0:
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return b
}

// flusher sends the buffer every FlushInterval, or when BatchSize points
// wait, until Close.
func (w *Writer) flusher() {
	defer close(w.done)
	t := time.NewTicker(w.cfg.FlushInterval)
	defer t.Stop()
	var batch []byte
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	for {
		stopping := false
		select {
		case <-t.C:
		case <-w.kick:
		case <-w.stop:
			stopping = true
		}
		w.mu.Lock()
		batch, w.buf = w.buf, batch[:0]
		n := w.points
		w.points, w.sending = 0, n
		w.mu.Unlock()
		if n > 0 {
			gz.Reset()
			zw.Reset(&gz)
			_, _ = zw.Write(batch)
			_ = zw.Close()
			w.send(gz.Bytes(), n, stopping)
		}
		w.mu.Lock()
		w.sending = 0
		w.mu.Unlock()
		if cap(batch) > maxKeptBuffer {
			batch = nil
		}
		if stopping {
			return
		}
	}
}

// maxKeptBuffer bounds the buffer kept between batches.
const maxKeptBuffer = 8 << 20

// send posts one gzip-compressed batch of n points, trying it attempts
// times (once when the writer is closing), then counts it dropped.
func (w *Writer) send(body []byte, n int, closing bool) {
	for try := 1; ; try++ {
		err := w.http.DoPostRequest(context.Background(), w.url, bytes.NewReader(body), func(req *http.Request) {
			req.Header.Set("Content-Encoding", "gzip")
			req.Header.Set("Content-Type", "text/plain; charset=utf-8")
		}, func(resp *http.Response) error { return resp.Body.Close() })
		if err == nil {
			w.written.Add(int64(n))
			return
		}
		if e := w.errors.Add(1); e == 1 || e%100 == 0 {
			w.log.Warn("writing time series to InfluxDB failed; retrying, then dropping", "err", err, "errors", e)
		}
		if try >= attempts || closing {
			w.dropped.Add(int64(n))
			return
		}
		select {
		case <-time.After(time.Duration(try) * 500 * time.Millisecond):
		case <-w.stop:
			closing = true
		}
	}
}

// Close sends what is waiting (for at most ctx) and stops.
func (w *Writer) Close(ctx context.Context) {
	w.once.Do(func() {
		if !w.Enabled() {
			return
		}
		close(w.stop)
		select {
		case <-w.done:
		case <-ctx.Done():
		}
		w.client.Close()
	})
}

// Register adds the writer's counters to a service's metrics.
func (w *Writer) Register(reg prometheus.Registerer, prefix string) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_tsdb_points_total",
			Help: "Points written to InfluxDB."}, func() float64 { return float64(w.written.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_tsdb_dropped_total",
			Help: "Points dropped: the queue to InfluxDB was full, or InfluxDB failed a batch three times."}, func() float64 { return float64(w.dropped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_tsdb_write_errors_total",
			Help: "Failed InfluxDB writes (a batch is tried three times, then dropped)."}, func() float64 { return float64(w.errors.Load()) }),
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
