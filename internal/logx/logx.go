// Package logx sets up structured logging for a Sextant service and routes
// the framework loggers (Hertz's hlog, Kitex's klog) through slog, at
// warnings and above, so that a service's log is one stream of JSON lines.
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

// NewTo returns a JSON logger writing to w. The first one a process makes
// also receives Hertz's and Kitex's logs (RouteFrameworks).
func NewTo(w io.Writer, service string) *slog.Logger {
	QuietFrameworks()
	l := slog.New(slog.NewJSONHandler(w, nil)).With("service", service)
	frameworkTarget.CompareAndSwap(nil, l)
	return l
}

// Discard is a logger for tests that do not read logs.
func Discard() *slog.Logger {
	QuietFrameworks()
	return slog.New(slog.DiscardHandler)
}

// QuietFrameworks routes the Hertz and Kitex loggers through slog and sets
// them to warnings, once: they are not safe to set while servers log, so
// every server constructor calls it before it starts one.
var QuietFrameworks = sync.OnceFunc(func() {
	hlog.SetLogger(&hertzLogger{frameworkLogger{name: "hertz"}})
	klog.SetLogger(&kitexLogger{frameworkLogger{name: "kitex"}})
	hlog.SetLevel(hlog.LevelWarn)
	klog.SetLevel(klog.LevelWarn)
})

// RouteFrameworks sends Hertz's and Kitex's logs to l, each record with a
// "framework" attribute (hertz or kitex); nil sends them to slog.Default().
// It may be called at any time.
func RouteFrameworks(l *slog.Logger) {
	QuietFrameworks()
	frameworkTarget.Store(l)
}
