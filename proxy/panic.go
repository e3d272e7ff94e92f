package proxy

import (
	"fmt"
	"runtime/debug"

	"go.uber.org/zap"
)

// ErrInternalSession is what a client is told when its session ended
// because of a failure inside the proxy (a recovered panic).
var ErrInternalSession = Errorf(CodeInternal, nil, "internal proxy error; this session was ended and no other session is affected")

// RecordPanic logs a panic recovered in a goroutine working for session id
// (0 when no session is known), with its stack, and counts it in
// credswap_session_panics_total. The caller recovered r and ends that one
// session; no other session is affected.
func (b *Backend) RecordPanic(id uint64, where string, r any) {
	b.m.sessionPanics.Inc()
	b.log.Error("panic in a session goroutine; only that session is ended",
		zap.Uint64("session", id), zap.String("where", where),
		zap.String("panic", fmt.Sprint(r)), zap.ByteString("stack", debug.Stack()))
}

// Recover, deferred directly by a goroutine the core starts for session s
// (defer b.Recover(s, "drain")), turns a panic into the end of s alone:
// it records the panic and terminates s with ErrInternalSession.
func (b *Backend) Recover(s Session, where string) {
	r := recover()
	if r == nil {
		return
	}
	var id uint64
	if s != nil {
		id = s.ID()
	}
	b.RecordPanic(id, where, r)
	if s != nil {
		b.terminateSafely(s)
	}
}

// terminateSafely terminates s; a second panic, from Terminate itself, is
// only recorded, so that a deferred Recover never panics.
func (b *Backend) terminateSafely(s Session) {
	defer func() {
		if r := recover(); r != nil {
			b.RecordPanic(s.ID(), "terminate", r)
		}
	}()
	s.Terminate(ErrInternalSession)
}
