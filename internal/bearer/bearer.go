// Package bearer is an HTTP client transport that sends a credential with
// every request, as the project's own tools and tests call its APIs.
package bearer

import (
	"net/http"

	"github.com/sextant-mesh/sextant/api"
)

// Transport sends Token with every request that carries no credential of
// its own, through Next (http.DefaultTransport when nil).
type Transport struct {
	Token string
	Next  http.RoundTripper
}

func (t Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	next := t.Next
	if next == nil {
		next = http.DefaultTransport
	}
	if req.Header.Get(api.AuthorizationHeader) == "" {
		req = req.Clone(req.Context())
		req.Header.Set(api.AuthorizationHeader, api.BearerPrefix+t.Token)
	}
	return next.RoundTrip(req)
}

// Client is a client that sends token.
func Client(token string) *http.Client { return &http.Client{Transport: Transport{Token: token}} }
