package logx

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/cloudwego/hertz/pkg/common/hlog"
	"github.com/cloudwego/kitex/pkg/klog"
)

// frameworkTarget is where Hertz's and Kitex's logs go; nil: slog.Default().
var frameworkTarget atomic.Pointer[slog.Logger]

var bg = context.Background()

// Levels of the frameworks' notice, trace and fatal, which slog lacks.
const (
	levelTrace  = slog.LevelDebug - 4
	levelNotice = slog.LevelInfo + 2
	levelFatal  = slog.LevelError + 4
)

// frameworkLogger is the part of hlog.FullLogger and klog.FullLogger that
// both share: every call becomes one slog record to frameworkTarget. The
// frameworks' levels are set with their own Level types (hertzLogger,
// kitexLogger); below the level set nothing is formatted.
type frameworkLogger struct {
	name  string
	level atomic.Int64 // a slog.Level
}

func (f *frameworkLogger) log(ctx context.Context, lv slog.Level, msg func() string) {
	if lv < slog.Level(f.level.Load()) {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	l := frameworkTarget.Load()
	if l == nil {
		l = slog.Default()
	}
	if l.Enabled(ctx, lv) {
		l.Log(ctx, lv, strings.TrimRight(msg(), "\n"), "framework", f.name)
	}
	if lv == levelFatal {
		os.Exit(1) // as the frameworks' own loggers do
	}
}

func (f *frameworkLogger) print(ctx context.Context, lv slog.Level, v []any) {
	f.log(ctx, lv, func() string { return fmt.Sprint(v...) })
}

func (f *frameworkLogger) printf(ctx context.Context, lv slog.Level, format string, v []any) {
	f.log(ctx, lv, func() string { return fmt.Sprintf(format, v...) })
}

func (f *frameworkLogger) Trace(v ...any)                 { f.print(bg, levelTrace, v) }
func (f *frameworkLogger) Debug(v ...any)                 { f.print(bg, slog.LevelDebug, v) }
func (f *frameworkLogger) Info(v ...any)                  { f.print(bg, slog.LevelInfo, v) }
func (f *frameworkLogger) Notice(v ...any)                { f.print(bg, levelNotice, v) }
func (f *frameworkLogger) Warn(v ...any)                  { f.print(bg, slog.LevelWarn, v) }
func (f *frameworkLogger) Error(v ...any)                 { f.print(bg, slog.LevelError, v) }
func (f *frameworkLogger) Fatal(v ...any)                 { f.print(bg, levelFatal, v) }
func (f *frameworkLogger) Tracef(format string, v ...any) { f.printf(bg, levelTrace, format, v) }
func (f *frameworkLogger) Debugf(format string, v ...any) { f.printf(bg, slog.LevelDebug, format, v) }
func (f *frameworkLogger) Infof(format string, v ...any)  { f.printf(bg, slog.LevelInfo, format, v) }
func (f *frameworkLogger) Noticef(format string, v ...any) {
	f.printf(bg, levelNotice, format, v)
}
func (f *frameworkLogger) Warnf(format string, v ...any)  { f.printf(bg, slog.LevelWarn, format, v) }
func (f *frameworkLogger) Errorf(format string, v ...any) { f.printf(bg, slog.LevelError, format, v) }
func (f *frameworkLogger) Fatalf(format string, v ...any) { f.printf(bg, levelFatal, format, v) }
func (f *frameworkLogger) CtxTracef(ctx context.Context, format string, v ...any) {
	f.printf(ctx, levelTrace, format, v)
}
func (f *frameworkLogger) CtxDebugf(ctx context.Context, format string, v ...any) {
	f.printf(ctx, slog.LevelDebug, format, v)
}
func (f *frameworkLogger) CtxInfof(ctx context.Context, format string, v ...any) {
	f.printf(ctx, slog.LevelInfo, format, v)
}
func (f *frameworkLogger) CtxNoticef(ctx context.Context, format string, v ...any) {
	f.printf(ctx, levelNotice, format, v)
}
func (f *frameworkLogger) CtxWarnf(ctx context.Context, format string, v ...any) {
	f.printf(ctx, slog.LevelWarn, format, v)
}
func (f *frameworkLogger) CtxErrorf(ctx context.Context, format string, v ...any) {
	f.printf(ctx, slog.LevelError, format, v)
}
func (f *frameworkLogger) CtxFatalf(ctx context.Context, format string, v ...any) {
	f.printf(ctx, levelFatal, format, v)
}

// SetOutput sends the framework's logs, and the other framework's, as JSON
// to w.
func (f *frameworkLogger) SetOutput(w io.Writer) {
	frameworkTarget.Store(slog.New(slog.NewJSONHandler(w, nil)))
}

// hertzLogger is Hertz's hlog.FullLogger over slog.
type hertzLogger struct{ frameworkLogger }

var _ hlog.FullLogger = (*hertzLogger)(nil)

func (h *hertzLogger) SetLevel(lv hlog.Level) { h.level.Store(int64(slogLevel(int(lv)))) }

// kitexLogger is Kitex's klog.FullLogger over slog.
type kitexLogger struct{ frameworkLogger }

var _ klog.FullLogger = (*kitexLogger)(nil)

func (k *kitexLogger) SetLevel(lv klog.Level) { k.level.Store(int64(slogLevel(int(lv)))) }

// slogLevel maps the frameworks' levels, which are the same in both (trace,
// debug, info, notice, warn, error, fatal from 0), to slog's.
func slogLevel(lv int) slog.Level {
	levels := [...]slog.Level{levelTrace, slog.LevelDebug, slog.LevelInfo, levelNotice, slog.LevelWarn, slog.LevelError, levelFatal}
	if lv < 0 {
		return levelTrace
	}
	return levels[min(lv, len(levels)-1)]
}
