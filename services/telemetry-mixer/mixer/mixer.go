package mixer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	"github.com/cloudwego/kitex/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/lifecycle"
	"github.com/sextant-mesh/sextant/internal/mtls"
	"github.com/sextant-mesh/sextant/internal/shard"
	"github.com/sextant-mesh/sextant/internal/telemetry"
	"github.com/sextant-mesh/sextant/internal/tsdb"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
)

// Mixer is the telemetry-mixer service.
type Mixer struct {
	cfg       Config
	log       *slog.Logger
	http      *httpx.Server
	ingest    *Ingest
	forwarder *Forwarder
	members   *shard.Membership
	series    *tsdb.Writer
	parts     *lifecycle.Group
}

// New binds the mixer's port and connects to etcd; Start serves.
func New(cfg Config, log *slog.Logger) (*Mixer, error) {
	reg := httpx.NewRegistry()
	m := newMetrics(reg)

	cli, err := etcdx.NewClient(cfg.Etcd)
	if err != nil {
		return nil, err
	}
	// The mixer's parts, in the order they start; they stop in the reverse:
	// the port stops taking reports, the forwarder sends what it holds, then
	// the loops stop, and the time series and the etcd client close last.
	g := lifecycle.NewGroup()
	g.Add("etcd client", lifecycle.Closer(cli))
	series := tsdb.New(cfg.TSDB, "telemetry-mixer", log)
	series.Register(reg, "sextant_mixer")
	g.Add("time series", series.Closer())
	g.Add("time series export", series.Exporter(reg, "sextant_mixer", "sextant_mixer_", map[string]string{"mixer": cfg.ID}))
	members := shard.NewMembership(cli, cfg.Etcd.Prefix, log)
	g.Add("shard membership", lifecycle.Loop(members.Run))
	verifier, tokenMirror, err := authn.Follow(cfg.Auth, cli, api.Keys{Prefix: cfg.Etcd.Prefix}, log)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tokens: %w", err), g.Stop(context.Background()))
	}
	g.Add("token mirror", lifecycle.Loop(tokenMirror.Run))
	sec, err := mtls.New(cfg.TLS, cli, api.Keys{Prefix: cfg.Etcd.Prefix}, "telemetry-mixer", cfg.HTTPAddr, verifier, log)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	g.Add("CA mirror", lifecycle.Loop(sec.Mirror.Run))
	kc, err := aggregatorsvc.NewClient("weight-calculator", append([]client.Option{
		client.WithConnectTimeout(time.Second),
		client.WithRPCTimeout(cfg.Forward.RPCTimeout)},
		sec.KitexClientOptions("weight-calculator")...)...)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	fwd := NewForwarder(cfg.Forward, cfg.ID, members, kc, m, log)
	m.observeForwarder(reg, fwd, members, cfg.Forward.QueueRecords)
	g.Add("forwarder", lifecycle.Func(func(ctx context.Context) error {
		if ctx.Err() == nil {
			fwd.Run(ctx)
		}
		// What is held is sent for up to the shutdown grace.
		dctx, cancel := context.WithTimeout(lifecycle.StopContext(ctx), cfg.Forward.ShutdownGrace)
		defer cancel()
		fwd.Drain(dctx)
		return nil
	}))

	srv, err := Listen(cfg.HTTPAddr, cfg.MaxBodyBytes, sec.ServerOptions()...)
	if err != nil {
		return nil, errors.Join(err, g.Stop(context.Background()))
	}
	g.Add("http", srv)
	mx := &Mixer{cfg: cfg, log: log, http: srv, forwarder: fwd, members: members, series: series, parts: g,
		ingest: NewIngest(seriesSink{next: fwd, series: series}, cfg.Limits, cfg.MaxBodyBytes, m)}
	mx.ingest.authenticate = verifier.Authenticate()
	mx.ingest.Routes(srv)
	httpx.HealthRoutesStale(srv, mx.readiness, mx.staleness)
	httpx.MetricsRoute(srv, reg)
	return mx, nil
}

// Listen binds the ingest port. The body is streamed so that the handler, not
// the HTTP layer, answers an oversized body with a JSON 413. More options
// (TLS) may follow.
func Listen(addr string, maxBody int, opts ...config.Option) (*httpx.Server, error) {
	return httpx.Listen(addr, append([]config.Option{server.WithStreamBody(true), server.WithMaxRequestBodySize(maxBody)}, opts...)...)
}

// Addr is the ingest HTTP address.
func (mx *Mixer) Addr() string { return mx.http.Addr() }

// Start serves ingest and starts forwarding. It returns the first start
// error, once what had started is stopped.
func (mx *Mixer) Start() error {
	if err := mx.parts.Start(); err != nil {
		return err
	}
	mx.log.Info("telemetry-mixer started", "http", mx.http.Addr())
	return nil
}

// Stop stops taking reports, forwards what it holds for up to the shutdown
// grace, and stops.
func (mx *Mixer) Stop(ctx context.Context) error {
	err := mx.parts.Stop(ctx)
	mx.log.Info("telemetry-mixer stopped")
	return err
}

// Failed is closed when a part of the mixer fails after it started; Err says
// which and why.
func (mx *Mixer) Failed() <-chan struct{} { return mx.parts.Failed() }

// Err is the failure Failed reports, or nil.
func (mx *Mixer) Err() error { return mx.parts.Err() }

// readiness: a full queue is not a reason to be unready; every mixer would
// leave the Service at once and data planes would get connection refused
// instead of a 429 telling them to retry. Nor is an etcd outage: the mixer
// routes by the last shards it saw (staleness says so). It is not ready
// before it ever listed the shards, or while it knows none.
func (mx *Mixer) readiness() []string {
	var reasons []string
	if !mx.members.Listed() {
		reasons = append(reasons, "shard membership not listed from etcd yet")
	} else if len(mx.members.View().Shards) == 0 {
		reasons = append(reasons, "no weight-calculator shard registered")
	}
	return reasons
}

// staleness says why the mixer routes by the last shards it saw rather than
// etcd's live set; empty while it follows etcd.
func (mx *Mixer) staleness() []string {
	if mx.members.Listed() && !mx.members.Synced() {
		return []string{"shard membership not following etcd (unreachable or watch down): routing by the last shards seen"}
	}
	return nil
}

// Ingest is the POST /v1/telemetry handler: read, decode, validate, hand to a Sink.
type Ingest struct {
	sink     Sink
	limits   telemetry.Limits
	maxBody  int
	metrics  *metrics
	bufs     sync.Pool // of *bytes.Buffer
	decoders sync.Pool // of *telemetry.Decoder
	// authenticate checks the credential of every report; a data plane may
	// report only for its own service. Nil (the edge benchmark) checks none.
	authenticate app.HandlerFunc
}

// NewIngest makes the handler; m may be nil (no metrics).
func NewIngest(sink Sink, limits telemetry.Limits, maxBody int, m *metrics) *Ingest {
	if m == nil {
		m = newMetrics(prometheus.NewRegistry())
	}
	return &Ingest{sink: sink, limits: limits, maxBody: maxBody, metrics: m,
		bufs:     sync.Pool{New: func() any { return new(bytes.Buffer) }},
		decoders: sync.Pool{New: func() any { return new(telemetry.Decoder) }}}
}

// Routes registers POST /v1/telemetry.
func (in *Ingest) Routes(s *httpx.Server) {
	if in.authenticate != nil {
		s.POST("/v1/telemetry", in.authenticate, in.Handle)
		return
	}
	s.POST("/v1/telemetry", in.Handle)
}

// Handle serves one ingest request.
func (in *Ingest) Handle(_ context.Context, c *app.RequestContext) {
	if ct := string(c.ContentType()); ct != "" && !isJSON(ct) {
		in.reject(c, consts.StatusUnsupportedMediaType, api.Errorf("Content-Type", "unsupported_media_type",
			"want application/json, got %q", ct))
		return
	}
	buf := in.bufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= pooledBufferMax { // an outsized body's buffer is not kept
			buf.Reset()
			in.bufs.Put(buf)
		}
	}()
	buf.Reset()
	if fe := httpx.ReadBody(c, buf, in.maxBody); fe != nil {
		status := consts.StatusBadRequest
		if fe.Code == httpx.CodeBodyTooLarge {
			status = consts.StatusRequestEntityTooLarge
		}
		in.reject(c, status, fe)
		return
	}
	// The reports point into buf: the sink copies what it keeps.
	dec := in.decoders.Get().(*telemetry.Decoder)
	defer func() {
		if dec.Size() <= pooledDecoderMax {
			in.decoders.Put(dec)
		}
	}()
	// A data plane that says when it sent (api.HeaderSentAt) has its
	// timestamps checked against its own clock and moved onto ours.
	now, skew := time.Now(), time.Duration(0)
	if v := c.Request.Header.Peek(api.HeaderSentAt); len(v) > 0 {
		if ms, err := strconv.ParseInt(string(v), 10, 64); err == nil && ms > 0 {
			if d := time.UnixMilli(ms).Sub(now); d > api.ClockSkewTolerance || d < -api.ClockSkewTolerance {
				now, skew = now.Add(d), d
			}
		}
	}
	reports, fe := dec.Decode(buf.Bytes(), in.limits, now)
	if fe != nil {
		in.reject(c, consts.StatusBadRequest, fe)
		return
	}
	if skew != 0 {
		for i := range reports {
			reports[i].TimestampMs -= skew.Milliseconds()
		}
		in.metrics.clockCorrected.Add(float64(len(reports)))
	}
	if in.authenticate != nil {
		id := authn.From(c)
		for i := range reports {
			if service := reports[i].Reporter.Service; !id.MayActFor(service) {
				in.metrics.rejected.WithLabelValues(api.CodeForbidden).Inc()
				authn.Forbid(c, "%s may not report for %s (reporter.service of report %d)", id.Name(), service, i)
				return
			}
		}
	}
	switch err := in.sink.Offer(reports); {
	case errors.Is(err, ErrQueueFull):
		c.Response.Header.Set("Retry-After", "1")
		in.reject(c, consts.StatusTooManyRequests, api.Errorf("", "queue_full",
			"the mixer is forwarding at capacity; retry after 1s"))
		return
	case errors.Is(err, ErrTooManyRecords):
		in.reject(c, consts.StatusRequestEntityTooLarge, api.Errorf("", "too_many_records", "%v; split the request", err))
		return
	case err != nil:
		in.reject(c, consts.StatusServiceUnavailable, api.Errorf("", "unavailable", "%v", err))
		return
	}
	in.metrics.accepted.Add(float64(len(reports)))
	// {"accepted":N}, without a map to encode; with the denials left out
	// (bad or past the limit: the rest of their reports is kept) when any.
	c.SetStatusCode(consts.StatusAccepted)
	c.SetContentType("application/json; charset=utf-8")
	var num [20]byte
	c.Response.AppendBodyString(`{"accepted":`)
	c.Response.AppendBody(strconv.AppendInt(num[:0], int64(len(reports)), 10))
	if drops := dec.Dropped(); drops != nil {
		for reason, n := range drops {
			in.metrics.denialsDropped.WithLabelValues(reason).Add(float64(n))
		}
		c.Response.AppendBodyString(`,"denials_dropped":`)
		c.Response.AppendBody(strconv.AppendInt(num[:0], int64(drops.Total()), 10))
	}
	c.Response.AppendBodyString("}")
}

const (
	// pooledBufferMax is the largest body buffer kept for reuse.
	pooledBufferMax = 1 << 20
	// pooledDecoderMax is the most call edges and denials a decoder kept
	// for reuse has room for.
	pooledDecoderMax = 100_000
)

// isJSON accepts application/json and the +json media types.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

func (in *Ingest) reject(c *app.RequestContext, status int, fe *api.FieldError) {
	in.metrics.rejected.WithLabelValues(fe.Code).Inc()
	httpx.WriteError(c, status, fe)
}
