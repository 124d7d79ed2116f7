package center_test

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
)

// ETags are quoted strings (RFC 9110): the revision of a config, the
// version of a watch answer. A write takes the ETag back as If-Match as it
// came, or bare as the config-center sent it before; a weak tag never
// matches. A watch takes the ETag it holds as If-None-Match instead of
// ?version=, quoted or bare.
func TestETagsAreQuoted(t *testing.T) {
	_, _, api := setup(t, nil)
	path := "/v1/configs/limit/comment-svc"
	put := api.do("PUT", path, `{"qps_limit": 100}`)
	if put.status != 200 {
		t.Fatalf("PUT: %s", put)
	}
	rev1 := mustUnquote(t, put.header.Get("ETag"))
	if _, err := strconv.ParseInt(rev1, 10, 64); err != nil {
		t.Fatalf("ETag %s does not hold a revision", put.header.Get("ETag"))
	}
	get := api.do("GET", path, "")
	if get.status != 200 || get.header.Get("ETag") != put.header.Get("ETag") {
		t.Fatalf("GET: %s, ETag %q, want %s", get, get.header.Get("ETag"), put.header.Get("ETag"))
	}

	// If-Match: the ETag as it came.
	put2 := api.do("PUT", path, `{"qps_limit": 200}`, "If-Match", get.header.Get("ETag"))
	if put2.status != 200 {
		t.Fatalf("PUT with If-Match %s: %s", get.header.Get("ETag"), put2)
	}
	// Bare, as older clients send it; weak never matches; stale is 412.
	put3 := api.do("PUT", path, `{"qps_limit": 300}`, "If-Match", mustUnquote(t, put2.header.Get("ETag")))
	if put3.status != 200 {
		t.Fatalf("PUT with a bare If-Match: %s", put3)
	}
	if r := api.do("PUT", path, `{"qps_limit": 400}`, "If-Match", "W/"+put3.header.Get("ETag")); r.status != 400 {
		t.Fatalf("PUT with a weak If-Match: %s", r)
	}
	if r := api.do("PUT", path, `{"qps_limit": 400}`, "If-Match", put2.header.Get("ETag")); r.status != 412 {
		t.Fatalf("PUT with a stale If-Match: %s", r)
	}

	// The watch: its answer's ETag is its version, quoted, on a 200 and a 304.
	// The watch view follows etcd a moment behind the writes: wait for the last.
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, a := api.watch("comment-svc", "10.0.0.1:80", 0, 0, "0s"); len(a.Configs) != 1 || !strings.Contains(string(a.Configs[0].Document), "300") {
			return fmt.Errorf("the watch does not show the last write yet: %+v", a.Configs)
		}
		return nil
	})
	q := url.Values{"service": {"comment-svc"}, "instance": {"10.0.0.1:80"}, "wait": {"100ms"}}.Encode()
	first := api.do("GET", "/v1/watch?"+q, "")
	_, a := api.watch("comment-svc", "10.0.0.1:80", 0, 0, "0s")
	etag := strconv.Quote(fmt.Sprint(a.Version))
	if first.status != 200 || first.header.Get("ETag") != etag {
		t.Fatalf("watch: %s, ETag %q, want %s", first, first.header.Get("ETag"), etag)
	}
	for _, inm := range []string{etag, fmt.Sprint(a.Version), "W/" + etag} {
		r := api.do("GET", "/v1/watch?"+q, "", "If-None-Match", inm)
		if r.status != 304 || r.header.Get("ETag") != etag {
			t.Fatalf("watch with If-None-Match %s: %s, ETag %q, want 304 with %s", inm, r, r.header.Get("ETag"), etag)
		}
	}
	if r := api.do("GET", "/v1/watch?"+q, "", "If-None-Match", `"1"`); r.status != 200 || r.header.Get("ETag") != etag {
		t.Fatalf("watch with another version's ETag: %s, ETag %q", r, r.header.Get("ETag"))
	}
}

func mustUnquote(t *testing.T, s string) string {
	t.Helper()
	u, err := strconv.Unquote(s)
	if err != nil {
		t.Fatalf("ETag %s is not a quoted string: %v", s, err)
	}
	return u
}
