package sdk

import (
	"net/http"
	"strings"
	"time"
)

// baseURL is the URL of a control-plane address as the SDK's options take
// it: "host:port" means plain HTTP, a URL with a scheme ("https://host:port")
// is used as given. Give an https address, and an HTTPClient with the TLS
// configuration it needs, to reach a control plane behind TLS.
func baseURL(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimSuffix(addr, "/")
	}
	return "http://" + addr
}

// httpClient is a copy of c (http.DefaultClient's transport when nil) with
// the given timeout: the SDK's long polls need their own.
func httpClient(c *http.Client, timeout time.Duration) *http.Client {
	out := &http.Client{}
	if c != nil {
		*out = *c
	}
	out.Timeout = timeout
	return out
}
