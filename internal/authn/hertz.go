package authn

import (
	"context"
	"flag"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
)

// RegisterFlags adds --admin-token and --tokens-file.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.AdminToken, "admin-token", c.AdminToken, "operator token that may read and write everything (prefer the environment: SEXTANT_ADMIN_TOKEN)")
	fs.StringVar(&c.TokensFile, "tokens-file", c.TokensFile, `JSON file of more operator tokens: {"tokens": [{"token", "name", "role": "reader"|"writer"}]}`)
}

const identityKey = "sextant.identity"

// Authenticate is Hertz middleware: a request without a valid credential is
// answered 401 with a JSON error; the others go on with their Identity.
func (v *Verifier) Authenticate() app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		id, fe := v.Verify(string(c.GetHeader(api.AuthorizationHeader)))
		if fe != nil {
			Unauthorized(c, fe)
			return
		}
		c.Set(identityKey, id)
		c.Next(ctx)
	}
}

// RequireOperator is middleware after Authenticate: only operators pass,
// and only writers when write is set. The handler checks the operator's
// services (Identity.MayWriteFor).
func RequireOperator(write bool) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		id := From(c)
		switch {
		case !id.IsOperator():
			Forbid(c, "an operator token is required, %s is a data plane's", id.Name())
			return
		case write && id.Role != RoleWriter:
			Forbid(c, "%s may read, not write", id.Name())
			return
		}
		c.Next(ctx)
	}
}

// From is the identity of a request that passed Authenticate.
func From(c *app.RequestContext) Identity {
	v, _ := c.Get(identityKey)
	id, _ := v.(Identity)
	return id
}

// Unauthorized answers 401 and stops the request.
func Unauthorized(c *app.RequestContext, fe *api.FieldError) {
	c.Response.Header.Set("WWW-Authenticate", `Bearer realm="sextant"`)
	httpx.WriteError(c, consts.StatusUnauthorized, fe)
	c.Abort()
}

// Forbid answers 403 and stops the request.
func Forbid(c *app.RequestContext, format string, args ...any) {
	httpx.WriteError(c, consts.StatusForbidden, api.Errorf(api.AuthorizationHeader, api.CodeForbidden, format, args...))
	c.Abort()
}
