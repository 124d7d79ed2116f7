package sdk

import (
	"net/http"
	"os"
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

// TokenEnv names the environment variable the SDK's clients take their
// credential from when their options give none: the data-plane token of
// the service (`sextant token create --service S`), or an operator token.
const TokenEnv = "SEXTANT_TOKEN"

// tokenOf is the credential to send: the option's, else $SEXTANT_TOKEN.
func tokenOf(option string) string {
	if option != "" {
		return option
	}
	return os.Getenv(TokenEnv)
}

// authorize adds the credential to a request to the control plane.
func authorize(req *http.Request, token string) {
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
}
