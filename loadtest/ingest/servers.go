package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	"github.com/gin-gonic/gin"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/telemetry"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
)

// maxBody is the mixer's documented default body limit; both servers use it.
const maxBody = 4 << 20

// countingSink stands in for forwarding in both servers, so that the
// comparison measures the HTTP edge (read, decode, validate) and nothing
// else. It keeps no reports: holding them would make the numbers depend on
// the garbage collector's view of a growing heap.
type countingSink struct {
	reports atomic.Int64
	records atomic.Int64
}

var _ mixer.Sink = (*countingSink)(nil)

// Offer counts and drops; it never refuses.
func (s *countingSink) Offer(reports []api.Report) error {
	n := 0
	for i := range reports {
		n += reports[i].Records()
	}
	s.reports.Add(int64(len(reports)))
	s.records.Add(int64(n))
	return nil
}

// server is what the benchmark needs of either implementation.
type server interface {
	Addr() string
	Stop(context.Context) error
}

// startServer starts the named implementation on addr, feeding sink.
func startServer(kind, addr string, sink *countingSink) (server, error) {
	switch kind {
	case "edge":
		return startEdge(addr, sink)
	case "baseline":
		return startBaseline(addr, sink)
	case "noop":
		return startNoop(addr)
	}
	return nil, fmt.Errorf("unknown server %q (want edge, baseline or noop)", kind)
}

// startEdge is the telemetry-mixer's real HTTP edge (Hertz, sonic, the
// mixer's handler and limits) with the forwarder swapped for sink.
func startEdge(addr string, sink *countingSink) (server, error) {
	srv, err := mixer.Listen(addr, maxBody)
	if err != nil {
		return nil, err
	}
	mixer.NewIngest(sink, telemetry.DefaultLimits(), maxBody, nil).Routes(srv)
	srv.Start()
	return srv, nil
}

// startNoop is the floor: Hertz, configured as the mixer's port, reading the
// body and answering as the mixer does for one report, without looking at
// the body.
func startNoop(addr string) (server, error) {
	srv, err := mixer.Listen(addr, maxBody)
	if err != nil {
		return nil, err
	}
	srv.POST("/v1/telemetry", func(_ context.Context, c *app.RequestContext) {
		var buf bytes.Buffer
		if fe := httpx.ReadBody(c, &buf, maxBody); fe != nil {
			httpx.WriteError(c, consts.StatusBadRequest, fe)
			return
		}
		c.Data(consts.StatusAccepted, "application/json", noopAnswer)
	})
	srv.Start()
	return srv, nil
}

// noopAnswer is what the no-op says to every request; the load generator
// checks the accepted count, so it is told how many reports a request holds.
var noopAnswer = []byte(`{"accepted":1}`)

// ginServer is the baseline: net/http, Gin and encoding/json, the stack a
// team would likely reach for first.
type ginServer struct {
	http *http.Server
	ln   net.Listener
}

func (g *ginServer) Addr() string                   { return g.ln.Addr().String() }
func (g *ginServer) Stop(ctx context.Context) error { return g.http.Shutdown(ctx) }

func startBaseline(addr string, sink *countingSink) (server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery()) // the mixer's Hertz server has a recovery middleware too
	b := &baselineIngest{sink: sink, limits: telemetry.DefaultLimits()}
	r.POST("/v1/telemetry", b.handle)
	g := &ginServer{http: &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}, ln: ln}
	go func() { _ = g.http.Serve(ln) }() // ends with ErrServerClosed on Stop
	return g, nil
}

// baselineIngest answers POST /v1/telemetry exactly as mixer.Ingest does
// (statuses, error shape, limits, validation), written the plain way.
type baselineIngest struct {
	sink   mixer.Sink
	limits telemetry.Limits
}

func (b *baselineIngest) handle(c *gin.Context) {
	if ct := c.GetHeader("Content-Type"); ct != "" && !strings.Contains(ct, "json") {
		reject(c, http.StatusUnsupportedMediaType, api.Errorf("Content-Type", "unsupported_media_type",
			"want application/json, got %q", ct))
		return
	}
	if c.Request.ContentLength > maxBody {
		tooLarge(c)
		return
	}
	body := http.MaxBytesReader(c.Writer, c.Request.Body, maxBody)
	reports, err := decodeStd(body, b.limits, time.Now())
	var fe *api.FieldError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		tooLarge(c)
		return
	case errors.As(err, &fe):
		reject(c, http.StatusBadRequest, fe)
		return
	case err != nil:
		reject(c, http.StatusBadRequest, api.Errorf("", "unreadable_body", "reading the body: %v", err))
		return
	}
	if err := b.sink.Offer(reports); err != nil {
		reject(c, http.StatusServiceUnavailable, api.Errorf("", "unavailable", "%v", err))
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"accepted": len(reports)})
}

func tooLarge(c *gin.Context) {
	c.Header("Connection", "close") // the rest of the body stays unread
	reject(c, http.StatusRequestEntityTooLarge, api.Errorf("", "body_too_large",
		"request body exceeds %d bytes", maxBody))
}

func reject(c *gin.Context, status int, fe *api.FieldError) {
	c.JSON(status, httpx.ErrorBody{Error: fe})
}

// decodeStd is telemetry.Decode rebuilt on a streaming encoding/json
// Decoder: one report object or an array of them, unknown fields and
// trailing data refused, then telemetry.Validate on each report. An
// oversized body comes back as the *http.MaxBytesError.
func decodeStd(r io.Reader, lim telemetry.Limits, now time.Time) ([]api.Report, error) {
	br := bufio.NewReader(r)
	first, err := peekNonSpace(br)
	if errors.Is(err, io.EOF) {
		return nil, api.Errorf("", api.CodeMalformedJSON, "empty body")
	}
	dec := json.NewDecoder(br)
	dec.DisallowUnknownFields()
	var reports []api.Report
	switch {
	case err != nil:
	case first == '[':
		err = dec.Decode(&reports)
	case first == '{':
		reports = make([]api.Report, 1)
		err = dec.Decode(&reports[0])
	default:
		return nil, api.Errorf("", api.CodeMalformedJSON, "want a report object or an array of reports")
	}
	if err == nil {
		if _, err = dec.Token(); err == nil {
			err = errors.New("trailing data after the JSON value")
		} else if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, err
	} else if err != nil {
		return nil, api.Errorf("", api.CodeMalformedJSON, "%v", err)
	}
	return reports, validateAll(reports, first == '[', lim, now)
}

// validateAll applies telemetry.Decode's checks to decoded reports.
func validateAll(reports []api.Report, array bool, lim telemetry.Limits, now time.Time) error {
	if len(reports) == 0 {
		return api.Errorf("", api.CodeInvalidValue, "empty array: send at least one report")
	}
	if len(reports) > lim.MaxReportsPerRequest {
		return api.Errorf("", api.CodeTooMany, "%d reports in one request, at most %d", len(reports), lim.MaxReportsPerRequest)
	}
	for i := range reports {
		path := ""
		if array {
			path = api.Index("", i)
		}
		if fe := telemetry.Validate(&reports[i], lim, now, path); fe != nil {
			return fe
		}
	}
	return nil
}

func peekNonSpace(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != ' ' && b != '\t' && b != '\r' && b != '\n' {
			return b, br.UnreadByte()
		}
	}
}
