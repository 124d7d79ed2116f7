package center

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/httpx"
)

// api serves /v1/configs, /v1/pins and /v1/audit.
type configAPI struct {
	store   *store
	view    *view
	maxBody int
	status  *statusBook
}

// configRequest is a parsed /v1/configs/{kind}/{scope...}[/{action}] path.
type configRequest struct {
	ref    Ref
	action string // "", history, status, rollback, promote, abort
}

var actions = map[string]bool{"history": true, "status": true, "rollback": true, "promote": true, "abort": true}

func parseConfigPath(kind, rest string) (configRequest, *api.FieldError) {
	parts := splitScope(rest)
	req := configRequest{}
	if n := len(parts); n > 1 && actions[parts[n-1]] {
		req.action, parts = parts[n-1], parts[:n-1]
	}
	ref, err := parseRef(kind, parts)
	if err != nil {
		field := "scope"
		if Kinds[kind] == nil {
			field = "kind"
		}
		return req, api.Errorf(field, api.CodeInvalidValue, "%v", err)
	}
	for i, name := range parts {
		if fe := api.Name(api.Index("scope", i), name, true); fe != nil {
			return req, fe
		}
	}
	req.ref = ref
	return req, nil
}

func (a *configAPI) configs(ctx context.Context, c *app.RequestContext) {
	req, fe := parseConfigPath(c.Param("kind"), c.Param("scope"))
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	method := string(c.Method())
	if id := authn.From(c); method != "GET" && !id.MayWriteFor(req.ref.Server) {
		authn.Forbid(c, "%s may not change the configs of %s", id.Name(), req.ref.Server)
		return
	}
	switch {
	case method == "GET" && req.action == "":
		a.get(ctx, c, req.ref)
	case method == "GET" && req.action == "history":
		a.history(ctx, c, req.ref)
	case method == "GET" && req.action == "status":
		c.JSON(consts.StatusOK, a.status.of(req.ref))
	case method == "PUT" && req.action == "":
		a.put(ctx, c, req.ref)
	case method == "DELETE" && req.action == "":
		a.remove(ctx, c, req.ref)
	case method == "POST" && req.action == "rollback":
		a.rollback(ctx, c, req.ref)
	case method == "POST" && req.action == "promote":
		a.promote(ctx, c, req.ref)
	case method == "POST" && req.action == "abort":
		a.abort(ctx, c, req.ref)
	default:
		httpx.WriteError(c, consts.StatusMethodNotAllowed, api.Errorf("", "method_not_allowed", "%s is not served on this path", method))
	}
}

func (a *configAPI) get(ctx context.Context, c *app.RequestContext, r Ref) {
	e, err := a.store.Get(ctx, r)
	if err != nil {
		a.fail(c, r, err)
		return
	}
	c.Response.Header.Set("ETag", httpx.ETag(e.Revision))
	c.JSON(consts.StatusOK, e)
}

func (a *configAPI) history(ctx context.Context, c *app.RequestContext, r Ref) {
	h, err := a.store.History(ctx, r)
	if err != nil {
		a.fail(c, r, err)
		return
	}
	if len(h) == 0 {
		a.fail(c, r, ErrNotFound)
		return
	}
	c.JSON(consts.StatusOK, map[string]any{"kind": r.Kind, "scope": r.Scope(), "versions": h})
}

// put writes a new document: at once, or staged to ?rollout=P percent of
// the instances.
func (a *configAPI) put(ctx context.Context, c *app.RequestContext, r Ref) {
	var body bytes.Buffer
	if fe := httpx.ReadBody(c, &body, a.maxBody); fe != nil {
		httpx.WriteError(c, statusOfBodyError(fe), fe)
		return
	}
	doc := body.Bytes()
	if fe := Kinds[r.Kind].Validate(doc); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	if string(c.Query("validate")) == "true" { // checked, not written: an editor's check before saving
		c.JSON(consts.StatusOK, map[string]any{"kind": r.Kind, "scope": r.Scope(), "valid": true})
		return
	}
	ifMatch, fe := ifMatchOf(c)
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	next := &api.Entry{Document: json.RawMessage(compact(doc)), UpdatedBy: authn.From(c).Name(), UpdatedAtMs: time.Now().UnixMilli()}
	audit := api.AuditEntry{Who: authn.From(c).Name(), Action: "put", Kind: r.Kind, Scope: r.Scope()}
	if p := string(c.Query("rollout")); p != "" {
		percent, err := strconv.Atoi(p)
		if err != nil || percent < 1 || percent > 99 {
			httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("rollout", api.CodeOutOfRange, "want a percentage in [1, 99], got %q", p))
			return
		}
		cur, err := a.store.Get(ctx, r)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				httpx.WriteError(c, consts.StatusConflict, api.Errorf("rollout", "nothing_to_roll_from", "%s does not exist yet: write it without rollout first", r))
				return
			}
			a.fail(c, r, err)
			return
		}
		prevDoc, prevRev := cur.Document, cur.Revision
		if cur.Rollout != nil { // a new canary over a canary starts from the same base
			prevDoc, prevRev = cur.Rollout.Previous, cur.Rollout.PreviousRevision
		}
		next.Rollout = &api.Rollout{Percent: percent, Previous: prevDoc, PreviousRevision: prevRev}
		audit.Action, audit.Detail = "rollout", "percent="+p
	}
	a.write(ctx, c, r, ifMatch, next, audit, consts.StatusOK)
}

func (a *configAPI) remove(ctx context.Context, c *app.RequestContext, r Ref) {
	ifMatch, fe := ifMatchOf(c)
	if fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	rev, err := a.store.Write(ctx, r, ifMatch, nil, api.AuditEntry{Who: authn.From(c).Name(), Action: "delete", Kind: r.Kind, Scope: r.Scope()})
	if err != nil {
		a.fail(c, r, err)
		return
	}
	c.JSON(consts.StatusOK, map[string]any{"kind": r.Kind, "scope": r.Scope(), "deleted_at_revision": rev})
}

// rollback writes the document of revision ?to=R again, as a new version.
func (a *configAPI) rollback(ctx context.Context, c *app.RequestContext, r Ref) {
	to, err := strconv.ParseInt(string(c.Query("to")), 10, 64)
	if err != nil || to <= 0 {
		httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("to", api.CodeInvalidValue, "want the revision to roll back to: ?to=R"))
		return
	}
	old, err := a.store.Version(ctx, r, to)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			httpx.WriteError(c, consts.StatusNotFound, api.Errorf("to", "not_found", "%s has no version at revision %d", r, to))
			return
		}
		a.fail(c, r, err)
		return
	}
	next := &api.Entry{Document: old.Document, UpdatedBy: authn.From(c).Name(), UpdatedAtMs: time.Now().UnixMilli()}
	a.write(ctx, c, r, a.currentRevision(ctx, r), next, api.AuditEntry{Who: authn.From(c).Name(), Action: "rollback", Kind: r.Kind, Scope: r.Scope(),
		Detail: "to=" + strconv.FormatInt(to, 10)}, consts.StatusOK)
}

// promote widens a rollout to ?percent=P; at 100 the new document is everyone's.
func (a *configAPI) promote(ctx context.Context, c *app.RequestContext, r Ref) {
	cur, ok := a.rolloutOf(ctx, c, r)
	if !ok {
		return
	}
	p, err := strconv.Atoi(string(c.Query("percent")))
	if err != nil || p <= cur.Rollout.Percent || p > 100 {
		httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("percent", api.CodeOutOfRange,
			"want a percentage above the current %d and at most 100", cur.Rollout.Percent))
		return
	}
	next := *cur
	next.UpdatedBy, next.UpdatedAtMs = authn.From(c).Name(), time.Now().UnixMilli()
	if p == 100 {
		next.Rollout = nil
	} else {
		ro := *cur.Rollout
		ro.Percent = p
		next.Rollout = &ro
	}
	a.write(ctx, c, r, cur.Revision, &next, api.AuditEntry{Who: authn.From(c).Name(), Action: "promote", Kind: r.Kind, Scope: r.Scope(),
		Detail: "percent=" + strconv.Itoa(p)}, consts.StatusOK)
}

// abort ends a rollout: everyone goes back to the previous document.
func (a *configAPI) abort(ctx context.Context, c *app.RequestContext, r Ref) {
	cur, ok := a.rolloutOf(ctx, c, r)
	if !ok {
		return
	}
	next := &api.Entry{Document: cur.Rollout.Previous, UpdatedBy: authn.From(c).Name(), UpdatedAtMs: time.Now().UnixMilli()}
	a.write(ctx, c, r, cur.Revision, next, api.AuditEntry{Who: authn.From(c).Name(), Action: "abort", Kind: r.Kind, Scope: r.Scope()}, consts.StatusOK)
}

func (a *configAPI) rolloutOf(ctx context.Context, c *app.RequestContext, r Ref) (*api.Entry, bool) {
	cur, err := a.store.Get(ctx, r)
	if err != nil {
		a.fail(c, r, err)
		return nil, false
	}
	if cur.Rollout == nil {
		httpx.WriteError(c, consts.StatusConflict, api.Errorf("", "no_rollout", "%s has no rollout in progress", r))
		return nil, false
	}
	return cur, true
}

// currentRevision is the revision to write over (0 when r does not exist).
func (a *configAPI) currentRevision(ctx context.Context, r Ref) int64 {
	if cur, err := a.store.Get(ctx, r); err == nil {
		return cur.Revision
	}
	return 0
}

func (a *configAPI) write(ctx context.Context, c *app.RequestContext, r Ref, ifMatch int64, next *api.Entry, audit api.AuditEntry, status int) {
	rev, err := a.store.Write(ctx, r, ifMatch, next, audit)
	if err != nil {
		a.fail(c, r, err)
		return
	}
	next.Revision = rev
	c.Response.Header.Set("ETag", httpx.ETag(rev))
	c.JSON(status, next)
}

// fail maps store errors to answers.
func (a *configAPI) fail(c *app.RequestContext, r Ref, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		httpx.WriteError(c, consts.StatusNotFound, api.Errorf("scope", "not_found", "no %s config for %s", r.Kind, r.Scope()))
	case errors.Is(err, ErrRevisionRequired):
		httpx.WriteError(c, consts.StatusPreconditionRequired, api.Errorf("If-Match", "revision_required",
			"%s exists: send If-Match with the revision you read (GET it for its ETag)", r))
	case errors.Is(err, ErrRevisionMismatch):
		httpx.WriteError(c, consts.StatusPreconditionFailed, api.Errorf("If-Match", "revision_mismatch",
			"%s changed since the revision you read: GET it again", r))
	default:
		c.Response.Header.Set("Retry-After", "1")
		httpx.WriteError(c, consts.StatusServiceUnavailable, api.Errorf("", "unavailable", "the config store (etcd) is unreachable: %v", err))
	}
}

// ifMatchOf reads If-Match: -1 when absent, else the revision of the ETag
// it holds, quoted as the config-center sends it or bare as it did before
// (0: the config must not exist yet). A weak tag never matches a write.
func ifMatchOf(c *app.RequestContext) (int64, *api.FieldError) {
	v := strings.TrimSpace(string(c.GetHeader("If-Match")))
	if v == "" {
		return -1, nil
	}
	rev, weak, ok := httpx.ParseETag(v)
	if !ok || weak {
		return 0, api.Errorf("If-Match", api.CodeInvalidValue, "want the ETag you read (a revision such as \"42\"), got %q", v)
	}
	return rev, nil
}

func (a *configAPI) list(_ context.Context, c *app.RequestContext) {
	service := string(c.Query("service"))
	if fe := api.Name("service", service, false); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	if service == "" { // every config: what an export reads
		c.JSON(consts.StatusOK, map[string]any{"configs": a.view.All()})
		return
	}
	entries := a.view.Involving(service)
	if entries == nil {
		entries = []api.Entry{}
	}
	c.JSON(consts.StatusOK, map[string]any{"service": service, "configs": entries, "pins": a.view.PinsOf(service)})
}

func (a *configAPI) audit(ctx context.Context, c *app.RequestContext) {
	limit := int64(100)
	if l := string(c.Query("limit")); l != "" {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil || n < 1 || n > 1000 {
			httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("limit", api.CodeOutOfRange, "want 1..1000"))
			return
		}
		limit = n
	}
	entries, err := a.store.Audit(ctx, limit)
	if err != nil {
		a.fail(c, Ref{}, err)
		return
	}
	c.JSON(consts.StatusOK, map[string]any{"entries": entries})
}

func statusOfBodyError(fe *api.FieldError) int {
	if fe.Code == httpx.CodeBodyTooLarge {
		return consts.StatusRequestEntityTooLarge
	}
	return consts.StatusBadRequest
}

// compact stores documents without insignificant whitespace.
func compact(doc []byte) []byte {
	var b bytes.Buffer
	if json.Compact(&b, doc) != nil {
		return doc
	}
	return b.Bytes()
}
