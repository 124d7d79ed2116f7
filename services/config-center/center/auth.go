package center

import (
	"context"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
)

// Roles of API tokens.
const (
	RoleReader = "reader"
	RoleWriter = "writer"
)

// Token is one API token.
type Token struct {
	Token string `json:"token"`
	Name  string `json:"name"`
	Role  string `json:"role"`
}

// tokens checks bearer tokens. Writes need a writer token; reads need a
// reader or writer token when readAuth is on.
type tokens struct {
	list     []Token
	readAuth bool
}

// loadTokens reads the tokens file (if any) and adds the admin token.
func loadTokens(file, admin string, readAuth bool) (*tokens, error) {
	t := &tokens{readAuth: readAuth}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Tokens []Token `json:"tokens"`
		}
		if fe := jsonx.Decode(b, &doc); fe != nil {
			return nil, fmt.Errorf("%s: %w", file, fe)
		}
		for i, tok := range doc.Tokens {
			if tok.Token == "" || tok.Name == "" || (tok.Role != RoleReader && tok.Role != RoleWriter) {
				return nil, fmt.Errorf("%s: tokens[%d] needs token, name and role reader or writer", file, i)
			}
		}
		t.list = doc.Tokens
	}
	if admin != "" {
		t.list = append(t.list, Token{Token: admin, Name: "admin", Role: RoleWriter})
	}
	return t, nil
}

// who returns the holder of the request's bearer token, if any is valid.
func (t *tokens) who(c *app.RequestContext) (Token, bool) {
	h := string(c.GetHeader("Authorization"))
	given, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || given == "" {
		return Token{}, false
	}
	for _, tok := range t.list {
		if subtle.ConstantTimeCompare([]byte(tok.Token), []byte(given)) == 1 {
			return tok, true
		}
	}
	return Token{}, false
}

// require is middleware: 401 without a valid token, 403 with a token of too
// low a role. Reads pass without a token unless readAuth is on.
func (t *tokens) require(write bool) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		tok, ok := t.who(c)
		switch {
		case !write && !t.readAuth:
			if ok {
				c.Set("who", tok.Name)
			}
			c.Next(ctx)
			return
		case !ok:
			c.Response.Header.Set("WWW-Authenticate", `Bearer realm="sextant"`)
			httpx.WriteError(c, consts.StatusUnauthorized, api.Errorf("Authorization", "unauthorized", "a valid bearer token is required"))
			c.Abort()
			return
		case write && tok.Role != RoleWriter:
			httpx.WriteError(c, consts.StatusForbidden, api.Errorf("Authorization", "forbidden", "token %q may read, not write", tok.Name))
			c.Abort()
			return
		}
		c.Set("who", tok.Name)
		c.Next(ctx)
	}
}

// whoOf is the name of the token holder of a request that passed require.
func whoOf(c *app.RequestContext) string { return c.GetString("who") }
