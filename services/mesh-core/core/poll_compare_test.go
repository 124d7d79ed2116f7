package core_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/mesh-core/coretest"
)

// The poll port answers as the HTTP port does: the same table of polls,
// sent to both, gets the same statuses, versions, ETag and
// X-Sextant-Version fields, bodies and errors.
func TestPollPortAnswersAsTheHTTPPort(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	// Two slots: svc and other take them, so a wait on any other service is refused (429).
	mc := coretest.Start(t, etcd, testenv.Prefix(t), func(c *core.Config) {
		c.MaxServices = 2
		c.PollRateLimit = 1000 // the table runs on one kept-alive connection
	})
	register(t, mc, "svc", "10.0.0.1:9000", 30)
	register(t, mc, "svc", "10.0.0.2:9000", 30)
	register(t, mc, "other", "10.0.0.3:9000", 30)
	waitFor(t, mc, "svc", func(a answer) error {
		if len(a.Instances) != 2 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	waitFor(t, mc, "other", func(a answer) error {
		if len(a.Instances) != 1 {
			return fmt.Errorf("%d instances", len(a.Instances))
		}
		return nil
	})
	version := func(target string) string {
		r := call(t, "GET", "http://"+mc.Addr()+target, nil)
		var v struct{ Version int64 }
		if err := json.Unmarshal(r.body, &v); err != nil || r.status != 200 {
			t.Fatalf("%s: %d %s", target, r.status, r.body)
		}
		return fmt.Sprint(v.Version)
	}
	v := version("/v1/discovery/svc")
	vm := version("/v1/discovery?services=svc,other")
	vg := version("/v1/discovery/ghost")
	long := strings.Repeat("x", 254)
	many := strings.TrimSuffix(strings.Repeat("s,", 101), ",")

	for _, tc := range []struct {
		name, target, ifNoneMatch string
		status                    int
	}{
		{"no version", "/v1/discovery/svc", "", 200},
		{"another version", "/v1/discovery/svc?version=1&wait=100ms", "", 200},
		{"the version held", "/v1/discovery/svc?version=" + v + "&wait=100ms", "", 304},
		{"wait 0", "/v1/discovery/svc?version=" + v + "&wait=0", "", 304},
		{"wait in seconds", "/v1/discovery/svc?version=1&wait=5", "", 200},
		{"If-None-Match", "/v1/discovery/svc?wait=100ms", `"` + v + `"`, 304},
		{"weak If-None-Match", "/v1/discovery/svc?wait=100ms", `W/"` + v + `"`, 304},
		{"bare If-None-Match", "/v1/discovery/svc?wait=100ms", v, 304},
		{"If-None-Match of another", "/v1/discovery/svc?wait=100ms", `"1"`, 200},
		{"version wins over If-None-Match", "/v1/discovery/svc?version=1&wait=100ms", `"` + v + `"`, 200},
		{"unknown service", "/v1/discovery/ghost", "", 200},
		{"wait on an unknown service, no slot", "/v1/discovery/ghost?version=" + vg + "&wait=100ms", "", 429},
		{"version not a number", "/v1/discovery/svc?version=x", "", 400},
		{"wait not a duration", "/v1/discovery/svc?wait=soon", "", 400},
		{"wait too long", "/v1/discovery/svc?wait=2m", "", 400},
		{"negative wait", "/v1/discovery/svc?wait=-1s", "", 400},
		{"name with a space", "/v1/discovery/a%20b", "", 400},
		{"long name", "/v1/discovery/" + long, "", 400},
		{"several", "/v1/discovery?services=svc,other", "", 200},
		{"several, escaped", "/v1/discovery?services=svc%2Cother&version=1", "", 200},
		{"several, the version held", "/v1/discovery?services=svc,other&version=" + vm + "&wait=100ms", "", 304},
		{"several, If-None-Match", "/v1/discovery?services=svc,other&wait=100ms", `"` + vm + `"`, 304},
		{"several with an unknown one", "/v1/discovery?services=svc,ghost", "", 200},
		{"several, no services", "/v1/discovery", "", 400},
		{"several, empty list", "/v1/discovery?services=", "", 400},
		{"several, an empty name", "/v1/discovery?services=svc,,other", "", 400},
		{"several, too many", "/v1/discovery?services=" + many, "", 400},
		{"several, version not a number", "/v1/discovery?services=svc&version=x", "", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			get := func(addr string) (*http.Response, []byte) {
				req, _ := http.NewRequest("GET", "http://"+addr+tc.target, nil)
				if tc.ifNoneMatch != "" {
					req.Header.Set("If-None-Match", tc.ifNoneMatch)
				}
				resp, err := testenv.HTTP.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp, body
			}
			hr, hb := get(mc.Addr())
			pr, pb := get(mc.PollAddr())
			if hr.StatusCode != tc.status {
				t.Fatalf("the HTTP port answered %d %s, want %d", hr.StatusCode, hb, tc.status)
			}
			if pr.StatusCode != hr.StatusCode {
				t.Fatalf("poll port %d %s; HTTP port %d %s", pr.StatusCode, pb, hr.StatusCode, hb)
			}
			for _, f := range []string{"ETag", "X-Sextant-Version", "Content-Type"} {
				if pr.Header.Get(f) != hr.Header.Get(f) {
					t.Errorf("%s: poll port %q, HTTP port %q", f, pr.Header.Get(f), hr.Header.Get(f))
				}
			}
			if hr.StatusCode < 400 {
				if !bytes.Equal(pb, hb) {
					t.Errorf("bodies differ:\npoll port %s\nHTTP port %s", pb, hb)
				}
				return
			}
			var pe, he api.ErrorBody
			if err := json.Unmarshal(pb, &pe); err != nil || pe.Error == nil {
				t.Fatalf("poll port error %s", pb)
			}
			if err := json.Unmarshal(hb, &he); err != nil || he.Error == nil {
				t.Fatalf("HTTP port error %s", hb)
			}
			if *pe.Error != *he.Error {
				t.Errorf("errors differ: poll port %+v, HTTP port %+v", pe.Error, he.Error)
			}
		})
	}

	// A change releases the polls waiting on both ports with the same answer.
	type result struct {
		status int
		body   []byte
	}
	wait := func(addr, target string) <-chan result {
		ch := make(chan result, 1)
		go func() {
			r := call(t, "GET", "http://"+addr+target, nil)
			ch <- result{r.status, r.body}
		}()
		return ch
	}
	one := "/v1/discovery/svc?version=" + version("/v1/discovery/svc") + "&wait=30s"
	several := "/v1/discovery?services=svc,other&version=" + version("/v1/discovery?services=svc,other") + "&wait=30s"
	waits := []<-chan result{wait(mc.Addr(), one), wait(mc.PollAddr(), one), wait(mc.Addr(), several), wait(mc.PollAddr(), several)}
	testenv.WaitMetric(t, mc.Addr(), "sextant_meshcore_pollers_waiting", 4)
	register(t, mc, "svc", "10.0.0.4:9000", 30)
	var got []result
	for _, ch := range waits {
		select {
		case r := <-ch:
			got = append(got, r)
		case <-time.After(20 * time.Second):
			t.Fatal("a waiting poll was not released by the change")
		}
	}
	for i := 0; i < 4; i += 2 {
		if got[i].status != 200 || got[i+1].status != 200 || !bytes.Equal(got[i].body, got[i+1].body) {
			t.Errorf("released polls differ:\nHTTP port %d %s\npoll port %d %s", got[i].status, got[i].body, got[i+1].status, got[i+1].body)
		}
	}
}
