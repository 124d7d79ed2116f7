package center_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
)

// GET /v1/configs without a service lists every config (what an export
// reads); PUT ?validate=true checks a document without writing it (what an
// editor asks before saving).
func TestListAllAndValidate(t *testing.T) {
	_, _, cc := setup(t, nil)
	for _, p := range []string{"/v1/configs/limit/shop", "/v1/configs/rpc_timeout/cart/shop"} {
		doc := `{"qps_limit": 10}`
		if p != "/v1/configs/limit/shop" {
			doc = `{"*": {"rpc_timeout_ms": 100}}`
		}
		if r := cc.do("PUT", p, doc); r.status != 200 {
			t.Fatalf("%s: %s", p, r)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		var got struct {
			Configs []api.Entry `json:"configs"`
		}
		r := cc.do("GET", "/v1/configs", "")
		if r.status != 200 || json.Unmarshal(r.body, &got) != nil {
			return fmt.Errorf("list: %s", r)
		}
		if len(got.Configs) != 2 || got.Configs[0].Kind != "limit" || got.Configs[1].Scope != "cart/shop" {
			return errors.New("list: " + string(r.body))
		}
		return nil
	})

	if r := cc.do("PUT", "/v1/configs/limit/other?validate=true", `{"qps_limit": 5}`); r.status != 200 {
		t.Errorf("a valid document: %s", r)
	}
	r := cc.do("PUT", "/v1/configs/limit/other?validate=true", `{"qps_limit": -5}`)
	var e struct {
		Error api.FieldError `json:"error"`
	}
	if r.status != 400 || json.Unmarshal(r.body, &e) != nil || e.Error.Field != "qps_limit" {
		t.Errorf("an invalid document: %s, want 400 naming qps_limit", r)
	}
	if r := cc.do("GET", "/v1/configs/limit/other", ""); r.status != 404 {
		t.Errorf("validation wrote the config: %s", r)
	}
}
