package center

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
)

// tokenAPI issues, lists and revokes data-plane tokens (docs/security.md).
// A token's secret is returned once and only its SHA-256 is stored; every
// service verifies tokens from its own mirror of Keys.Tokens.
type tokenAPI struct {
	etcd    *clientv3.Client
	keys    api.Keys
	timeout time.Duration
	store   *store // for the audit records
}

const maxTokenRequest = 4 << 10

func (t *tokenAPI) create(ctx context.Context, c *app.RequestContext) {
	var body bytes.Buffer
	if fe := httpx.ReadBody(c, &body, maxTokenRequest); fe != nil {
		httpx.WriteError(c, statusOfBodyError(fe), fe)
		return
	}
	var req api.TokenRequest
	if fe := jsonx.DecodeObject(body.Bytes(), &req); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	ttl, fe := req.Validate()
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	id := authn.From(c)
	holder := api.TokenInfo{Service: req.Service, Namespace: req.Namespace, CreatedBy: id.Name()}
	detail := "service " + req.Service
	if req.Operator != "" {
		// An operator's token: only an operator bound to no service issues one.
		if !id.MayWrite() {
			authn.Forbid(c, "%s may not issue operators' tokens", id.Name())
			return
		}
		holder = api.TokenInfo{Operator: req.Operator, Role: req.Role, Services: req.Services, CreatedBy: id.Name()}
		detail = "operator " + req.Operator + " (" + req.Role + " of " + strings.Join(req.Services, ",") + ")"
	} else if !id.MayWriteFor(req.Service) {
		authn.Forbid(c, "%s may not issue tokens of %s", id.Name(), req.Service)
		return
	}
	now := time.Now()
	record, token := authn.NewToken(holder, ttl, now)
	info := record.TokenInfo
	stored, _ := json.Marshal(record)
	audit := api.AuditEntry{AtMs: now.UnixMilli(), Who: info.CreatedBy, Action: "token-create", Service: req.Service,
		Detail: "token " + info.ID + " of " + detail + ", expires " + time.UnixMilli(info.ExpiresAtMs).UTC().Format(time.RFC3339)}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	key := t.keys.Token(info.ID)
	resp, err := t.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(stored)), t.store.auditOp(audit)).Commit()
	if err != nil || !resp.Succeeded {
		unavailable(c, err)
		return
	}
	c.JSON(consts.StatusCreated, api.TokenIssued{TokenInfo: info, Token: token})
}

func (t *tokenAPI) list(ctx context.Context, c *app.RequestContext) {
	service := string(c.Query("service"))
	if fe := api.Name("service", service, false); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	resp, err := t.etcd.Get(ctx, t.keys.Tokens(), clientv3.WithPrefix())
	if err != nil {
		unavailable(c, err)
		return
	}
	// An operator bound to some services sees their data planes' tokens.
	who := authn.From(c)
	out := []api.TokenInfo{}
	for _, kv := range resp.Kvs {
		var st api.StoredToken
		if json.Unmarshal(kv.Value, &st) != nil || (service != "" && st.Service != service) {
			continue
		}
		if (st.Operator != "" && who.MayReadFor("*")) || (st.Service != "" && who.MayReadFor(st.Service)) {
			out = append(out, st.TokenInfo)
		}
	}
	c.JSON(consts.StatusOK, map[string]any{"tokens": out})
}

func (t *tokenAPI) revoke(ctx context.Context, c *app.RequestContext) {
	id := c.Param("id")
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	key := t.keys.Token(id)
	got, err := t.etcd.Get(ctx, key)
	if err != nil {
		unavailable(c, err)
		return
	}
	if len(got.Kvs) == 0 {
		httpx.WriteError(c, consts.StatusNotFound, api.Errorf("id", "not_found", "no token %q", id))
		return
	}
	var st api.StoredToken
	_ = json.Unmarshal(got.Kvs[0].Value, &st)
	if who := authn.From(c); (st.Operator != "" && !who.MayWrite()) || (st.Operator == "" && !who.MayWriteFor(st.Service)) {
		authn.Forbid(c, "%s may not revoke token %s", who.Name(), id)
		return
	}
	audit := api.AuditEntry{AtMs: time.Now().UnixMilli(), Who: authn.From(c).Name(), Action: "token-revoke", Service: st.Service, Detail: "token " + id}
	resp, err := t.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", got.Kvs[0].ModRevision)).
		Then(clientv3.OpDelete(key), t.store.auditOp(audit)).Commit()
	if err != nil || !resp.Succeeded {
		unavailable(c, err)
		return
	}
	c.SetStatusCode(consts.StatusNoContent)
}

func unavailable(c *app.RequestContext, err error) {
	c.Response.Header.Set("Retry-After", "1")
	msg := "the token store (etcd) changed meanwhile: try again"
	if err != nil {
		msg = "the token store (etcd) is unreachable: " + err.Error()
	}
	httpx.WriteError(c, consts.StatusServiceUnavailable, api.Errorf("", "unavailable", "%s", msg))
}
