package core

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
)

// registry serves POST /v1/instances, PUT .../heartbeat and DELETE: every
// instance is a key under its own lease, so an instance that stops
// heartbeating disappears when its TTL runs out.
type registry struct {
	etcd       *clientv3.Client
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
	value, _ := json.Marshal(reg)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	key := r.key(reg.Service, reg.Instance)
	prev, err := r.etcd.Get(ctx, key)
	if err != nil {
		r.unavailable(c, "register", err)
		return
	}
	lease, err := r.etcd.Grant(ctx, reg.TTLSeconds)
	if err != nil {
		r.unavailable(c, "register", err)
		return
	}
	if _, err := r.etcd.Put(ctx, key, string(value), clientv3.WithLease(lease.ID)); err != nil {
		r.unavailable(c, "register", err)
		return
	}
	// A registration again (a restart): its old lease goes.
	if len(prev.Kvs) > 0 && prev.Kvs[0].Lease != 0 {
		_, _ = r.etcd.Revoke(ctx, clientv3.LeaseID(prev.Kvs[0].Lease))
	}
	r.metrics.registrations.WithLabelValues("register", "ok").Inc()
	c.JSON(consts.StatusCreated, registered{Registration: reg, LeaseID: int64(lease.ID)})
}

func (r *registry) heartbeat(ctx context.Context, c *app.RequestContext) {
	service, instance := c.Param("service"), c.Param("instance")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cur, err := r.etcd.Get(ctx, r.key(service, instance))
	if err != nil {
		r.unavailable(c, "heartbeat", err)
		return
	}
	if len(cur.Kvs) == 0 || cur.Kvs[0].Lease == 0 {
		r.notFound(c, "heartbeat", service, instance)
		return
	}
	resp, err := r.etcd.KeepAliveOnce(ctx, clientv3.LeaseID(cur.Kvs[0].Lease))
	if err != nil {
		r.unavailable(c, "heartbeat", err)
		return
	}
	r.metrics.registrations.WithLabelValues("heartbeat", "ok").Inc()
	c.JSON(consts.StatusOK, map[string]any{"service": service, "instance": instance, "ttl_s": resp.TTL})
}

func (r *registry) deregister(ctx context.Context, c *app.RequestContext) {
	service, instance := c.Param("service"), c.Param("instance")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := r.etcd.Delete(ctx, r.key(service, instance), clientv3.WithPrevKV())
	if err != nil {
		r.unavailable(c, "deregister", err)
		return
	}
	if len(resp.PrevKvs) == 0 {
		r.notFound(c, "deregister", service, instance)
		return
	}
	if l := resp.PrevKvs[0].Lease; l != 0 {
		_, _ = r.etcd.Revoke(ctx, clientv3.LeaseID(l))
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
