package proxy

import (
	"errors"
	"sync"
	"time"
)

// Stages of a switch, as reported when one fails.
const (
	StageCapture  = "capture"  // reading the session's state on its old connection
	StageConnect  = "connect"  // getting a connection of the new generation
	StageReplay   = "replay"   // restoring the state on the new connection
	StageInternal = "internal" // a failure inside the proxy
)

// SwitchError is a failed switch attempt: which stage failed and why.
type SwitchError struct {
	Stage string
	Err   error
}

func (e *SwitchError) Error() string { return e.Stage + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *SwitchError) Unwrap() error { return e.Err }

// Backoff bounds for the switch attempts of one session after failures:
// the first retry waits switchRetryMin, each further failure doubles the
// wait up to switchRetryMax.
const (
	switchRetryMin = 100 * time.Millisecond
	switchRetryMax = 10 * time.Second
)

// SwitchFailure describes a session whose switches keep failing, for
// /v1/status.
type SwitchFailure struct {
	// Stage is the part of the last attempt that failed (capture,
	// connect, replay, internal).
	Stage string `json:"stage"`
	// Error is why (database errors name users, never passwords).
	Error string `json:"error"`
	// Failures counts consecutive failed attempts.
	Failures int       `json:"failures"`
	Since    time.Time `json:"since"`
	// RetryAt is the earliest next attempt.
	RetryAt time.Time `json:"retry_at"`
	// Generation is the credential generation the last attempt aimed at;
	// a newer one is tried at once.
	Generation uint64 `json:"generation"`
}

// SwitchRetry spaces out the switch attempts of one session after failed
// ones, exponentially up to a cap, so that a session whose state cannot be
// replayed does not log in to the database before every statement. The
// zero value is ready. Safe for concurrent use.
type SwitchRetry struct {
	mu   sync.Mutex
	fail *SwitchFailure
}

// Ready reports whether a switch to generation gen may be attempted at
// now: there is no backoff, it has run out, or gen is newer than the one
// the failed attempts aimed at (a new credential deserves a fresh try: the
// old one may have failed only because it was already superseded).
func (r *SwitchRetry) Ready(now time.Time, gen uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fail == nil || gen > r.fail.Generation || !now.Before(r.fail.RetryAt)
}

// Record notes the outcome of an attempt at generation gen made at now. A
// failure with a *SwitchError keeps its stage; other errors count as
// StageInternal. Any other result clears the backoff.
func (r *SwitchRetry) Record(now time.Time, gen uint64, res SwitchResult, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if res != SwitchFailed {
		if res != SwitchBusy {
			r.fail = nil
		}
		return
	}
	stage, msg := StageInternal, "unknown error"
	var se *SwitchError
	if errors.As(err, &se) {
		stage = se.Stage
	}
	if err != nil {
		msg = err.Error()
	}
	f := r.fail
	if f == nil {
		f = &SwitchFailure{Since: now}
		r.fail = f
	}
	f.Stage, f.Error, f.Generation = stage, msg, gen
	f.Failures++
	wait := switchRetryMin << min(f.Failures-1, 20)
	f.RetryAt = now.Add(min(wait, switchRetryMax))
}

// Failure returns a copy of the current failure, or nil.
func (r *SwitchRetry) Failure() *SwitchFailure {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail == nil {
		return nil
	}
	f := *r.fail
	return &f
}
