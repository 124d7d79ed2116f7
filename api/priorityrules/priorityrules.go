// Package priorityrules is the priority_rules governance config: how the API
// layer at the edge of the mesh gives each request a business priority
// (0..127, higher is more important) from its features, so that every
// service behind it sheds by that priority under overload.
//
// A document (one per server service) lists rules in order; the first rule
// whose every condition matches gives the priority, and Default applies when
// none does:
//
//	{"default": 64, "rules": [
//	  {"name": "feed", "priority": 100, "match": {"http": {"method": "GET", "path": "/api/feed/*"}}},
//	  {"name": "comments-write", "priority": 20, "match": {"method": "PostComment", "headers": {"x-client": "batch"}}}]}
//
// Decode reads a document strictly and validates it; Compile turns it into
// Rules, whose Priority matches a request without allocating.
package priorityrules

import (
	"sort"
	"strings"

	"github.com/sextant-mesh/sextant/api"
)

// Priorities are integers in [MinPriority, MaxPriority], higher is more
// important; DefaultPriority is the default of a document that gives none.
const (
	MinPriority     = 0
	MaxPriority     = 127
	DefaultPriority = 64
)

// Bounds on a document.
const (
	MaxRules          = 1000 // rules in a document
	MaxHeaders        = 16   // header conditions in a rule
	MaxPathPatternLen = 1024 // bytes of a path pattern
	MaxValueLen       = 1024 // bytes of a header value
)

// Document is the priority_rules config of one server service.
type Document struct {
	// Default is the priority of a request no rule matches; absent (or
	// null) means DefaultPriority.
	Default *int32 `json:"default,omitempty"`
	Rules   []Rule `json:"rules,omitempty"`
}

// Rule gives Priority to the requests its Match matches.
type Rule struct {
	Name string `json:"name"`
	// Priority is required: a pointer so that a missing one is an error,
	// not a silent 0 (the first requests to be shed).
	Priority *int32 `json:"priority"`
	Match    Match  `json:"match"`
}

// Match are the conditions of a rule; every condition given must match, and
// a rule gives at least one.
type Match struct {
	HTTP *HTTPMatch `json:"http,omitempty"`
	// Method is a Thrift/Kitex method name, matched exactly.
	Method string `json:"method,omitempty"`
	// Headers are HTTP headers or Kitex metainfo keys (lower case) and the
	// exact values they must have.
	Headers map[string]string `json:"headers,omitempty"`
}

// HTTPMatch matches an HTTP request's method and path; it gives at least
// one of them.
type HTTPMatch struct {
	// Method is an HTTP method ("GET"), exact and case-sensitive; "" or
	// "*" is any method.
	Method string `json:"method,omitempty"`
	// Path is a path pattern (see Compile); "" is any path.
	Path string `json:"path,omitempty"`
}

// Decode decodes a document strictly (a JSON object, unknown fields and
// wrong types refused) and validates it. Errors name the field by its path,
// such as rules[1].match.http.path.
func Decode(doc []byte) (*Document, *api.FieldError) {
	var d Document
	if fe := api.DecodeObject(doc, &d); fe != nil {
		return nil, fe
	}
	if _, fe := compile(&d); fe != nil {
		return nil, fe
	}
	return &d, nil
}

// Validate decodes and validates a document; nil when it is good.
func Validate(doc []byte) *api.FieldError {
	_, fe := Decode(doc)
	return fe
}

// Parse decodes, validates and compiles a document.
func Parse(doc []byte) (*Rules, *api.FieldError) {
	d, fe := Decode(doc)
	if fe != nil {
		return nil, fe
	}
	return compile(d)
}

// Validate checks the document's values; nil when it is good.
func (d *Document) Validate() *api.FieldError {
	_, fe := compile(d)
	return fe
}

// Compile validates d and compiles it for matching. A bad document is
// refused with a *api.FieldError.
//
// Path patterns start with "/" and are made of segments separated by "/":
//
//   - a literal segment matches itself exactly (case-sensitive);
//   - ":name" matches any one non-empty segment;
//   - "*", only as the last segment, matches the rest of the path: "/a/*"
//     matches "/a/" and every path below it, not "/a"; "/*" matches every
//     path.
//
// "/" alone matches only "/". Empty segments ("//", or a trailing "/")
// are refused, and so are "*" anywhere else (inside a segment, "**"), a
// ":" with no name, "?", "#" and whitespace.
func Compile(d *Document) (*Rules, error) {
	r, fe := compile(d)
	if fe != nil {
		return nil, fe
	}
	return r, nil
}

func compile(d *Document) (*Rules, *api.FieldError) {
	if d == nil {
		return nil, api.Errorf("", api.CodeMissingField, "no document")
	}
	r := &Rules{def: DefaultPriority}
	if d.Default != nil {
		if fe := checkPriority("default", *d.Default); fe != nil {
			return nil, fe
		}
		r.def = *d.Default
	}
	if len(d.Rules) > MaxRules {
		return nil, api.Errorf("rules", api.CodeTooMany, "%d rules, at most %d", len(d.Rules), MaxRules)
	}
	r.rules = make([]rule, 0, len(d.Rules))
	names := make(map[string]bool, len(d.Rules))
	for i := range d.Rules {
		c, fe := compileRule(&d.Rules[i], names)
		if fe != nil {
			return nil, api.Under(api.Index("rules", i), fe)
		}
		r.rules = append(r.rules, c)
	}
	return r, nil
}

func checkPriority(field string, p int32) *api.FieldError {
	if p < MinPriority || p > MaxPriority {
		return api.Errorf(field, api.CodeOutOfRange, "%d is outside [%d, %d]", p, MinPriority, MaxPriority)
	}
	return nil
}

// compileRule compiles one rule; error fields are relative to the rule.
func compileRule(ru *Rule, names map[string]bool) (rule, *api.FieldError) {
	if fe := api.Name("name", ru.Name, true); fe != nil {
		return rule{}, fe
	}
	if names[ru.Name] {
		return rule{}, api.Errorf("name", api.CodeInvalidValue, "rule %q appears twice", ru.Name)
	}
	names[ru.Name] = true
	if ru.Priority == nil {
		return rule{}, api.Errorf("priority", api.CodeMissingField, "priority is required")
	}
	if fe := checkPriority("priority", *ru.Priority); fe != nil {
		return rule{}, fe
	}
	c := rule{name: ru.Name, priority: *ru.Priority}
	m := &ru.Match
	if m.HTTP == nil && m.Method == "" && len(m.Headers) == 0 {
		return rule{}, api.Errorf("match", api.CodeMissingField, "a rule matches on http, method or headers (the priority of every other request is default)")
	}
	if h := m.HTTP; h != nil {
		if (h.Method == "" || h.Method == "*") && h.Path == "" {
			return rule{}, api.Errorf("match.http", api.CodeMissingField, "http matches on method or path; leave http out to match any request")
		}
		if h.Method != "*" {
			if fe := checkHTTPMethod("match.http.method", h.Method); fe != nil {
				return rule{}, fe
			}
			c.httpMethod = h.Method
		}
		if h.Path != "" {
			p, fe := compilePath("match.http.path", h.Path)
			if fe != nil {
				return rule{}, fe
			}
			c.path = p
		}
	}
	if m.Method != "" {
		if fe := checkRPCMethod("match.method", m.Method); fe != nil {
			return rule{}, fe
		}
		c.method = m.Method
	}
	if len(m.Headers) > MaxHeaders {
		return rule{}, api.Errorf("match.headers", api.CodeTooMany, "%d headers, at most %d", len(m.Headers), MaxHeaders)
	}
	// In key order, so that the field refused first and the order of
	// look-ups are the same between runs.
	keys := make([]string, 0, len(m.Headers))
	for k := range m.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, field := m.Headers[k], api.Join("match.headers", k)
		if fe := checkHeaderKey(field, k); fe != nil {
			return rule{}, fe
		}
		if v == "" {
			return rule{}, api.Errorf(field, api.CodeMissingField, "a header condition needs the exact value to match")
		}
		if len(v) > MaxValueLen {
			return rule{}, api.Errorf(field, api.CodeOutOfRange, "%d bytes long, at most %d", len(v), MaxValueLen)
		}
		c.headers = append(c.headers, header{key: k, value: v})
	}
	return c, nil
}

// isTchar reports whether b may appear in an HTTP token (RFC 9110 5.6.2).
func isTchar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

// checkHTTPMethod accepts an HTTP method token without lower-case letters:
// methods are case-sensitive and every registered one is upper case, so
// "get" would never match a request.
func checkHTTPMethod(field, m string) *api.FieldError {
	if m == "" {
		return nil
	}
	if len(m) > 32 {
		return api.Errorf(field, api.CodeOutOfRange, "%d bytes long, at most 32", len(m))
	}
	for i := 0; i < len(m); i++ {
		b := m[i]
		if 'a' <= b && b <= 'z' {
			return api.Errorf(field, api.CodeInvalidValue, "HTTP methods are case-sensitive and upper case: want %q, got %q", strings.ToUpper(m), m)
		}
		if !isTchar(b) || b == '*' {
			return api.Errorf(field, api.CodeInvalidValue, "%q is not an HTTP method (a token such as GET or POST, or \"*\" for any)", m)
		}
	}
	return nil
}

// checkRPCMethod accepts a Thrift identifier: a letter or "_", then
// letters, digits, "_" and ".".
func checkRPCMethod(field, m string) *api.FieldError {
	if len(m) > api.MaxNameLen {
		return api.Errorf(field, api.CodeOutOfRange, "%d bytes long, at most %d", len(m), api.MaxNameLen)
	}
	for i := 0; i < len(m); i++ {
		b := m[i]
		letter := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || b == '_'
		if !letter && (i == 0 || !('0' <= b && b <= '9' || b == '.')) {
			return api.Errorf(field, api.CodeInvalidValue, "%q is not a method name (a letter or _, then letters, digits, _ and .)", m)
		}
	}
	return nil
}

// checkHeaderKey accepts a lower-case HTTP token: HTTP header names are
// case-insensitive, Kitex metainfo keys are not, and the SDK sends its own
// keys (x-sextant-priority) in lower case.
func checkHeaderKey(field, k string) *api.FieldError {
	if k == "" {
		return api.Errorf(field, api.CodeInvalidValue, "empty header name")
	}
	if len(k) > api.MaxNameLen {
		return api.Errorf(field, api.CodeOutOfRange, "%d bytes long, at most %d", len(k), api.MaxNameLen)
	}
	for i := 0; i < len(k); i++ {
		b := k[i]
		if 'A' <= b && b <= 'Z' {
			return api.Errorf(field, api.CodeInvalidValue, "header names are written in lower case: want %q, got %q", strings.ToLower(k), k)
		}
		if !isTchar(b) {
			return api.Errorf(field, api.CodeInvalidValue, "%q is not a header name (letters, digits and !#$%%&'*+-.^_`|~)", k)
		}
	}
	return nil
}
