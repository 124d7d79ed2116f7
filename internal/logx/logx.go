// Package logx sets up structured logging for a Sextant service and keeps the
// framework loggers (Hertz, Kitex) to warnings, so that a service's log is its own.
package logx

import (
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/cloudwego/hertz/pkg/common/hlog"
	"github.com/cloudwego/kitex/pkg/klog"
)

// New returns a JSON logger to stderr for one service.
func New(service string) *slog.Logger {
	return NewTo(os.Stderr, service)
}

// NewTo returns a JSON logger writing to w.
func NewTo(w io.Writer, service string) *slog.Logger {
	QuietFrameworks()
	return slog.New(slog.NewJSONHandler(w, nil)).With("service", service)
}

// Discard is a logger for tests that do not read logs.
func Discard() *slog.Logger {
	QuietFrameworks()
	return slog.New(slog.DiscardHandler)
}

// QuietFrameworks sets the Hertz and Kitex log levels to warnings, once: they
// are not safe to set while servers log, so every server constructor calls it
// before it starts one.
var QuietFrameworks = sync.OnceFunc(func() {
	hlog.SetLevel(hlog.LevelWarn)
	klog.SetLevel(klog.LevelWarn)
})
