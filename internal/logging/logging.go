// Package logging holds what credswap's logs need beyond zap: a marker
// for security events (failed client logins, admin API calls, rotation
// phases) and a sampling core that never drops entries carrying it.
package logging

import (
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// AuditKey is the key of the field Audit adds; such entries show
// "audit": true in the log.
const AuditKey = "audit"

// Audit returns the field that marks a log entry as a security event that
// must never be sampled away. Put it in the entry's fields or in a
// logger's With fields (every entry of that logger is then marked).
func Audit() zap.Field { return zap.Bool(AuditKey, true) }

// NewSampledCore wraps core with zap's sampling for unmarked entries:
// within each tick, the first `first` entries with the same level and
// message are written, then every `thereafter`th. Entries marked with
// Audit, in their own fields or in the logger's, are always written.
func NewSampledCore(core zapcore.Core, tick time.Duration, first, thereafter int) zapcore.Core {
	return &sampledCore{
		Core:    core,
		sampler: zapcore.NewSamplerWithOptions(admitCore{core}, tick, first, thereafter),
	}
}

// sampledCore writes to Core what the sampler admits or what is marked.
// Marks are seen only in Write (fields are not known in Check), so Check
// admits every enabled entry and Write asks the sampler.
type sampledCore struct {
	zapcore.Core              // the unsampled core, with the logger's fields
	sampler      zapcore.Core // shared by every core derived with With
	audit        bool         // the logger's fields carry Audit
}

func (c *sampledCore) With(fields []zapcore.Field) zapcore.Core {
	return &sampledCore{Core: c.Core.With(fields), sampler: c.sampler, audit: c.audit || hasAudit(fields)}
}

func (c *sampledCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *sampledCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	if !c.audit && !hasAudit(fields) && c.sampler.Check(ent, nil) == nil {
		return nil // sampled away
	}
	return c.Core.Write(ent, fields)
}

func hasAudit(fields []zapcore.Field) bool {
	for _, f := range fields {
		if f.Key == AuditKey && f.Type == zapcore.BoolType && f.Integer == 1 {
			return true
		}
	}
	return false
}

// admitCore is the sampler's inner core: its Check admits every enabled
// entry, so that a non-nil CheckedEntry from the sampler means "write".
// It never writes anything itself.
type admitCore struct{ zapcore.LevelEnabler }

func (a admitCore) With([]zapcore.Field) zapcore.Core { return a }

func (a admitCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if a.Enabled(ent.Level) {
		return ce.AddCore(ent, a)
	}
	return ce
}

func (admitCore) Write(zapcore.Entry, []zapcore.Field) error { return nil }

func (admitCore) Sync() error { return nil }
