// Package httphead parses HTTP/1.1 request heads (RFC 9112): the request
// line and the header fields up to the blank line, from the bytes in hand,
// without reading. It is the parser of mesh-core's poll port, a small
// HTTP/1.1 server on netpoll that serves GET only: a request with a body
// (Content-Length above 0, or any Transfer-Encoding) is refused, as are
// obsolete line folding, bare LF line ends and request targets other than
// the origin form (/path?query).
//
// Every refusal is an *Error with the status to answer (400 or 431) and a
// FieldError that names the problem; Parse never panics on any input
// (FuzzParse).
package httphead

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/sextant-mesh/sextant/api"
)

// Error codes of malformed requests, in api.ErrorBody.Error.Code.
const (
	CodeMalformedRequest = "malformed_request"   // not an HTTP/1.x request head
	CodeHeaderTooLarge   = "header_too_large"    // the head is longer than its bound
	CodeBodyNotAllowed   = "body_not_allowed"    // Content-Length above 0, or Transfer-Encoding
	CodeVersion          = "unsupported_version" // not HTTP/1.x
)

// Head is a request head. Its strings are copies: they outlive the bytes parsed.
type Head struct {
	Method string
	// Target is the request target as sent; Path is its path with percent
	// escapes decoded, RawQuery what follows '?', not decoded.
	Target, Path, RawQuery string
	// Minor is the x of HTTP/1.x: 0 or 1.
	Minor int
	// KeepAlive tells whether the client keeps the connection after the
	// answer: HTTP/1.1 unless Connection: close, HTTP/1.0 with
	// Connection: keep-alive.
	KeepAlive bool
	// IfNoneMatch is the first If-None-Match field ("" when none).
	IfNoneMatch string
	Host        string
	// Authorization is the request's credential ("" when none).
	Authorization string
}

// Error is a request refused: Status is the HTTP status to answer with.
type Error struct {
	Status int
	Err    *api.FieldError
}

func (e *Error) Error() string { return fmt.Sprintf("%d %v", e.Status, e.Err) }

func fail(status int, field, code, format string, args ...any) *Error {
	return &Error{Status: status, Err: api.Errorf(field, code, format, args...)}
}

var crlfcrlf = []byte("\r\n\r\n")

// Parse reads the request head at the start of b, of at most limit bytes
// (the blank line included). It returns the head and the number of bytes it
// took; n is 0 with a nil error when b holds no complete head yet and may
// still become one (read more and call again). A request line already
// complete and wrong is refused at once, without waiting for the rest. Empty
// lines before the request line are skipped (RFC 9112, 2.2).
func Parse(b []byte, limit int) (h Head, n int, err *Error) {
	skip := 0
	for skip+1 < len(b) && b[skip] == '\r' && b[skip+1] == '\n' {
		skip += 2
	}
	h, n, err = parse(b[skip:], limit-skip)
	if err != nil && err.Status == 431 {
		err.Err.Message = fmt.Sprintf("request head longer than %d bytes", limit)
	}
	if n > 0 {
		n += skip
	}
	return h, n, err
}

func parse(b []byte, limit int) (h Head, n int, err *Error) {
	end := bytes.Index(b, crlfcrlf)
	if end < 0 || end+4 > limit {
		if end < 0 && len(b) < limit {
			if line, _, ok := bytes.Cut(b, []byte("\r\n")); ok {
				if _, err := parseRequestLine(line); err != nil {
					return h, 0, err
				}
			} else if i := bytes.IndexByte(b, '\n'); i >= 0 {
				return h, 0, fail(400, "", CodeMalformedRequest, "line ends with a bare LF; want CRLF")
			}
			return h, 0, nil
		}
		return h, 0, fail(431, "", CodeHeaderTooLarge, "request head too long")
	}
	head := b[:end+2] // every line with its CRLF
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if h, err = parseRequestLine(line); err != nil {
		return h, 0, err
	}
	h.KeepAlive = h.Minor == 1
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, err := parseField(line)
		if err != nil {
			return Head{}, 0, err
		}
		switch {
		case equalFold(name, "Host"):
			if h.Host != "" {
				return Head{}, 0, fail(400, "Host", CodeMalformedRequest, "Host given twice")
			}
			h.Host = string(value)
		case equalFold(name, "Authorization"):
			if h.Authorization != "" {
				return Head{}, 0, fail(400, "Authorization", CodeMalformedRequest, "Authorization given twice")
			}
			h.Authorization = string(value)
		case equalFold(name, "If-None-Match"):
			if h.IfNoneMatch == "" {
				h.IfNoneMatch = string(value)
			}
		case equalFold(name, "Connection"):
			for _, opt := range strings.Split(string(value), ",") {
				switch opt = strings.TrimSpace(opt); {
				case strings.EqualFold(opt, "close"):
					h.KeepAlive = false
				case strings.EqualFold(opt, "keep-alive") && h.Minor == 0:
					h.KeepAlive = true
				}
			}
		case equalFold(name, "Content-Length"):
			if !allDigits(value) {
				return Head{}, 0, fail(400, "Content-Length", CodeMalformedRequest, "Content-Length %q is not a number", value)
			}
			if strings.TrimLeft(string(value), "0") != "" {
				return Head{}, 0, fail(400, "Content-Length", CodeBodyNotAllowed, "a poll has no body (Content-Length %s)", value)
			}
		case equalFold(name, "Transfer-Encoding"):
			return Head{}, 0, fail(400, "Transfer-Encoding", CodeBodyNotAllowed, "a poll has no body (Transfer-Encoding %q)", value)
		}
	}
	return h, end + 4, nil
}

// parseRequestLine reads "METHOD SP target SP HTTP/1.x".
func parseRequestLine(line []byte) (Head, *Error) {
	var h Head
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(method) == 0 {
		return h, fail(400, "", CodeMalformedRequest, "not an HTTP request line: want METHOD /path HTTP/1.1")
	}
	for _, c := range method {
		if !isTokenChar(c) {
			return h, fail(400, "method", CodeMalformedRequest, "method %q is not a token", method)
		}
	}
	target, version, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(target) == 0 {
		return h, fail(400, "", CodeMalformedRequest, "not an HTTP request line: want METHOD /path HTTP/1.1")
	}
	switch {
	case len(version) != 8 || string(version[:5]) != "HTTP/" || !isDigit(version[5]) || version[6] != '.' || !isDigit(version[7]):
		return h, fail(400, "", CodeMalformedRequest, "not an HTTP request line: want METHOD /path HTTP/1.1")
	case version[5] != '1':
		return h, fail(400, "version", CodeVersion, "%s is not HTTP/1.x", version)
	case version[7] == '0':
		h.Minor = 0
	default:
		h.Minor = 1 // HTTP/1.2 and above read as 1.1 (RFC 9110, 2.5)
	}
	if target[0] != '/' {
		return h, fail(400, "target", CodeMalformedRequest, "request target must be a path (/v1/...), got %q", clip(target))
	}
	for _, c := range target {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return h, fail(400, "target", CodeMalformedRequest, "request target holds a byte %q it may not", c)
		}
	}
	path, query, _ := bytes.Cut(target, []byte("?"))
	p, err := Unescape(string(path), false)
	if err != nil {
		return h, fail(400, "target", CodeMalformedRequest, "path: %v", err)
	}
	h.Method, h.Target, h.Path, h.RawQuery = string(method), string(target), p, string(query)
	return h, nil
}

// parseField reads "name: value" (value without the spaces around it).
func parseField(line []byte) (name, value []byte, err *Error) {
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
		return nil, nil, fail(400, "", CodeMalformedRequest, "obsolete line folding is not accepted")
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok || len(name) == 0 {
		return nil, nil, fail(400, "", CodeMalformedRequest, "header line %q has no name", clip(line))
	}
	for _, c := range name {
		if !isTokenChar(c) {
			return nil, nil, fail(400, "", CodeMalformedRequest, "header name %q is not a token", clip(name))
		}
	}
	value = bytes.Trim(value, " \t")
	for _, c := range value {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return nil, nil, fail(400, string(name), CodeMalformedRequest, "header %s holds a control byte %q", name, c)
		}
	}
	return name, value, nil
}

// Unescape decodes percent escapes; query decodes '+' as a space too, as a
// query string is written (application/x-www-form-urlencoded).
func Unescape(s string, query bool) (string, error) {
	if !strings.ContainsAny(s, "%+") || (!query && !strings.Contains(s, "%")) {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", fmt.Errorf("bad escape %q", clip([]byte(s[i:min(len(s), i+3)])))
			}
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case c == '+' && query:
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// Query returns the first value of key in a raw query, decoded; ok is false
// when the key is absent.
func Query(raw, key string) (value string, ok bool, err error) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(pair, "=")
		if k, err = Unescape(k, true); err != nil {
			return "", false, err
		}
		if k == key {
			v, err = Unescape(v, true)
			return v, err == nil, err
		}
	}
	return "", false, nil
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func equalFold(b []byte, s string) bool {
	return len(b) == len(s) && strings.EqualFold(string(b), s)
}

// clip keeps error messages short whatever the client sent.
func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
