package core

import (
	"context"
	"errors"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
)

// MaxServicesPerPoll bounds GET /v1/discovery?services=...
const MaxServicesPerPoll = 100

// discovery serves the long polls of data planes from the cache.
type discovery struct {
	cache       *Cache
	stale       func() bool
	maxWait     time.Duration
	defaultWait time.Duration
	stopping    <-chan struct{}
	metrics     *metrics
	bufs        sync.Pool
	pollers     *pollerBook // nil: polls are not recorded
}

// pollArgs are the query of a long poll.
type pollArgs struct {
	version int64 // 0: answer at once
	wait    time.Duration
	client  string // the data plane's name for `sextant status`; "" when not given
}

func (d *discovery) args(c *app.RequestContext) (pollArgs, *api.FieldError) {
	a, fe := d.parseArgs(string(c.Query("version")), string(c.Query("wait")), string(c.GetHeader("If-None-Match")))
	if fe == nil {
		a.client, fe = clientArg(string(c.Query("client")))
	}
	return a, fe
}

// clientArg reads a poll's ?client: the data plane's name, optional.
func clientArg(client string) (string, *api.FieldError) {
	if fe := api.Name("client", client, false); fe != nil {
		return "", fe
	}
	return client, nil
}

// parseArgs reads a poll's ?version and ?wait, and its If-None-Match header
// when it names no version: the same on both ports (Hertz and poll).
func (d *discovery) parseArgs(version, wait, ifNoneMatch string) (pollArgs, *api.FieldError) {
	a := pollArgs{wait: d.defaultWait}
	if version != "" {
		n, err := strconv.ParseInt(version, 10, 64)
		if err != nil {
			return a, api.Errorf("version", api.CodeInvalidType, "want an integer, got %q", version)
		}
		a.version = n
	} else {
		// The ETag of the answer held, as a standard conditional request sends it.
		a.version, _ = httpx.IfNoneMatch(ifNoneMatch)
	}
	if wait != "" {
		dur, err := time.ParseDuration(wait)
		if err != nil {
			secs, serr := strconv.Atoi(wait)
			if serr != nil {
				return a, api.Errorf("wait", api.CodeInvalidType, "want a duration such as 30s, got %q", wait)
			}
			dur = time.Duration(secs) * time.Second
		}
		if dur < 0 || dur > d.maxWait {
			return a, api.Errorf("wait", api.CodeOutOfRange, "%s is outside [0, %s]", dur, d.maxWait)
		}
		a.wait = dur
	}
	return a, nil
}

// pollNames reads the ?services of a poll for several services.
func pollNames(services string) ([]string, *api.FieldError) {
	names := strings.Split(services, ",")
	if len(names) == 1 && names[0] == "" {
		return nil, api.Errorf("services", api.CodeMissingField, "name the services: ?services=a,b,c")
	}
	if len(names) > MaxServicesPerPoll {
		return nil, api.Errorf("services", api.CodeTooMany, "%d services, at most %d", len(names), MaxServicesPerPoll)
	}
	for i, n := range names {
		if fe := api.KeyName(api.Index("services", i), n); fe != nil {
			return nil, fe
		}
	}
	return names, nil
}

// one serves GET /v1/discovery/{service}: at once when the snapshot's
// version differs from ?version, else when it changes, else 304 after ?wait.
func (d *discovery) one(ctx context.Context, c *app.RequestContext) {
	service := c.Param("service")
	if fe := api.KeyName("service", service); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	a, fe := d.args(c)
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	snap := d.cache.Get(service)
	names := []string{service}
	d.pollers.saw(a.client, names, false, a.version, time.Now())
	if snap.Version == a.version {
		held, release, err := d.cache.Hold(service)
		if err != nil {
			d.tooMany(c, err)
			return
		}
		defer release()
		if snap = held; snap.Version == a.version {
			if snap = d.wait(ctx, a.wait, snap); snap == nil {
				d.notModified(c, a.version)
				return
			}
			// A poller released by a change: how long after the change it is answered.
			d.metrics.push.Observe(time.Since(snap.built).Seconds())
		}
	}
	d.metrics.polls.WithLabelValues("changed").Inc()
	d.pollers.saw(a.client, names, false, snap.Version, time.Now())
	buf := d.buf()
	defer d.bufs.Put(buf)
	*buf = snap.AppendJSON((*buf)[:0], time.Now(), d.stale())
	d.write(c, snap.Version, *buf)
}

// many serves GET /v1/discovery?services=a,b,c: one answer for several
// services, whose version is a hash of theirs.
func (d *discovery) many(ctx context.Context, c *app.RequestContext) {
	names, fe := pollNames(string(c.Query("services")))
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	a, fe := d.args(c)
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	snaps, version := d.collect(names)
	d.pollers.saw(a.client, names, true, a.version, time.Now())
	if version == a.version {
		// Wait on held snapshots (a service only polled for has none otherwise).
		for _, n := range names {
			_, release, err := d.cache.Hold(n)
			if err != nil {
				d.tooMany(c, err)
				return
			}
			defer release()
		}
		snaps, version = d.collect(names)
	}
	if version == a.version {
		// One channel for every service named, told by the cache: no
		// goroutine per service per held poll.
		changed := make(chan struct{}, 1)
		cancel := d.cache.Subscribe(names, changed)
		snaps, version = d.collect(names) // after subscribing: no change is missed
		t := time.NewTimer(a.wait)
		d.metrics.waiting.Inc()
		for version == a.version {
			select {
			case <-changed:
				snaps, version = d.collect(names)
				continue
			case <-t.C:
			case <-ctx.Done():
			case <-d.stopping:
			}
			break
		}
		d.metrics.waiting.Dec()
		t.Stop()
		cancel()
		if version == a.version {
			d.notModified(c, a.version)
			return
		}
	}
	d.metrics.polls.WithLabelValues("changed").Inc()
	now, stale := time.Now(), d.stale()
	d.pollers.saw(a.client, names, true, version, now)
	buf := d.buf()
	defer d.bufs.Put(buf)
	b := appendBatch((*buf)[:0], snaps, version, now, stale)
	*buf = b
	d.write(c, version, b)
}

func (d *discovery) collect(names []string) ([]*Snapshot, int64) { return collect(d.cache, names) }

// collect gets the snapshots of names and their combined version, a hash of theirs.
func collect(cache *Cache, names []string) ([]*Snapshot, int64) {
	snaps := make([]*Snapshot, len(names))
	h := fnv.New64a()
	var num [24]byte
	for i, n := range names {
		s := cache.Get(n)
		snaps[i] = s
		h.Write(strconv.AppendInt(num[:0], s.Version, 10))
		h.Write([]byte{0})
	}
	return snaps, max(1, int64(h.Sum64()&(1<<53-1)))
}

// appendBatch appends the answer of a poll for several services.
func appendBatch(b []byte, snaps []*Snapshot, version int64, now time.Time, stale bool) []byte {
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, version, 10)
	b = append(b, `,"services":[`...)
	for i, s := range snaps {
		if i > 0 {
			b = append(b, ',')
		}
		b = s.AppendJSON(b, now, stale)
	}
	b = append(b, `],"stale":`...)
	b = strconv.AppendBool(b, stale)
	return append(b, '}')
}

// wait holds a poll until snap is replaced (returning the new snapshot), the
// wait ends, the client goes, or mesh-core stops (returning nil). The
// caller holds snap's service (Cache.Hold).
func (d *discovery) wait(ctx context.Context, wait time.Duration, snap *Snapshot) *Snapshot {
	t := time.NewTimer(wait)
	defer t.Stop()
	d.metrics.waiting.Inc()
	defer d.metrics.waiting.Dec()
	for {
		select {
		case <-snap.Changed():
			next := d.cache.Get(snap.Service)
			if next.Version != snap.Version {
				return next
			}
			snap = next
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		case <-d.stopping:
			return nil
		}
	}
}

func (d *discovery) notModified(c *app.RequestContext, version int64) {
	d.metrics.polls.WithLabelValues("not_modified").Inc()
	c.Response.Header.Set("X-Sextant-Version", strconv.FormatInt(version, 10))
	c.Response.Header.Set("ETag", httpx.ETag(version))
	c.Status(consts.StatusNotModified)
}

func (d *discovery) tooMany(c *app.RequestContext, err error) {
	status, fe := holdError(err)
	httpx.WriteError(c, status, fe)
}

// holdError is the answer to a poll whose Cache.Hold failed.
func holdError(err error) (int, *api.FieldError) {
	if errors.Is(err, ErrTooManyServices) {
		return consts.StatusTooManyRequests, api.Errorf("service", "too_many_services", "mesh-core holds --max-services services already")
	}
	return consts.StatusInternalServerError, api.Errorf("", "internal", "%v", err)
}

func (d *discovery) buf() *[]byte {
	if b, ok := d.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 4096)
	return &b
}

func (d *discovery) write(c *app.RequestContext, version int64, body []byte) {
	c.Response.Header.SetContentType("application/json; charset=utf-8")
	c.Response.Header.Set("ETag", httpx.ETag(version))
	c.Response.SetStatusCode(consts.StatusOK)
	// The response copies the body: the buffer goes back to the pool.
	c.Response.SetBody(body)
}
