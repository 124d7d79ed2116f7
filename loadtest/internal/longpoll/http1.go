package longpoll

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Response is one HTTP/1.1 response as a Reader keeps it: the few things a
// long poller needs, nothing decoded that it does not.
type Response struct {
	Status int
	// Version is the answer's version from its ETag ("N", W/"N" or N) or,
	// without an ETag, from X-Sextant-Version; HasVersion says whether
	// either held an integer.
	Version    int64
	HasVersion bool
	// Close: the server will close the connection after this response
	// (Connection: close, or HTTP/1.0).
	Close bool
	// Body aliases the Reader's buffer: it is valid until the next Read.
	Body []byte
}

// Limits of a Reader.
const (
	// MaxHead bounds the status line and headers: mesh-core's and the
	// config-center's are about 150 bytes.
	MaxHead = 8 << 10
	// DefaultMaxResponse bounds a whole response (head and body).
	DefaultMaxResponse = 4 << 20
)

// Errors of a Reader. Any error leaves the connection unusable.
var (
	ErrHeadTooLarge     = errors.New("response head larger than MaxHead")
	ErrTooLarge         = errors.New("response larger than the Reader's maximum")
	ErrNoContentLength  = errors.New("response without Content-Length (only Content-Length framing is read)")
	ErrChunked          = errors.New("response with Transfer-Encoding (only Content-Length framing is read)")
	ErrMalformed        = errors.New("malformed response head")
	errNoProgress       = errors.New("reader returned no data and no error repeatedly")
	crlf2               = []byte("\r\n\r\n")
	errUnexpectedStatus = errors.New("1xx responses are not read")
)

// Reader reads the HTTP/1.1 responses of one connection into one buffer it
// reuses: after the first answers it allocates nothing. It understands
// Content-Length framing only (what Hertz sends for a body set at once),
// and bodiless 204 and 304 answers.
type Reader struct {
	buf        []byte // buf[start:end]: read, not yet returned
	start, end int
	max        int
}

// NewReader makes a reader with a size-byte buffer (grown when an answer
// needs more) that refuses responses larger than max bytes.
func NewReader(size, max int) *Reader {
	size = min(max, size)
	return &Reader{buf: make([]byte, size), max: max}
}

// Read reads the next response from src. The Body it returns is valid
// until the next call.
func (r *Reader) Read(src io.Reader) (Response, error) {
	if r.start > 0 { // bytes past the last response (none, normally: one request in flight)
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	headEnd := -1 // index of the blank line's \r\n\r\n
	scanned := 0
	var readErr error
	for zero := 0; ; {
		if i := bytes.Index(r.buf[scanned:r.end], crlf2); i >= 0 {
			headEnd = scanned + i
			break
		}
		scanned = max(0, r.end-3)
		if r.end >= MaxHead+4 {
			return Response{}, ErrHeadTooLarge
		}
		if readErr != nil {
			return Response{}, readErr
		}
		if r.end == len(r.buf) {
			r.grow(min(r.max, max(2*len(r.buf), 512)))
			if r.end == len(r.buf) {
				return Response{}, ErrTooLarge
			}
		}
		n, err := src.Read(r.buf[r.end:])
		r.end += n
		readErr = err
		if n == 0 && err == nil {
			if zero++; zero > 100 {
				return Response{}, errNoProgress
			}
		}
	}
	if headEnd > MaxHead {
		return Response{}, ErrHeadTooLarge
	}
	resp, clen, err := parseHead(r.buf[:headEnd])
	if err != nil {
		return resp, err
	}
	total := headEnd + 4 + clen
	if total > r.max || total < 0 {
		return Response{}, ErrTooLarge
	}
	if total > len(r.buf) {
		r.grow(total)
	}
	for zero := 0; r.end < total; {
		if readErr != nil {
			if readErr == io.EOF {
				readErr = io.ErrUnexpectedEOF
			}
			return Response{}, readErr
		}
		n, err := src.Read(r.buf[r.end:])
		r.end += n
		readErr = err
		if n == 0 && err == nil {
			if zero++; zero > 100 {
				return Response{}, errNoProgress
			}
		}
	}
	resp.Body = r.buf[headEnd+4 : total : total]
	r.start = total
	return resp, nil
}

// frame reads the response at the start of b, which holds what a
// connection has sent so far: total is how many bytes the whole response
// takes (0: its head is not all there yet), and the response (its Body
// aliasing b) once len(b) >= total. Responses larger than max are refused.
func frame(b []byte, max int) (resp Response, total int, err error) {
	headEnd := bytes.Index(b, crlf2)
	switch {
	case headEnd < 0 && len(b) >= MaxHead+4, headEnd > MaxHead:
		return Response{}, 0, ErrHeadTooLarge
	case headEnd < 0:
		return Response{}, 0, nil
	}
	resp, clen, err := parseHead(b[:headEnd])
	if err != nil {
		return Response{}, 0, err
	}
	total = headEnd + 4 + clen
	if total > max || total < 0 {
		return Response{}, 0, ErrTooLarge
	}
	if len(b) >= total {
		resp.Body = b[headEnd+4 : total : total]
	}
	return resp, total, nil
}

// grow makes the buffer size bytes long, keeping what it holds.
func (r *Reader) grow(size int) {
	if size <= len(r.buf) {
		return
	}
	b := make([]byte, size)
	copy(b, r.buf[:r.end])
	r.buf = b
}

// parseHead reads a status line and headers (head ends before the blank
// line): the response and its body's length.
func parseHead(head []byte) (resp Response, clen int, err error) {
	if bytes.Count(head, []byte("\n")) != bytes.Count(head, crlf2[:2]) || bytes.Count(head, []byte("\r")) != bytes.Count(head, crlf2[:2]) {
		return resp, 0, fmt.Errorf("%w: a bare CR or LF in the head", ErrMalformed) // lines end in CRLF, and nothing else does
	}
	line, rest, _ := bytes.Cut(head, crlf2[:2])
	switch {
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		resp.Close = true
	default:
		return resp, 0, fmt.Errorf("%w: status line %.40q", ErrMalformed, line)
	}
	code := line[len("HTTP/1.1 "):]
	if len(code) < 3 || (len(code) > 3 && code[3] != ' ') || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) {
		return resp, 0, fmt.Errorf("%w: status line %.40q", ErrMalformed, line)
	}
	resp.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if resp.Status < 100 {
		return resp, 0, fmt.Errorf("%w: status %d", ErrMalformed, resp.Status)
	}
	clen = -1
	var etag, xver []byte
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, crlf2[:2])
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || name[0] == ' ' || name[0] == '\t' || bytes.IndexAny(name, " \t") >= 0 {
			return resp, 0, fmt.Errorf("%w: header line %.40q", ErrMalformed, line)
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, ok := parseLength(value)
			if !ok || (clen >= 0 && n != clen) {
				return resp, 0, fmt.Errorf("%w: Content-Length %.40q", ErrMalformed, value)
			}
			clen = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return resp, 0, ErrChunked
		case bytes.EqualFold(name, []byte("ETag")):
			etag = value
		case bytes.EqualFold(name, []byte("X-Sextant-Version")):
			xver = value
		case bytes.EqualFold(name, []byte("Connection")):
			if hasToken(value, "close") {
				resp.Close = true
			}
		}
	}
	if etag != nil {
		resp.Version, resp.HasVersion = parseETag(etag)
	}
	if !resp.HasVersion && xver != nil {
		resp.Version, resp.HasVersion = parseInt(xver)
	}
	switch {
	case resp.Status < 200:
		return resp, 0, errUnexpectedStatus
	case resp.Status == 204 || resp.Status == 304:
		return resp, 0, nil // no body, whatever the headers say (RFC 9112 6.3)
	case clen < 0:
		return resp, 0, ErrNoContentLength
	}
	return resp, clen, nil
}

// parseLength reads a Content-Length: digits only, at most 10 of them.
func parseLength(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// parseETag reads the version an entity tag names: "5", W/"5" or 5.
func parseETag(b []byte) (int64, bool) {
	b = bytes.TrimPrefix(b, []byte("W/"))
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		b = b[1 : len(b)-1]
	}
	return parseInt(b)
}

// hasToken tells whether a comma-separated header value holds tok (any case).
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(bytes.Trim(t, " \t"), []byte(tok)) {
			return true
		}
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseInt reads a whole decimal integer (optional '-', 1 to 18 digits).
func parseInt(b []byte) (int64, bool) {
	v, n := leadingInt(b)
	return v, n > 0 && n == len(b)
}

// leadingInt reads the decimal integer at the start of b (optional '-', 1 to
// 18 digits): its value and how many bytes it took (0: none there).
func leadingInt(b []byte) (int64, int) {
	i, neg := 0, false
	if len(b) > 0 && b[0] == '-' {
		i, neg = 1, true
	}
	start := i
	var v int64
	for ; i < len(b) && isDigit(b[i]); i++ {
		if i-start == 18 {
			return 0, 0
		}
		v = v*10 + int64(b[i]-'0')
	}
	if i == start {
		return 0, 0
	}
	if neg {
		v = -v
	}
	return v, i
}

// Int reads the integer that follows the first occurrence of key in b,
// where key is a JSON member name with its quotes and colon (`"version":`),
// without decoding anything else: answers put "version" near their start.
// Whitespace after the colon is skipped.
func Int(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	return intAfter(b[i+len(key):])
}

// LastInt is Int for the last occurrence of key: for the members an answer
// puts at its end (policy_age_ms).
func LastInt(b, key []byte) (int64, bool) {
	i := bytes.LastIndex(b, key)
	if i < 0 {
		return 0, false
	}
	return intAfter(b[i+len(key):])
}

func intAfter(b []byte) (int64, bool) {
	b = bytes.TrimLeft(b, " \t\r\n")
	v, n := leadingInt(b)
	if n == 0 || (n < len(b) && (isDigit(b[n]) || b[n] == '.' || b[n] == 'e' || b[n] == 'E')) {
		return 0, false // not an integer (a fraction, an exponent, more than 18 digits)
	}
	return v, true
}

// ParseETag reads the version an entity tag names: "5", W/"5" or 5.
func ParseETag(tag string) (int64, bool) { return parseETag(bytes.TrimSpace([]byte(tag))) }
