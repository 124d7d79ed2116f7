package longpoll

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

// What mesh-core and the config-center send (Hertz): a 200 with a body, a
// 304 with the version in its headers.
const (
	answer200 = "HTTP/1.1 200 OK\r\nServer: hertz\r\nDate: Sun, 30 Nov 2025 07:00:00 GMT\r\n" +
		"Content-Type: application/json; charset=utf-8\r\nContent-Length: 59\r\nEtag: \"4242\"\r\n\r\n" +
		`{"service":"s","version":4242,"instances":[],"stale":false}`
	answer304 = "HTTP/1.1 304 Not Modified\r\nServer: hertz\r\nX-Sextant-Version: 4242\r\nEtag: \"4242\"\r\n\r\n"
)

func TestReadAnswers(t *testing.T) {
	stream := answer200 + answer304 + answer200
	// At once, a byte at a time, and in halves: the same three responses.
	for name, src := range map[string]func() io.Reader{
		"whole":    func() io.Reader { return strings.NewReader(stream) },
		"bytewise": func() io.Reader { return iotest.OneByteReader(strings.NewReader(stream)) },
		"halves":   func() io.Reader { return iotest.HalfReader(strings.NewReader(stream)) },
	} {
		r, in := NewReader(16, 1<<20), src()
		for i, want := range []int{200, 304, 200} {
			resp, err := r.Read(in)
			if err != nil {
				t.Fatalf("%s, response %d: %v", name, i, err)
			}
			if resp.Status != want || !resp.HasVersion || resp.Version != 4242 || resp.Close {
				t.Errorf("%s, response %d: %+v", name, i, resp)
			}
			if body := `{"service":"s","version":4242,"instances":[],"stale":false}`; want == 200 && string(resp.Body) != body {
				t.Errorf("%s, response %d: body %q", name, i, resp.Body)
			} else if want == 304 && len(resp.Body) != 0 {
				t.Errorf("%s, 304 with a body %q", name, resp.Body)
			}
		}
		if _, err := r.Read(in); err != io.EOF {
			t.Errorf("%s: after the last response: %v, want EOF", name, err)
		}
	}
}

func TestReadRefuses(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     error
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", ErrChunked},
		{"no length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc", ErrNoContentLength},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", ErrMalformed},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", ErrMalformed},
		{"not HTTP", "SSH-2.0-OpenSSH_9.6\r\n\r\n", ErrMalformed},
		{"short status", "HTTP/1.1 20 OK\r\n\r\n", ErrMalformed},
		{"folded header", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n x\r\n\r\na", ErrMalformed},
		{"space in name", "HTTP/1.1 200 OK\r\nContent Length: 1\r\n\r\na", ErrMalformed},
		{"too large", "HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", ErrTooLarge},
		{"head too large", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", MaxHead) + "\r\n\r\n", ErrHeadTooLarge},
		{"cut body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", io.ErrUnexpectedEOF},
		{"cut head", "HTTP/1.1 200 OK\r\nContent-Le", io.EOF},
	} {
		max := 1024
		if c.name == "head too large" {
			max = 2 * MaxHead
		}
		if _, err := NewReader(64, max).Read(strings.NewReader(c.in)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestReadHeaders(t *testing.T) {
	for _, c := range []struct {
		in         string
		version    int64
		hasVersion bool
		close      bool
	}{
		{"HTTP/1.1 304 Not Modified\r\nX-Sextant-Version: 7\r\n\r\n", 7, true, false},
		{"HTTP/1.1 304 Not Modified\r\nETag: W/\"8\"\r\nX-Sextant-Version: 7\r\n\r\n", 8, true, false}, // ETag first
		{"HTTP/1.1 304 Not Modified\r\netag: 9\r\n\r\n", 9, true, false},
		{"HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\n\r\n", 0, false, false},
		{"HTTP/1.1 204 No Content\r\nConnection: keep-alive, Close\r\n\r\n", 0, false, true},
		{"HTTP/1.0 304 Not Modified\r\n\r\n", 0, false, true},
		{"HTTP/1.1 200\r\ncontent-length:0\r\n\r\n", 0, false, false}, // no reason phrase, no space
	} {
		resp, err := NewReader(8, 1024).Read(strings.NewReader(c.in))
		if err != nil || resp.Version != c.version || resp.HasVersion != c.hasVersion || resp.Close != c.close {
			t.Errorf("%q: %+v, %v", c.in, resp, err)
		}
	}
}

// The buffer grows for a larger answer and is reused: no allocation per
// answer once it fits.
func TestReadReusesItsBuffer(t *testing.T) {
	r := NewReader(32, 1<<20)
	in := bytes.NewReader(nil)
	msg := []byte(answer200)
	if _, err := r.Read(bytes.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		in.Reset(msg)
		if _, err := r.Read(in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per answer", allocs)
	}
}

func TestInt(t *testing.T) {
	body := []byte(`{"service":"s","version":123,"instances":[{"weight": 7},{"weight":-2}],"policy_age_ms":45,"x":1.5,"y":12e3,"z":"9"}`)
	for _, c := range []struct {
		key  string
		last bool
		want int64
		ok   bool
	}{
		{`"version":`, false, 123, true},
		{`"weight":`, false, 7, true},
		{`"weight":`, true, -2, true},
		{`"policy_age_ms":`, true, 45, true},
		{`"x":`, false, 0, false},
		{`"y":`, false, 0, false},
		{`"z":`, false, 0, false},
		{`"absent":`, false, 0, false},
	} {
		get := Int
		if c.last {
			get = LastInt
		}
		if v, ok := get(body, []byte(c.key)); v != c.want || ok != c.ok {
			t.Errorf("%s (last %v): %d, %v; want %d, %v", c.key, c.last, v, ok, c.want, c.ok)
		}
	}
	if _, ok := Int([]byte(`"v":1234567890123456789`), []byte(`"v":`)); ok {
		t.Error("19 digits read as an int64")
	}
}

// FuzzRead: the reader never panics, reads the same responses whatever the
// read sizes, and whatever it accepts net/http reads alike (status, body).
func FuzzRead(f *testing.F) {
	f.Add([]byte(answer200 + answer304))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!HTTP/1.1 304 x\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, bytewise := NewReader(16, 4096), NewReader(1, 4096)
		a, b := bytes.NewReader(in), iotest.OneByteReader(bytes.NewReader(in))
		std := bufio.NewReader(bytes.NewReader(in))
		// frame (the epoll loops' reader) reads the first response as Reader does.
		fr, total, ferr := frame(in, 4096)
		framed := ferr == nil && total > 0 && len(in) >= total
		for j := range 4 {
			r1, err1 := whole.Read(a)
			r2, err2 := bytewise.Read(b)
			if j == 0 && (framed != (err1 == nil) || (framed && (fr.Status != r1.Status || fr.Version != r1.Version ||
				fr.HasVersion != r1.HasVersion || fr.Close != r1.Close || !bytes.Equal(fr.Body, r1.Body)))) {
				t.Fatalf("Reader: %+v, %v; frame: %+v, %d of %d bytes, %v", r1, err1, fr, total, len(in), ferr)
			}
			if (err1 == nil) != (err2 == nil) || (err1 == nil && (r1.Status != r2.Status || r1.Version != r2.Version ||
				r1.HasVersion != r2.HasVersion || r1.Close != r2.Close || !bytes.Equal(r1.Body, r2.Body))) {
				t.Fatalf("whole: %+v, %v; byte by byte: %+v, %v", r1, err1, r2, err2)
			}
			if err1 != nil {
				return
			}
			sr, err := http.ReadResponse(std, nil)
			if err != nil {
				return // net/http is stricter on some headers: nothing to compare
			}
			sb, err := io.ReadAll(sr.Body)
			if err != nil {
				return
			}
			if sr.StatusCode != r1.Status || !bytes.Equal(sb, r1.Body) {
				t.Fatalf("net/http read %d %q, this reader %d %q", sr.StatusCode, sb, r1.Status, r1.Body)
			}
		}
	})
}
