package core

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
)

// registry serves POST /v1/instances, PUT .../heartbeat and DELETE. An
// instance's key is written when it registers, under this replica's session
// lease; its heartbeats are kept in memory (liveness), and the key is
// deleted when it deregisters or misses its TTL.
type registry struct {
	etcd       *clientv3.Client
	live       *liveness
	cache      *Cache
	keys       api.Keys
	defaultTTL int64
	maxBody    int
	metrics    *metrics
	log        *slog.Logger
}

func (r *registry) key(service, instance string) string {
	return r.keys.Instance(service, instance)
}

// registered is the answer to a registration.
type registered struct {
	api.Registration
	LeaseID int64 `json:"lease_id"`
}

func (r *registry) register(ctx context.Context, c *app.RequestContext) {
	var body bytes.Buffer
	if fe := httpx.ReadBody(c, &body, r.maxBody); fe != nil {
		r.fail(c, "register", fe)
		return
	}
	var reg api.Registration
	if fe := jsonx.Decode(body.Bytes(), &reg); fe != nil {
		r.fail(c, "register", fe)
		return
	}
	if fe := reg.Validate(r.defaultTTL); fe != nil {
		r.fail(c, "register", fe)
		return
	}
	if !r.mayActFor(c, "register", reg.Service) {
		return
	}
	value, _ := json.Marshal(reg)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lease, err := r.live.put(ctx, r.key(reg.Service, reg.Instance), string(value), time.Duration(reg.TTLSeconds)*time.Second)
	if err != nil {
		r.unavailable(c, "register", err)
		return
	}
	r.metrics.registrations.WithLabelValues("register", "ok").Inc()
	c.JSON(consts.StatusCreated, registered{Registration: reg, LeaseID: int64(lease)})
}

func (r *registry) heartbeat(ctx context.Context, c *app.RequestContext) {
	service, instance := c.Param("service"), c.Param("instance")
	if !r.mayActFor(c, "heartbeat", service) {
		return
	}
	key := r.key(service, instance)
	ttl, err := r.live.heartbeat(key)
	if errors.Is(err, errNotAlive) {
		ttl, err = r.adopt(ctx, service, instance)
	}
	switch {
	case errors.Is(err, errNotAlive):
		r.notFound(c, "heartbeat", service, instance)
		return
	case err != nil:
		r.unavailable(c, "heartbeat", err)
		return
	}
	r.metrics.registrations.WithLabelValues("heartbeat", "ok").Inc()
	c.JSON(consts.StatusOK, map[string]any{"service": service, "instance": instance, "ttl_s": int64(ttl.Seconds())})
}

// mayActFor answers 403 unless the request's credential is service's own
// (or an operator's that may write): a data plane registers, heartbeats and
// deregisters only instances of its own service.
func (r *registry) mayActFor(c *app.RequestContext, op, service string) bool {
	if id := authn.From(c); !id.MayActFor(service) {
		r.metrics.registrations.WithLabelValues(op, "forbidden").Inc()
		authn.Forbid(c, "%s may not %s instances of %s", id.Name(), op, service)
		return false
	}
	return true
}

// adopt keeps alive an instance registered through another replica (or
// before this one restarted) that heartbeats here: its key is written again
// under this replica's lease. errNotAlive when it is registered nowhere.
func (r *registry) adopt(ctx context.Context, service, instance string) (time.Duration, error) {
	reg, ok := r.cache.registration(service, instance)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if !ok { // the cache follows etcd a moment behind: ask etcd
		cur, err := r.etcd.Get(ctx, r.key(service, instance))
		if err != nil {
			return 0, err
		}
		if len(cur.Kvs) == 0 || json.Unmarshal(cur.Kvs[0].Value, &reg) != nil {
			return 0, errNotAlive
		}
	}
	value, _ := json.Marshal(reg)
	ttl := time.Duration(reg.TTLSeconds) * time.Second
	if _, err := r.live.put(ctx, r.key(service, instance), string(value), ttl); err != nil {
		return 0, err
	}
	r.metrics.registrations.WithLabelValues("adopt", "ok").Inc()
	return ttl, nil
}

func (r *registry) deregister(ctx context.Context, c *app.RequestContext) {
	service, instance := c.Param("service"), c.Param("instance")
	if !r.mayActFor(c, "deregister", service) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Not kept alive before the delete, so that the cache applies the
	// delete at once rather than hold it as a lost session's (Cache.keptAlive).
	kept := r.live.forget(r.key(service, instance))
	resp, err := r.etcd.Delete(ctx, r.key(service, instance), clientv3.WithPrevKV())
	if err != nil {
		r.live.keep(r.key(service, instance), kept)
		r.unavailable(c, "deregister", err)
		return
	}
	if len(resp.PrevKvs) == 0 {
		r.notFound(c, "deregister", service, instance)
		return
	}
	r.metrics.registrations.WithLabelValues("deregister", "ok").Inc()
	c.Status(consts.StatusNoContent)
}

func (r *registry) fail(c *app.RequestContext, op string, fe *api.FieldError) {
	status := consts.StatusBadRequest
	if fe.Code == httpx.CodeBodyTooLarge {
		status = consts.StatusRequestEntityTooLarge
	}
	r.metrics.registrations.WithLabelValues(op, fe.Code).Inc()
	httpx.WriteError(c, status, fe)
}

func (r *registry) notFound(c *app.RequestContext, op, service, instance string) {
	r.metrics.registrations.WithLabelValues(op, "not_found").Inc()
	httpx.WriteError(c, consts.StatusNotFound, api.Errorf("instance", "not_found",
		"instance %q of %q is not registered (or its lease expired): register it again", instance, service))
}

func (r *registry) unavailable(c *app.RequestContext, op string, err error) {
	r.metrics.registrations.WithLabelValues(op, "unavailable").Inc()
	r.log.Warn("registry write failed", "op", op, "err", err)
	c.Response.Header.Set("Retry-After", "1")
	httpx.WriteError(c, consts.StatusServiceUnavailable, api.Errorf("", "unavailable", "the registry store (etcd) is unreachable: %v", err))
}
