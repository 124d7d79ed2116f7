package authn

import (
	"context"
	"crypto/x509"
	"flag"
	"strings"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/network"
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
// answered 401 with a JSON error; the others go on with their Identity. The
// credential is the Authorization header when there is one, else the client
// certificate of a TLS connection (an expired or untrusted one is refused,
// it does not fall back to anything).
func (v *Verifier) Authenticate() app.HandlerFunc { return v.AuthenticateWith(nil) }

// AuthenticateWith is Authenticate that also takes a Kubernetes
// service-account token (a JWT) as the bearer credential, verified by sa
// (nil: refused as any unknown credential). Only the routes where a
// workload proves who it is use it.
func (v *Verifier) AuthenticateWith(sa *ServiceAccounts) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		var (
			id Identity
			fe *api.FieldError
		)
		header := c.GetHeader(api.AuthorizationHeader)
		if chain := peerChain(ctx, c); len(header) == 0 && len(chain) > 0 {
			id, fe = v.VerifyPeer(chain)
		} else if bearer, ok := strings.CutPrefix(string(header), api.BearerPrefix); ok && sa != nil && LooksLikeJWT(bearer) {
			id, fe = sa.Verify(ctx, bearer)
		} else {
			id, fe = v.Verify(string(header))
		}
		if fe != nil {
			Unauthorized(c, fe)
			return
		}
		c.Set(identityKey, id)
		c.Next(ctx)
	}
}

// peerChain is the certificate chain the client presented in the TLS
// handshake of the request's connection, nil on a plain one. Hertz's
// standard transport hands a TLS connection to the request as is, or
// wrapped (when it senses client disconnection) in a type that hides its
// TLS state: OnConnect keeps the connection in the context for that case.
func peerChain(ctx context.Context, c *app.RequestContext) []*x509.Certificate {
	t, ok := c.GetConn().(network.ConnTLSer)
	if !ok {
		t, ok = ctx.Value(tlsConnKey{}).(network.ConnTLSer)
	}
	if !ok {
		return nil
	}
	return t.ConnectionState().PeerCertificates
}

type tlsConnKey struct{}

// OnConnect is the Hertz OnConnect hook of a TLS port (server.WithOnConnect):
// it keeps the TLS connection in the connection's context, where
// Authenticate finds the client's certificate.
func OnConnect(ctx context.Context, conn network.Conn) context.Context {
	if t, ok := conn.(network.ConnTLSer); ok {
		return context.WithValue(ctx, tlsConnKey{}, t)
	}
	return ctx
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
