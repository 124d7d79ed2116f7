package priorityrules

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sextant-mesh/sextant/api"
)

// Features are what rules match a request on. An HTTP request gives
// HTTPMethod and Path (decoded, without the query); a Kitex request gives
// Method. Header returns a header's or metainfo key's value ("" when
// absent); it is called with the lower-case keys rules name, so an HTTP
// getter must be case-insensitive (Hertz's RequestHeader.Peek is). A nil
// Header matches no header condition.
type Features struct {
	HTTPMethod string
	Path       string
	Method     string
	Header     func(key string) string
}

// Rules are a compiled document, safe for concurrent use. A nil *Rules
// gives every request DefaultPriority.
type Rules struct {
	def   int32
	rules []rule
}

type rule struct {
	name       string
	priority   int32
	httpMethod string       // "": any
	path       *pathPattern // nil: any
	method     string       // "": any
	headers    []header
}

type header struct{ key, value string }

// Priority is the priority of the request f: the first matching rule's, in
// document order, else the default. It does not allocate (beyond what
// f.Header does).
func (r *Rules) Priority(f Features) int32 {
	_, p := r.Match(f)
	return p
}

// Match is Priority that also names the rule that matched ("" when the
// default applies).
func (r *Rules) Match(f Features) (rule string, priority int32) {
	if r == nil {
		return "", DefaultPriority
	}
	for i := range r.rules {
		if ru := &r.rules[i]; ru.matches(&f) {
			return ru.name, ru.priority
		}
	}
	return "", r.def
}

// Default is the priority of a request no rule matches.
func (r *Rules) Default() int32 {
	if r == nil {
		return DefaultPriority
	}
	return r.def
}

// Len is the number of rules.
func (r *Rules) Len() int {
	if r == nil {
		return 0
	}
	return len(r.rules)
}

// matches checks the cheap conditions first and calls the header getter
// last.
func (ru *rule) matches(f *Features) bool {
	if ru.method != "" && f.Method != ru.method {
		return false
	}
	if ru.httpMethod != "" && f.HTTPMethod != ru.httpMethod {
		return false
	}
	if ru.path != nil && !ru.path.match(f.Path) {
		return false
	}
	if len(ru.headers) > 0 {
		if f.Header == nil {
			return false
		}
		for _, h := range ru.headers {
			if f.Header(h.key) != h.value {
				return false
			}
		}
	}
	return true
}

type pathKind uint8

const (
	pathExact     pathKind = iota // only literal segments: path == lit
	pathLitPrefix                 // literal segments then /*: path has prefix lit (ends in "/")
	pathSegments                  // with :params: path has prefix lit (the literal segments before the first :param), then walk the segments
)

type pathPattern struct {
	kind   pathKind
	lit    string
	segs   []segment
	prefix bool // ends in /*
}

type segment struct {
	lit   string
	param bool
}

func (p *pathPattern) match(path string) bool {
	switch p.kind {
	case pathExact:
		return path == p.lit
	case pathLitPrefix:
		return strings.HasPrefix(path, p.lit)
	}
	if !strings.HasPrefix(path, p.lit) {
		return false
	}
	rest := path
	for _, s := range p.segs {
		if rest == "" || rest[0] != '/' {
			return false
		}
		rest = rest[1:]
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			i = len(rest)
		}
		if seg := rest[:i]; s.param && seg == "" || !s.param && seg != s.lit {
			return false
		}
		rest = rest[i:]
	}
	if p.prefix {
		return rest != "" && rest[0] == '/'
	}
	return rest == ""
}

// compilePath compiles a path pattern (syntax: Compile).
func compilePath(field, pat string) (*pathPattern, *api.FieldError) {
	bad := func(format string, args ...any) (*pathPattern, *api.FieldError) {
		return nil, api.Errorf(field, api.CodeInvalidValue, "path pattern %q: "+format, append([]any{pat}, args...)...)
	}
	if len(pat) > MaxPathPatternLen {
		return nil, api.Errorf(field, api.CodeOutOfRange, "%d bytes long, at most %d", len(pat), MaxPathPatternLen)
	}
	if pat[0] != '/' {
		return bad("does not start with /")
	}
	if pat == "/" {
		return &pathPattern{kind: pathExact, lit: "/"}, nil
	}
	p := &pathPattern{}
	parts := strings.Split(pat[1:], "/")
	params := false
	for i, s := range parts {
		last := i == len(parts)-1
		switch {
		case s == "":
			if last {
				return bad("ends in /: leave it out, or end in /* to match a prefix")
			}
			return bad("empty segment (//)")
		case s == "*":
			if !last {
				return bad("* is only the whole last segment (/a/*)")
			}
			p.prefix = true
			continue
		case strings.Contains(s, "*"):
			return bad("* is only the whole last segment (/a/*): %q is not supported", s)
		case s[0] == ':':
			if !paramName(s[1:]) {
				return bad("%q: a parameter is : and a name of letters, digits and _", s)
			}
			params = true
			p.segs = append(p.segs, segment{param: true})
			continue
		}
		for _, r := range s {
			if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '?' || r == '#' {
				return bad("%q: a path has no whitespace, control characters, ? or #", s)
			}
		}
		p.segs = append(p.segs, segment{lit: s})
	}
	switch {
	case params:
		p.kind = pathSegments
		for _, s := range p.segs {
			if s.param {
				break
			}
			p.lit += "/" + s.lit
		}
		p.lit += "/"
	case p.prefix:
		p.kind, p.lit = pathLitPrefix, strings.TrimSuffix(pat, "*") // "/a/b/", or "/" for "/*"
	default:
		p.kind, p.lit = pathExact, pat
	}
	return p, nil
}

func paramName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_') {
			return false
		}
	}
	return true
}
