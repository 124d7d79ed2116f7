package core

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/sextant-mesh/sextant/api"
)

// The answers of the poll port, written as the HTTP port writes them: the
// same bodies, ETag and X-Sextant-Version fields, JSON errors.

// setDate remakes the Date field answers carry (RFC 9110, 6.6.1), once a second.
func (s *PollServer) setDate(now time.Time) {
	d := "Date: " + now.UTC().Format(http.TimeFormat) + "\r\n"
	if old := s.date.Load(); old == nil || *old != d {
		s.date.Store(&d)
	}
}

func (s *PollServer) appendStatus(b []byte, status int, keepAlive bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\n"...)
	b = append(b, *s.date.Load()...)
	if !keepAlive {
		b = append(b, "Connection: close\r\n"...)
	}
	return b
}

func appendETag(b []byte, version int64) []byte {
	b = append(b, "ETag: \""...)
	b = strconv.AppendInt(b, version, 10)
	return append(b, "\"\r\n"...)
}

// appendOK appends a 200 with body, the answer at version.
func (s *PollServer) appendOK(b []byte, version int64, body []byte, keepAlive bool) []byte {
	b = s.appendStatus(b, http.StatusOK, keepAlive)
	b = append(b, "Content-Type: application/json; charset=utf-8\r\n"...)
	b = appendETag(b, version)
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// appendNotModified appends a 304: the wait ended on version.
func (s *PollServer) appendNotModified(b []byte, version int64, keepAlive bool) []byte {
	b = s.appendStatus(b, http.StatusNotModified, keepAlive)
	b = append(b, "X-Sextant-Version: "...)
	b = strconv.AppendInt(b, version, 10)
	b = append(b, "\r\n"...)
	b = appendETag(b, version)
	return append(b, "\r\n"...)
}

// appendError appends status with {"error": fe}; extra are more header
// fields, each with its CRLF.
func (s *PollServer) appendError(b []byte, status int, fe *api.FieldError, keepAlive bool, extra string) []byte {
	body, err := json.Marshal(api.ErrorBody{Error: fe})
	if err != nil {
		body = []byte(`{"error":{"code":"internal","message":"cannot encode the error"}}`)
	}
	b = s.appendStatus(b, status, keepAlive)
	b = append(b, extra...)
	b = append(b, "Content-Type: application/json; charset=utf-8\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}
