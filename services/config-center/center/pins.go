package center

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
)

// pinRequest is the body of POST /v1/pins/{service}.
type pinRequest struct {
	Kind     string `json:"kind"`
	Scope    string `json:"scope"`
	Revision int64  `json:"revision"`
}

// pinsKey holds the pins of a service, as one JSON list.
func (s *store) pinsKey(service string) string { return s.keys.PinsOf(service) }

// pin holds service to a version of a config until it is unpinned: no
// rollout, promote or new write changes what its instances apply.
func (a *configAPI) pin(ctx context.Context, c *app.RequestContext) {
	service := c.Param("service")
	if fe := api.Name("service", service, true); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	if id := authn.From(c); !id.MayWriteFor(service) {
		authn.Forbid(c, "%s may not pin configs of %s", id.Name(), service)
		return
	}
	var body bytes.Buffer
	if fe := httpx.ReadBody(c, &body, a.maxBody); fe != nil {
		httpx.WriteError(c, statusOfBodyError(fe), fe)
		return
	}
	var req pinRequest
	if fe := jsonx.Decode(body.Bytes(), &req); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	r, fe := parseConfigPath(req.Kind, req.Scope)
	if fe != nil || r.action != "" {
		if fe == nil {
			fe = api.Errorf("scope", api.CodeInvalidValue, "not a scope: %q", req.Scope)
		}
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	version, err := a.store.Version(ctx, r.ref, req.Revision)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			httpx.WriteError(c, consts.StatusNotFound, api.Errorf("revision", "not_found", "%s has no version at revision %d", r.ref, req.Revision))
			return
		}
		a.fail(c, r.ref, err)
		return
	}
	p := api.Pin{Kind: r.ref.Kind, Scope: r.ref.Scope(), Revision: req.Revision, Document: version.Document,
		PinnedBy: authn.From(c).Name(), AtMs: time.Now().UnixMilli()}
	a.updatePins(ctx, c, service, r.ref, "pin", func(pins []api.Pin) []api.Pin {
		pins = slices.DeleteFunc(pins, func(q api.Pin) bool { return q.Kind == p.Kind && q.Scope == p.Scope })
		return append(pins, p)
	})
}

// unpin releases ?kind=K&scope=S of service.
func (a *configAPI) unpin(ctx context.Context, c *app.RequestContext) {
	service := c.Param("service")
	if id := authn.From(c); !id.MayWriteFor(service) {
		authn.Forbid(c, "%s may not unpin configs of %s", id.Name(), service)
		return
	}
	r, fe := parseConfigPath(string(c.Query("kind")), string(c.Query("scope")))
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	found := false
	a.updatePins(ctx, c, service, r.ref, "unpin", func(pins []api.Pin) []api.Pin {
		return slices.DeleteFunc(pins, func(q api.Pin) bool {
			hit := q.Kind == r.ref.Kind && q.Scope == r.ref.Scope()
			found = found || hit
			return hit
		})
	}, &found)
}

func (a *configAPI) pins(_ context.Context, c *app.RequestContext) {
	service := c.Param("service")
	pins := a.view.PinsOf(service)
	if pins == nil {
		pins = []api.Pin{}
	}
	c.JSON(consts.StatusOK, map[string]any{"service": service, "pins": pins})
}

// updatePins changes a service's pins in one transaction with the copy the
// Kitex suite reads of the config concerned, and an audit record.
func (a *configAPI) updatePins(ctx context.Context, c *app.RequestContext, service string, r Ref, action string,
	change func([]api.Pin) []api.Pin, mustFind ...*bool) {
	s := a.store
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := s.pinsKey(service)
	cur, err := s.etcd.Get(ctx, key)
	if err != nil {
		a.fail(c, r, err)
		return
	}
	var pins []api.Pin
	cond := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if len(cur.Kvs) > 0 {
		_ = json.Unmarshal(cur.Kvs[0].Value, &pins)
		cond = clientv3.Compare(clientv3.ModRevision(key), "=", cur.Kvs[0].ModRevision)
	}
	pins = change(pins)
	if len(mustFind) > 0 && !*mustFind[0] {
		httpx.WriteError(c, consts.StatusNotFound, api.Errorf("scope", "not_found", "%s is not pinned for %q", r, service))
		return
	}
	ops := []clientv3.Op{}
	if len(pins) == 0 {
		ops = append(ops, clientv3.OpDelete(key))
	} else {
		b, _ := json.Marshal(pins)
		ops = append(ops, clientv3.OpPut(key, string(b)))
	}
	// A stock Kitex client of this service follows the pin too.
	if kk := s.kitexKey(r); kk != "" && r.appliedBy() == service {
		if e, err := s.Get(ctx, r); err == nil {
			ops = append(ops, clientv3.OpPut(kk, string(kitexDocument(r, e, pins))))
		}
	}
	audit := api.AuditEntry{AtMs: time.Now().UnixMilli(), Who: authn.From(c).Name(), Action: action, Kind: r.Kind, Scope: r.Scope(), Service: service}
	ops = append(ops, s.auditOp(audit))
	resp, err := s.etcd.Txn(ctx).If(cond).Then(ops...).Commit()
	if err != nil {
		a.fail(c, r, err)
		return
	}
	if !resp.Succeeded {
		a.fail(c, r, ErrRevisionMismatch)
		return
	}
	s.annotate(audit, resp.Header.Revision)
	s.prune(ctx, nil)
	if pins == nil {
		pins = []api.Pin{}
	}
	c.JSON(consts.StatusOK, map[string]any{"service": service, "pins": pins})
}
