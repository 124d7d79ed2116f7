package httphead_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sextant-mesh/sextant/internal/httphead"
)

const limit = 8 << 10

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     httphead.Head
	}{
		{"poll", "GET /v1/discovery/svc?version=5&wait=30s HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"5\"\r\n\r\n",
			httphead.Head{Method: "GET", Target: "/v1/discovery/svc?version=5&wait=30s", Path: "/v1/discovery/svc",
				RawQuery: "version=5&wait=30s", Minor: 1, KeepAlive: true, IfNoneMatch: `"5"`, Host: "x"}},
		{"close", "GET / HTTP/1.1\r\nConnection: Keep-Alive, close\r\n\r\n",
			httphead.Head{Method: "GET", Target: "/", Path: "/", Minor: 1}},
		{"HTTP/1.0", "GET /a HTTP/1.0\r\n\r\n", httphead.Head{Method: "GET", Target: "/a", Path: "/a"}},
		{"HTTP/1.0 keep-alive", "GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
			httphead.Head{Method: "GET", Target: "/a", Path: "/a", KeepAlive: true}},
		{"HTTP/1.2 reads as 1.1", "GET /a HTTP/1.2\r\n\r\n", httphead.Head{Method: "GET", Target: "/a", Path: "/a", Minor: 1, KeepAlive: true}},
		{"escapes", "GET /v1/discovery/a%20b%3a?x HTTP/1.1\r\n\r\n",
			httphead.Head{Method: "GET", Target: "/v1/discovery/a%20b%3a?x", Path: "/v1/discovery/a b:", RawQuery: "x", Minor: 1, KeepAlive: true}},
		{"first If-None-Match", "GET / HTTP/1.1\r\nIf-None-Match:  W/\"1\" \r\nIf-None-Match: \"2\"\r\n\r\n",
			httphead.Head{Method: "GET", Target: "/", Path: "/", Minor: 1, KeepAlive: true, IfNoneMatch: `W/"1"`}},
		{"zero length body", "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
			httphead.Head{Method: "GET", Target: "/", Path: "/", Minor: 1, KeepAlive: true}},
		{"empty lines first", "\r\n\r\nGET / HTTP/1.1\r\n\r\n", httphead.Head{Method: "GET", Target: "/", Path: "/", Minor: 1, KeepAlive: true}},
		{"other method", "DELETE /x HTTP/1.1\r\n\r\n", httphead.Head{Method: "DELETE", Target: "/x", Path: "/x", Minor: 1, KeepAlive: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in + "GET /next"
			h, n, err := httphead.Parse([]byte(in), limit)
			if err != nil {
				t.Fatal(err)
			}
			if h != tc.want || n != len(tc.in) {
				t.Fatalf("got %+v (%d bytes), want %+v (%d bytes)", h, n, tc.want, len(tc.in))
			}
		})
	}
}

// Bad heads are refused with a 4xx and a FieldError naming the problem.
func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		status   int
		code     string
		field    string
	}{
		{"garbage", "hello\r\n\r\n", 400, httphead.CodeMalformedRequest, ""},
		{"TLS handshake", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 \r\n", 400, httphead.CodeMalformedRequest, "method"},
		{"no version", "GET /a\r\n\r\n", 400, httphead.CodeMalformedRequest, ""},
		{"HTTP/2", "GET /a HTTP/2.0\r\n\r\n", 400, httphead.CodeVersion, "version"},
		{"lower-case version", "GET /a http/1.1\r\n\r\n", 400, httphead.CodeMalformedRequest, ""},
		{"two spaces", "GET  /a HTTP/1.1\r\n\r\n", 400, httphead.CodeMalformedRequest, ""},
		{"method not a token", "G(T /a HTTP/1.1\r\n\r\n", 400, httphead.CodeMalformedRequest, "method"},
		{"absolute form", "GET http://x/a HTTP/1.1\r\n\r\n", 400, httphead.CodeMalformedRequest, "target"},
		{"asterisk form", "OPTIONS * HTTP/1.1\r\n\r\n", 400, httphead.CodeMalformedRequest, "target"},
		{"NUL in target", "GET /a\x00b HTTP/1.1\r\n\r\n", 400, httphead.CodeMalformedRequest, "target"},
		{"fragment", "GET /a#b HTTP/1.1\r\n\r\n", 400, httphead.CodeMalformedRequest, "target"},
		{"bad escape", "GET /a%zz HTTP/1.1\r\n\r\n", 400, httphead.CodeMalformedRequest, "target"},
		{"short escape", "GET /a% HTTP/1.1\r\n\r\n", 400, httphead.CodeMalformedRequest, "target"},
		{"bare LF", "GET /a HTTP/1.1\nHost: x\n\n", 400, httphead.CodeMalformedRequest, ""},
		{"bare LF in a field", "GET /a HTTP/1.1\r\nHost: x\nY: z\r\n\r\n", 400, httphead.CodeMalformedRequest, "Host"},
		{"no colon", "GET /a HTTP/1.1\r\nHost x\r\n\r\n", 400, httphead.CodeMalformedRequest, ""},
		{"space before colon", "GET /a HTTP/1.1\r\nHost : x\r\n\r\n", 400, httphead.CodeMalformedRequest, ""},
		{"empty name", "GET /a HTTP/1.1\r\n: x\r\n\r\n", 400, httphead.CodeMalformedRequest, ""},
		{"obs-fold", "GET /a HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, httphead.CodeMalformedRequest, ""},
		{"control byte", "GET /a HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400, httphead.CodeMalformedRequest, "X"},
		{"two hosts", "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, httphead.CodeMalformedRequest, "Host"},
		{"body", "GET /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, httphead.CodeBodyNotAllowed, "Content-Length"},
		{"bad length", "GET /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, httphead.CodeMalformedRequest, "Content-Length"},
		{"chunked", "GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, httphead.CodeBodyNotAllowed, "Transfer-Encoding"},
		{"too long", "GET /a HTTP/1.1\r\nX: " + strings.Repeat("a", limit) + "\r\n\r\n", 431, httphead.CodeHeaderTooLarge, ""},
		{"too long, unfinished", "GET /a HTTP/1.1\r\nX: " + strings.Repeat("a", limit), 431, httphead.CodeHeaderTooLarge, ""},
		{"endless empty lines", strings.Repeat("\r\n", limit), 431, httphead.CodeHeaderTooLarge, ""},
		// A bad request line is refused before the head is complete.
		{"unfinished, bad line", "FOO bar baz\r\nHost:", 400, httphead.CodeMalformedRequest, ""},
		{"unfinished, bare LF", "GET / HTTP/1.1\nHo", 400, httphead.CodeMalformedRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, n, err := httphead.Parse([]byte(tc.in), limit)
			if err == nil {
				t.Fatalf("accepted (%d bytes)", n)
			}
			if err.Status != tc.status || err.Err.Code != tc.code || err.Err.Field != tc.field || err.Err.Message == "" {
				t.Fatalf("got %d %+v, want %d %s on %q", err.Status, err.Err, tc.status, tc.code, tc.field)
			}
		})
	}
}

// An unfinished head asks for more bytes, and is read whole once they come.
func TestParseUnfinished(t *testing.T) {
	full := "GET /v1/discovery/svc HTTP/1.1\r\nHost: x\r\n\r\n"
	for i := range len(full) {
		if _, n, err := httphead.Parse([]byte(full[:i]), limit); n != 0 || err != nil {
			t.Fatalf("%q: %d bytes, %v; want 0 and no error", full[:i], n, err)
		}
	}
	if _, n, err := httphead.Parse([]byte(full), limit); n != len(full) || err != nil {
		t.Fatalf("whole: %d %v", n, err)
	}
}

func TestQuery(t *testing.T) {
	for _, tc := range []struct {
		raw, key, want string
		ok, err        bool
	}{
		{"version=5&wait=30s", "wait", "30s", true, false},
		{"services=a,b%2Cc&x", "services", "a,b,c", true, false},
		{"a+b=c+d", "a b", "c d", true, false},
		{"x=1&x=2", "x", "1", true, false},
		{"x", "x", "", true, false},
		{"y=1", "x", "", false, false},
		{"x=%zz", "x", "", false, true},
		{"", "x", "", false, false},
	} {
		v, ok, err := httphead.Query(tc.raw, tc.key)
		if v != tc.want || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("Query(%q, %q) = %q %v %v", tc.raw, tc.key, v, ok, err)
		}
	}
}

// Whatever the bytes, Parse answers without panicking: a head within the
// bytes and the limit, or a 4xx with a code and message, or a request for more.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"GET /v1/discovery/svc?version=5&wait=30s HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"5\"\r\n\r\n",
		"GET /v1/discovery?services=a,b%2Cc&version=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET",
		"\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: x\r\n\r\n",
		"GET /a%2 HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\n\n",
		"POST /v1/instances HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
	} {
		f.Add([]byte(seed), 128)
	}
	f.Fuzz(func(t *testing.T, b []byte, limit int) {
		limit = 1 + abs(limit)%(2*len(b)+16)
		h, n, err := httphead.Parse(b, limit)
		switch {
		case err != nil:
			if n != 0 || err.Status/100 != 4 || err.Err == nil || err.Err.Code == "" || err.Err.Message == "" {
				t.Fatalf("refusal %d %+v with %d bytes", err.Status, err.Err, n)
			}
		case n == 0:
			if len(b) >= limit && !bytes.Contains(b, []byte("\r\n\r\n")) {
				t.Fatalf("asks for more beyond the limit (%d bytes, limit %d)", len(b), limit)
			}
		default:
			if n > len(b) || n > limit || !bytes.HasSuffix(b[:n], []byte("\r\n\r\n")) {
				t.Fatalf("took %d of %d bytes (limit %d)", n, len(b), limit)
			}
			if h.Method == "" || !strings.HasPrefix(h.Target, "/") || !strings.HasPrefix(h.Path, "/") || h.Minor > 1 {
				t.Fatalf("head %+v", h)
			}
			if _, _, err := httphead.Query(h.RawQuery, "version"); err != nil {
				_ = err // a bad escape in the query is the caller's 400
			}
		}
	})
}

func abs(n int) int {
	if n < 0 {
		if n = -n; n < 0 {
			return 0
		}
	}
	return n
}
