package longpoll

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"time"

	"github.com/sextant-mesh/sextant/internal/bearer"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

// RandomToken makes an operator token for a control plane the tool starts.
func RandomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// IssueTokens writes a data-plane token of each service into the etcd at
// endpoint (under prefix), as the config-center issues them, and returns
// them in order.
func IssueTokens(endpoint, prefix string, services ...string) ([]string, error) {
	cli, err := etcdx.NewClient(etcdx.Config{Endpoints: endpoint})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	keys := api.Keys{Prefix: prefix}
	out := make([]string, len(services))
	for i, s := range services {
		record, token := authn.NewToken(authn.DataPlane(s, "loadtest"), 24*time.Hour, time.Now())
		b, _ := json.Marshal(record)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cli.Put(ctx, keys.Token(record.ID), string(b))
		cancel()
		if err != nil {
			return nil, err
		}
		out[i] = token
	}
	return out, nil
}

// WithToken is a copy of hc that sends token with every request.
func WithToken(hc *http.Client, token string) *http.Client {
	out := *hc
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	out.Transport = bearer.Transport{Token: token, Next: next}
	return &out
}
