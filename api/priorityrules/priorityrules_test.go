package priorityrules_test

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/api/priorityrules"
)

const example = `{"default": 50, "rules": [
	{"name": "feed", "priority": 100, "match": {"http": {"method": "GET", "path": "/api/feed/*"}}},
	{"name": "user-posts", "priority": 90, "match": {"http": {"path": "/api/users/:id/posts"}}},
	{"name": "comments-write", "priority": 20, "match": {"method": "PostComment", "headers": {"x-client": "batch"}}},
	{"name": "comments", "priority": 80, "match": {"method": "PostComment"}},
	{"name": "vip", "priority": 127, "match": {"headers": {"x-tier": "vip", "x-region": "eu"}}},
	{"name": "health", "priority": 0, "match": {"http": {"method": "*", "path": "/healthz"}}}]}`

func headers(kv ...string) func(string) string {
	return func(k string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1]
			}
		}
		return ""
	}
}

func mustParse(t testing.TB, doc string) *priorityrules.Rules {
	t.Helper()
	r, fe := priorityrules.Parse([]byte(doc))
	if fe != nil {
		t.Fatalf("parse %s: %v", doc, fe)
	}
	return r
}

func TestFirstMatchingRuleWins(t *testing.T) {
	r := mustParse(t, example)
	for _, tc := range []struct {
		name string
		f    priorityrules.Features
		rule string
		want int32
	}{
		{"feed GET", priorityrules.Features{HTTPMethod: "GET", Path: "/api/feed/home"}, "feed", 100},
		{"feed deep", priorityrules.Features{HTTPMethod: "GET", Path: "/api/feed/a/b/c"}, "feed", 100},
		{"feed with trailing slash", priorityrules.Features{HTTPMethod: "GET", Path: "/api/feed/"}, "feed", 100},
		{"feed itself is not below feed/", priorityrules.Features{HTTPMethod: "GET", Path: "/api/feed"}, "", 50},
		{"feed POST", priorityrules.Features{HTTPMethod: "POST", Path: "/api/feed/home"}, "", 50},
		{"feed HEAD is not GET", priorityrules.Features{HTTPMethod: "HEAD", Path: "/api/feed/home"}, "", 50},
		{"path is case-sensitive", priorityrules.Features{HTTPMethod: "GET", Path: "/API/feed/home"}, "", 50},
		{"param", priorityrules.Features{HTTPMethod: "POST", Path: "/api/users/42/posts"}, "user-posts", 90},
		{"param is one segment", priorityrules.Features{HTTPMethod: "GET", Path: "/api/users/4/2/posts"}, "", 50},
		{"param is not empty", priorityrules.Features{HTTPMethod: "GET", Path: "/api/users//posts"}, "", 50},
		{"param pattern is exact at the end", priorityrules.Features{HTTPMethod: "GET", Path: "/api/users/42/posts/1"}, "", 50},
		// Document order: comments-write comes before comments.
		{"batch comment", priorityrules.Features{Method: "PostComment", Header: headers("x-client", "batch")}, "comments-write", 20},
		{"other comment", priorityrules.Features{Method: "PostComment", Header: headers("x-client", "app")}, "comments", 80},
		{"comment without headers", priorityrules.Features{Method: "PostComment"}, "comments", 80},
		{"header value is exact", priorityrules.Features{Method: "PostComment", Header: headers("x-client", "Batch")}, "comments", 80},
		{"rpc method is exact", priorityrules.Features{Method: "postComment"}, "", 50},
		{"all headers must match", priorityrules.Features{Method: "Get", Header: headers("x-tier", "vip")}, "", 50},
		{"vip", priorityrules.Features{Method: "Get", Header: headers("x-tier", "vip", "x-region", "eu")}, "vip", 127},
		{"vip over HTTP", priorityrules.Features{HTTPMethod: "DELETE", Path: "/x", Header: headers("x-tier", "vip", "x-region", "eu")}, "vip", 127},
		{"any method", priorityrules.Features{HTTPMethod: "OPTIONS", Path: "/healthz"}, "health", 0},
		{"http rule does not match rpc", priorityrules.Features{Method: "healthz"}, "", 50},
		{"nothing", priorityrules.Features{}, "", 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rule, p := r.Match(tc.f)
			if rule != tc.rule || p != tc.want {
				t.Fatalf("matched %q with %d, want %q with %d", rule, p, tc.rule, tc.want)
			}
			if got := r.Priority(tc.f); got != tc.want {
				t.Fatalf("Priority %d, want %d", got, tc.want)
			}
		})
	}
	if r.Len() != 6 || r.Default() != 50 {
		t.Fatalf("%d rules, default %d", r.Len(), r.Default())
	}
}

func TestDefaults(t *testing.T) {
	for doc, want := range map[string]int32{
		`{}`:                              64,
		`{"default": null}`:               64,
		`{"rules": []}`:                   64,
		`{"default": 0}`:                  0,
		`{"default": 127, "rules": null}`: 127,
		` {"default": 3}`:                 3,
		`{"default": 10, "rules": [{"name": "a", "priority": 0, "match": {"method": "M"}}]}`: 10,
	} {
		if got := mustParse(t, doc).Priority(priorityrules.Features{HTTPMethod: "GET", Path: "/"}); got != want {
			t.Errorf("%s: %d, want %d", doc, got, want)
		}
	}
	var none *priorityrules.Rules
	if rule, p := none.Match(priorityrules.Features{Method: "M"}); rule != "" || p != priorityrules.DefaultPriority || none.Len() != 0 || none.Default() != 64 {
		t.Fatalf("nil rules: %q %d", rule, p)
	}
}

func TestPathPatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"/", []string{"/"}, []string{"", "/a", "//"}},
		{"/*", []string{"/", "/a", "/a/b", "//"}, []string{"", "a"}},
		{"/a/b", []string{"/a/b"}, []string{"/a/b/", "/a", "/a/bc", "/a/b/c", "a/b", "/A/b"}},
		{"/a/*", []string{"/a/", "/a/b", "/a/b/c", "/a//"}, []string{"/a", "/ab", "/ab/c", "/b/a/"}},
		{"/:x", []string{"/a", "/abc"}, []string{"/", "/a/", "/a/b"}},
		{"/:x/*", []string{"/a/", "/a/b/c"}, []string{"/a", "/", "//b"}},
		{"/u/:id/p/:n", []string{"/u/1/p/2", "/u/x:y/p/z"}, []string{"/u/1/p", "/u/1/p/2/", "/u//p/2", "/v/1/p/2"}},
		{"/v1/things:batchGet", []string{"/v1/things:batchGet"}, []string{"/v1/things"}},
		{"/café/ü", []string{"/café/ü"}, []string{"/cafe/u"}},
	} {
		doc := fmt.Sprintf(`{"rules": [{"name": "r", "priority": 1, "match": {"http": {"path": %q}}}]}`, tc.pattern)
		r := mustParse(t, doc)
		for _, p := range tc.match {
			if got := r.Priority(priorityrules.Features{Path: p}); got != 1 {
				t.Errorf("%s does not match %q", tc.pattern, p)
			}
		}
		for _, p := range tc.miss {
			if got := r.Priority(priorityrules.Features{Path: p}); got != 64 {
				t.Errorf("%s matches %q", tc.pattern, p)
			}
		}
	}
}

// reference is the pattern syntax as a regular expression.
func reference(pattern string) *regexp.Regexp {
	if pattern == "/" {
		return regexp.MustCompile(`^/$`)
	}
	var b strings.Builder
	b.WriteString("^")
	for _, s := range strings.Split(pattern[1:], "/") {
		switch {
		case s == "*":
			b.WriteString("/.*")
		case strings.HasPrefix(s, ":"):
			b.WriteString("/[^/]+")
		default:
			b.WriteString("/" + regexp.QuoteMeta(s))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// Random patterns and paths over a small alphabet agree with the reference.
func TestPathPatternsAgreeWithARegexp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seg := func() string { return []string{"a", "b", "ab", ""}[rng.IntN(4)] }
	for i := 0; i < 3000; i++ {
		var pb strings.Builder
		n := 1 + rng.IntN(3)
		for j := 0; j < n; j++ {
			pb.WriteString("/")
			switch k := rng.IntN(5); {
			case k == 0:
				pb.WriteString(":p")
			case k == 1 && j == n-1:
				pb.WriteString("*")
			default:
				s := seg()
				if s == "" {
					s = "a"
				}
				pb.WriteString(s)
			}
		}
		pattern := pb.String()
		r := mustParse(t, fmt.Sprintf(`{"rules": [{"name": "r", "priority": 1, "match": {"http": {"path": %q}}}]}`, pattern))
		re := reference(pattern)
		for k := 0; k < 20; k++ {
			var path strings.Builder
			for m := rng.IntN(5); m > 0; m-- {
				path.WriteString("/" + seg())
			}
			p := path.String()
			if got, want := r.Priority(priorityrules.Features{Path: p}) == 1, re.MatchString(p); got != want {
				t.Fatalf("pattern %s path %q: match %v, the reference says %v", pattern, p, got, want)
			}
		}
	}
}

func TestInvalidDocuments(t *testing.T) {
	rule := func(match string) string {
		return `{"rules": [{"name": "ok", "priority": 1, "match": {"method": "M"}}, {"name": "r", "priority": 1, "match": ` + match + `}]}`
	}
	for _, tc := range []struct {
		name, doc, code, field string
	}{
		{"malformed", `{"rules": [`, api.CodeMalformedJSON, ""},
		{"not an object", `[1]`, api.CodeInvalidType, ""},
		{"null", `null`, api.CodeInvalidType, ""},
		{"empty", ``, api.CodeInvalidType, ""},
		{"unknown top field", `{"defualt": 3}`, api.CodeUnknownField, "defualt"},
		{"unknown rule field", `{"rules": [{"name": "r", "priority": 1, "match": {"method": "M"}, "mode": "enforce"}]}`, api.CodeUnknownField, "rules[0].mode"},
		{"unknown match field", rule(`{"caller": "x"}`), api.CodeUnknownField, "rules[1].match.caller"},
		{"unknown http field", rule(`{"http": {"host": "x"}}`), api.CodeUnknownField, "rules[1].match.http.host"},
		{"priority type", `{"rules": [{"name": "r", "priority": "high", "match": {"method": "M"}}]}`, api.CodeInvalidType, "rules[0].priority"},
		{"priority fraction", `{"rules": [{"name": "r", "priority": 1.5, "match": {"method": "M"}}]}`, api.CodeInvalidType, "rules[0].priority"},
		{"priority too high", `{"rules": [{"name": "r", "priority": 128, "match": {"method": "M"}}]}`, api.CodeOutOfRange, "rules[0].priority"},
		{"priority negative", `{"rules": [{"name": "r", "priority": -1, "match": {"method": "M"}}]}`, api.CodeOutOfRange, "rules[0].priority"},
		{"priority huge", `{"rules": [{"name": "r", "priority": 99999999999, "match": {"method": "M"}}]}`, api.CodeOutOfRange, "rules[0].priority"},
		{"priority missing", `{"rules": [{"name": "r", "match": {"method": "M"}}]}`, api.CodeMissingField, "rules[0].priority"},
		{"default too high", `{"default": 200}`, api.CodeOutOfRange, "default"},
		{"default negative", `{"default": -3}`, api.CodeOutOfRange, "default"},
		{"name missing", `{"rules": [{"priority": 1, "match": {"method": "M"}}]}`, api.CodeMissingField, "rules[0].name"},
		{"name with space", `{"rules": [{"name": "my rule", "priority": 1, "match": {"method": "M"}}]}`, api.CodeInvalidValue, "rules[0].name"},
		{"duplicate names", `{"rules": [{"name": "r", "priority": 1, "match": {"method": "M"}}, {"name": "r", "priority": 2, "match": {"method": "N"}}]}`, api.CodeInvalidValue, "rules[1].name"},
		{"empty match", rule(`{}`), api.CodeMissingField, "rules[1].match"},
		{"no match", `{"rules": [{"name": "r", "priority": 1}]}`, api.CodeMissingField, "rules[0].match"},
		{"empty http", rule(`{"http": {}}`), api.CodeMissingField, "rules[1].match.http"},
		{"any http method only", rule(`{"http": {"method": "*"}}`), api.CodeMissingField, "rules[1].match.http"},
		{"empty headers", rule(`{"headers": {}}`), api.CodeMissingField, "rules[1].match"},
		{"lower-case http method", rule(`{"http": {"method": "get"}}`), api.CodeInvalidValue, "rules[1].match.http.method"},
		{"http method with space", rule(`{"http": {"method": "GET POST"}}`), api.CodeInvalidValue, "rules[1].match.http.method"},
		{"http method list", rule(`{"http": {"method": "GET,POST"}}`), api.CodeInvalidValue, "rules[1].match.http.method"},
		{"http method star inside", rule(`{"http": {"method": "G*"}}`), api.CodeInvalidValue, "rules[1].match.http.method"},
		{"path without slash", rule(`{"http": {"path": "api/feed"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path trailing slash", rule(`{"http": {"path": "/api/feed/"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path empty segment", rule(`{"http": {"path": "/api//feed"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path double star", rule(`{"http": {"path": "/api/**"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path star in the middle", rule(`{"http": {"path": "/api/*/feed"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path star in a segment", rule(`{"http": {"path": "/api/feed*"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path param without name", rule(`{"http": {"path": "/api/:/x"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path param bad name", rule(`{"http": {"path": "/api/:a-b"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path with query", rule(`{"http": {"path": "/api/feed?x=1"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path with space", rule(`{"http": {"path": "/api/my feed"}}`), api.CodeInvalidValue, "rules[1].match.http.path"},
		{"path too long", rule(`{"http": {"path": "/` + strings.Repeat("a", 1024) + `"}}`), api.CodeOutOfRange, "rules[1].match.http.path"},
		{"rpc method with dash", rule(`{"method": "Post-Comment"}`), api.CodeInvalidValue, "rules[1].match.method"},
		{"rpc method starting with a digit", rule(`{"method": "1Post"}`), api.CodeInvalidValue, "rules[1].match.method"},
		{"rpc method star", rule(`{"method": "*"}`), api.CodeInvalidValue, "rules[1].match.method"},
		{"upper-case header", rule(`{"headers": {"X-Client": "batch"}}`), api.CodeInvalidValue, "rules[1].match.headers.X-Client"},
		{"header with space", rule(`{"headers": {"x client": "batch"}}`), api.CodeInvalidValue, "rules[1].match.headers.x client"},
		{"header without value", rule(`{"headers": {"x-client": ""}}`), api.CodeMissingField, "rules[1].match.headers.x-client"},
		{"header value type", rule(`{"headers": {"x-client": 1}}`), api.CodeInvalidType, "rules[1].match.headers.x-client"},
		{"first bad header by name", rule(`{"headers": {"z-ok": "", "a-ok": ""}}`), api.CodeMissingField, "rules[1].match.headers.a-ok"},
		{"rules not an array", `{"rules": {}}`, api.CodeInvalidType, "rules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := priorityrules.Validate([]byte(tc.doc))
			if fe == nil || fe.Code != tc.code || fe.Field != tc.field {
				t.Fatalf("got %v, want %s on %q", fe, tc.code, tc.field)
			}
			if d, fe2 := priorityrules.Decode([]byte(tc.doc)); d != nil || fe2 == nil {
				t.Fatalf("Decode gave %+v, %v", d, fe2)
			}
			if r, fe2 := priorityrules.Parse([]byte(tc.doc)); r != nil || fe2 == nil {
				t.Fatalf("Parse gave %+v, %v", r, fe2)
			}
		})
	}
}

func TestTooManyRules(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"rules": [`)
	for i := 0; i <= priorityrules.MaxRules; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"name": "r%d", "priority": 1, "match": {"method": "M"}}`, i)
	}
	b.WriteString("]}")
	if fe := priorityrules.Validate([]byte(b.String())); fe == nil || fe.Code != api.CodeTooMany || fe.Field != "rules" {
		t.Fatalf("%d rules: %v", priorityrules.MaxRules+1, fe)
	}
}

func TestCompileValidatesAGoDocument(t *testing.T) {
	p := func(v int32) *int32 { return &v }
	good := &priorityrules.Document{Default: p(10), Rules: []priorityrules.Rule{
		{Name: "a", Priority: p(100), Match: priorityrules.Match{HTTP: &priorityrules.HTTPMatch{Method: "GET", Path: "/a/*"}}},
	}}
	r, err := priorityrules.Compile(good)
	if err != nil || r.Priority(priorityrules.Features{HTTPMethod: "GET", Path: "/a/b"}) != 100 || r.Default() != 10 {
		t.Fatalf("compile: %v %+v", err, r)
	}
	if fe := good.Validate(); fe != nil {
		t.Fatal(fe)
	}
	bad := &priorityrules.Document{Rules: []priorityrules.Rule{
		{Name: "a", Priority: p(1), Match: priorityrules.Match{Method: "M"}},
		{Name: "b", Priority: p(1), Match: priorityrules.Match{HTTP: &priorityrules.HTTPMatch{Path: "/a/**"}}},
	}}
	r, err = priorityrules.Compile(bad)
	fe, ok := err.(*api.FieldError)
	if r != nil || !ok || fe.Field != "rules[1].match.http.path" {
		t.Fatalf("compile a bad document: %v %v", r, err)
	}
	if _, err := priorityrules.Compile(nil); err == nil {
		t.Fatal("compiled nil")
	}
}

// The decoded document keeps what was written: a round trip through Decode
// gives the same rules.
func TestDecodeKeepsTheDocument(t *testing.T) {
	d, fe := priorityrules.Decode([]byte(example))
	if fe != nil {
		t.Fatal(fe)
	}
	if *d.Default != 50 || len(d.Rules) != 6 || d.Rules[0].Match.HTTP.Path != "/api/feed/*" ||
		d.Rules[2].Match.Headers["x-client"] != "batch" || *d.Rules[5].Priority != 0 {
		t.Fatalf("decoded %+v", d)
	}
}

func TestPriorityDoesNotAllocate(t *testing.T) {
	r := mustParse(t, example)
	get := headers("x-client", "batch", "x-tier", "vip", "x-region", "us")
	for _, f := range benchFeatures(get) {
		if n := testing.AllocsPerRun(100, func() { r.Priority(f) }); n != 0 {
			t.Errorf("%+v: %v allocations", f, n)
		}
	}
}

func benchFeatures(get func(string) string) []priorityrules.Features {
	return []priorityrules.Features{
		{HTTPMethod: "GET", Path: "/api/feed/home", Header: get},                 // first rule
		{HTTPMethod: "POST", Path: "/api/users/42/posts", Header: get},           // param pattern
		{Method: "PostComment", Header: get},                                     // header condition
		{HTTPMethod: "GET", Path: "/api/orders/1/items/2", Header: get},          // no rule: default
		{HTTPMethod: "OPTIONS", Path: "/healthz", Header: headers()},             // last rule
		{Method: "GetOrder", Header: headers("x-tier", "vip", "x-region", "eu")}, // two headers
	}
}

func BenchmarkPriority(b *testing.B) {
	r := mustParse(b, example)
	get := headers("x-client", "batch", "x-tier", "vip", "x-region", "us")
	for _, f := range benchFeatures(get) {
		name := f.Path
		if name == "" {
			name = f.Method
		}
		rule, _ := r.Match(f)
		if rule == "" {
			rule = "default"
		}
		b.Run(strings.ReplaceAll(name, "/", "_")+"->"+rule, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Priority(f)
			}
		})
	}
}

// A request that none of 100 path rules matches walks them all.
func BenchmarkPriority100Rules(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"rules": [`)
	for i := 0; i < 100; i++ {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `{"name": "r%d", "priority": 1, "match": {"http": {"method": "GET", "path": "/api/s%d/:id/*"}}}`, i, i)
	}
	sb.WriteString("]}")
	r := mustParse(b, sb.String())
	f := priorityrules.Features{HTTPMethod: "GET", Path: "/api/other/1/x", Header: headers()}
	b.ReportAllocs()
	for b.Loop() {
		r.Priority(f)
	}
}
