// Package console is the config-center's web console: static assets (HTML,
// CSS, JavaScript, no framework) embedded in the binary and served at /ui/
// without a credential. The data the console shows comes from the
// config-center's API, which the browser calls with the operator's bearer
// token (docs/console.md).
package console

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"path"
	"strings"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
)

//go:embed assets
var assets embed.FS

// Policy is the Content-Security-Policy of every console response: scripts,
// styles and API calls from the config-center itself only, no inline script
// or style element, no frames, no plugins.
const Policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// types are the content types of the assets, by extension; an asset of
// another extension is not served.
var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

type file struct {
	body  []byte
	ctype string
	etag  string
}

// Register serves the console at /ui/ on h.
func Register(h *server.Hertz) {
	files := map[string]file{}
	add := func(name string, body []byte) {
		sum := sha256.Sum256(body)
		files[name] = file{body: body, ctype: types[path.Ext(name)], etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err)
	}
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || types[path.Ext(name)] == "" {
			return err
		}
		body, err := fs.ReadFile(sub, name)
		if err == nil {
			add(name, body)
		}
		return err
	})
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	serve := func(_ context.Context, c *app.RequestContext) {
		name := strings.TrimPrefix(c.Param("path"), "/")
		if name == "" {
			name = "index.html"
		}
		setHeaders(c)
		f, ok := files[name]
		if !ok {
			c.Response.Header.Set("Content-Type", types[".html"])
			c.SetStatusCode(consts.StatusNotFound)
			c.Response.SetBodyString("<!doctype html><title>Not found</title><p>Not found. The console is at <a href=\"/ui/\">/ui/</a>.</p>\n")
			return
		}
		c.Response.Header.Set("Content-Type", f.ctype)
		c.Response.Header.Set("ETag", f.etag)
		if inm := string(c.GetHeader("If-None-Match")); inm != "" && strings.Contains(inm, f.etag) {
			c.SetStatusCode(consts.StatusNotModified)
			return
		}
		c.SetStatusCode(consts.StatusOK)
		if string(c.Method()) != consts.MethodHead {
			c.Response.SetBody(f.body)
		} else {
			c.Response.Header.SetContentLength(len(f.body))
			c.Response.SkipBody = true
		}
	}
	h.GET("/ui/*path", serve)
	h.HEAD("/ui/*path", serve)
	h.GET("/ui", func(_ context.Context, c *app.RequestContext) {
		setHeaders(c)
		c.Redirect(consts.StatusMovedPermanently, []byte("/ui/"))
	})
}

func setHeaders(c *app.RequestContext) {
	h := &c.Response.Header
	h.Set("Content-Security-Policy", Policy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-cache")
}
