package core_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// A discovery answer's ETag is its version as a quoted string (RFC 9110),
// on a 200 and on a 304. A poll may send it back as If-None-Match instead
// of ?version=: quoted, weak, or bare as an entity tag was never sent but
// a version is.
func TestDiscoveryETags(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	mc := coretest.Start(t, etcd, testenv.Prefix(t), nil)
	register(t, mc, "svc", "10.0.0.1:9000", 30)
	a := waitFor(t, mc, "svc", func(a answer) error {
		if len(a.Instances) != 1 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	etag := strconv.Quote(fmt.Sprint(a.Version))
	get := func(url, ifNoneMatch string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if ifNoneMatch != "" {
			req.Header.Set("If-None-Match", ifNoneMatch)
		}
		resp, err := testenv.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	one := fmt.Sprintf("http://%s/v1/discovery/svc?wait=100ms", mc.Addr())
	if r := get(one, ""); r.StatusCode != 200 || r.Header.Get("ETag") != etag {
		t.Fatalf("answer: %d, ETag %q, want %s", r.StatusCode, r.Header.Get("ETag"), etag)
	}
	for _, inm := range []string{etag, "W/" + etag, fmt.Sprint(a.Version)} {
		if r := get(one, inm); r.StatusCode != 304 || r.Header.Get("ETag") != etag {
			t.Fatalf("If-None-Match %s: %d, ETag %q, want 304 with %s", inm, r.StatusCode, r.Header.Get("ETag"), etag)
		}
	}
	if r := get(one, `"1"`); r.StatusCode != 200 || r.Header.Get("ETag") != etag {
		t.Fatalf("If-None-Match of another version: %d, ETag %q", r.StatusCode, r.Header.Get("ETag"))
	}

	// Several services: the ETag is the combined version.
	many := fmt.Sprintf("http://%s/v1/discovery?services=svc,other&wait=100ms", mc.Addr())
	resp, err := testenv.HTTP.Get(many)
	if err != nil {
		t.Fatal(err)
	}
	var all struct{ Version int64 }
	_ = json.NewDecoder(resp.Body).Decode(&all)
	resp.Body.Close()
	manyTag := strconv.Quote(fmt.Sprint(all.Version))
	if resp.Header.Get("ETag") != manyTag {
		t.Fatalf("several services: ETag %q, want %s", resp.Header.Get("ETag"), manyTag)
	}
	if r := get(many, manyTag); r.StatusCode != 304 || r.Header.Get("ETag") != manyTag {
		t.Fatalf("several services with If-None-Match %s: %d, ETag %q", manyTag, r.StatusCode, r.Header.Get("ETag"))
	}
}
