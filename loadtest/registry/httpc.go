package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// conn is one keep-alive HTTP/1.1 connection to mesh-core, one request at a
// time, speaking just enough of the protocol for mesh-core's answers
// (Content-Length bodies). It costs a few microseconds per request, so at
// tens of thousands of heartbeats a second the client is not what is
// measured (net/http's client costs several times more).
type conn struct {
	addr string
	nc   net.Conn
	r    *bufio.Reader
	req  []byte // the request being written
	body []byte // the last answer's body, valid until the next request
}

func newConn(addr string) *conn { return &conn{addr: addr} }

var errChunked = errors.New("chunked answer: not supported by this client")

// do sends one request (body may be nil) and reads the answer. A request
// on a connection the server closed while idle is retried once on a new
// one; any other failure closes the connection, and the next request dials
// again.
func (c *conn) do(method, path, token string, body []byte, timeout time.Duration) (status int, err error) {
	for attempt := 0; ; attempt++ {
		reused := c.nc != nil
		if !reused {
			nc, err := net.DialTimeout("tcp", c.addr, timeout)
			if err != nil {
				return 0, err
			}
			c.nc = nc
			if c.r == nil {
				c.r = bufio.NewReaderSize(nc, 16<<10)
			} else {
				c.r.Reset(nc)
			}
		}
		status, err = c.roundTrip(method, path, token, body, timeout)
		if err == nil {
			return status, nil
		}
		c.close()
		if !reused || attempt > 0 || !errors.Is(err, io.EOF) {
			return 0, err
		}
	}
}

func (c *conn) roundTrip(method, path, token string, body []byte, timeout time.Duration) (int, error) {
	b := append(c.req[:0], method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: mesh-core\r\n"...)
	if token != "" {
		b = append(b, "Authorization: Bearer "...)
		b = append(b, token...)
		b = append(b, "\r\n"...)
	}
	if body != nil {
		b = append(b, "Content-Type: application/json\r\n"...)
	}
	if body != nil || method == "PUT" || method == "POST" {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, body...)
	c.req = b
	if err := c.nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	if _, err := c.nc.Write(b); err != nil {
		return 0, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length, closing := -1, false
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, errChunked
		case bytes.EqualFold(name, []byte("Connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
	}
	if length < 0 {
		length = 0 // 304 and 204 carry none
	}
	if cap(c.body) < length {
		c.body = make([]byte, length)
	}
	c.body = c.body[:length]
	if _, err := io.ReadFull(c.r, c.body); err != nil {
		return 0, err
	}
	if closing {
		c.close()
	}
	return status, nil
}

func (c *conn) close() {
	if c.nc != nil {
		c.nc.Close()
		c.nc = nil
	}
}
