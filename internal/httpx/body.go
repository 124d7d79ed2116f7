package httpx

import (
	"bytes"
	"io"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/sextant-mesh/sextant/api"
)

// CodeBodyTooLarge is the error code of a body over its limit (answer 413).
const CodeBodyTooLarge = "body_too_large"

// ReadBody reads the request body, at most limit bytes, into dst. The server
// must stream bodies (server.WithStreamBody) for a chunked body to be
// stopped at the limit rather than read whole. A body over the limit, known
// from Content-Length or found while reading, is an error with code
// CodeBodyTooLarge, and the connection is closed after the answer since the
// rest of the body is not read.
func ReadBody(c *app.RequestContext, dst *bytes.Buffer, limit int) *api.FieldError {
	tooLarge := func() *api.FieldError {
		c.SetConnectionClose()
		return api.Errorf("", CodeBodyTooLarge, "request body exceeds %d bytes", limit)
	}
	if c.Request.Header.ContentLength() > limit {
		return tooLarge()
	}
	n, err := dst.ReadFrom(io.LimitReader(c.RequestBodyStream(), int64(limit)+1))
	if n > int64(limit) {
		return tooLarge()
	}
	if err != nil {
		return api.Errorf("", "unreadable_body", "reading the body: %v", err)
	}
	return nil
}
