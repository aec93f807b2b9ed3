package proxy

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// slogCore is a zapcore.Core that hands certmagic's log entries to
// tollgate's slog handler, so they land where every other operational
// message does, at the handler's level (debug entries are dropped unless
// it shows debug).
type slogCore struct {
	h      slog.Handler
	fields []zapcore.Field
}

func newSlogCore(h slog.Handler) zapcore.Core { return &slogCore{h: h} }

// slogLevel maps zap's levels onto slog's four.
func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{h: c.h, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Write turns the entry's fields into attributes, in key order: zap's
// encoder flattens every field type (errors, durations, arrays) for us.
func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	component := "certmagic"
	if name := strings.Trim(e.LoggerName, "."); name != "" {
		component += "." + name
	}
	r.AddAttrs(slog.String("component", component))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		v := enc.Fields[k]
		if d, ok := v.(time.Duration); ok {
			v = d.String() // "1m0s" rather than slog's nanoseconds
		}
		r.AddAttrs(slog.Any(k, v))
	}
	return c.h.Handle(context.Background(), r)
}

func (c *slogCore) Sync() error { return nil }
