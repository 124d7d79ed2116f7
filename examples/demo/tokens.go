package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/sextant-mesh/sextant/api"
)

// IssueTokens asks the config-center at configCenter (host:port), as the
// operator holding adminToken, for one data-plane token per service: what
// `sextant token create --service S` does.
func IssueTokens(ctx context.Context, configCenter, adminToken string, services ...string) (map[string]string, error) {
	tokens := map[string]string{}
	for _, s := range services {
		body, _ := json.Marshal(api.TokenRequest{Service: s, TTL: "24h"})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+configCenter+"/v1/tokens", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(api.AuthorizationHeader, api.BearerPrefix+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		var issued api.TokenIssued
		err = json.NewDecoder(resp.Body).Decode(&issued)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || err != nil || issued.Token == "" {
			return nil, fmt.Errorf("token of %s: %s", s, resp.Status)
		}
		tokens[s] = issued.Token
	}
	return tokens, nil
}
