package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/credswap/credswap/creds"
)

// SwitchResult is the outcome of asking a session to move to a newer
// credential generation.
type SwitchResult int

// Switch outcomes.
const (
	// SwitchDone means the session now uses a connection of the target generation
	// (or already did).
	SwitchDone SwitchResult = iota
	// SwitchBusy means the session is not at a safe point; it switches by
	// itself at its next one.
	SwitchBusy
	// SwitchPinned means the session holds state that cannot be moved; it
	// is retried when the session next reaches a safe point.
	SwitchPinned
	// SwitchFailed means capture, connect or replay failed; the session
	// stays on its connection and the switch is retried later.
	SwitchFailed
)

var switchNames = [...]string{SwitchDone: "ok", SwitchBusy: "busy", SwitchPinned: "pinned", SwitchFailed: "failed"}

// String returns the result label used in metrics.
func (r SwitchResult) String() string {
	if int(r) < len(switchNames) {
		return switchNames[r]
	}
	return "unknown"
}

// Session is one authenticated client connection as the protocol-neutral
// core sees it. Implementations live in the protocol packages; every method
// is safe to call from any goroutine.
type Session interface {
	// ID is unique within the process.
	ID() uint64
	// Generation is the credential generation of the session's backend connection.
	Generation() uint64
	// PoolKey identifies backend connections this session could use.
	PoolKey() string
	// Info is a snapshot for the admin API.
	Info() SessionInfo
	// Switch moves the session to a backend connection of gen if it is at
	// a safe point, replaying its state there. It does not wait for a busy
	// session; such a session switches itself at its next safe point.
	Switch(ctx context.Context, gen *creds.Generation) (SwitchResult, error)
	// DialSpare logs in a new backend connection of gen with this session's
	// parameters, for the warm pool.
	DialSpare(ctx context.Context, gen *creds.Generation) (PooledConn, error)
	// Terminate closes the session, sending err to the client first if
	// the protocol allows. It does not wait for the session to end.
	Terminate(err *Error)
}

// StateIdle is SessionInfo.State of a session waiting for its client's
// next command outside a transaction.
const StateIdle = "idle"

// SessionInfo describes a session for /v1/status.
type SessionInfo struct {
	ID          uint64    `json:"id"`
	Client      string    `json:"client"`
	User        string    `json:"user"`
	Database    string    `json:"database"`
	Generation  uint64    `json:"generation"`
	State       string    `json:"state"`
	ConnectedAt time.Time `json:"connected_at"`
	// PinReason is set while the session holds state that cannot move.
	PinReason   string    `json:"pin_reason,omitempty"`
	PinnedSince time.Time `json:"pinned_since,omitzero"`
	// SwitchFailure is set while the session's switches keep failing and
	// it waits before the next attempt.
	SwitchFailure *SwitchFailure `json:"switch_failure,omitempty"`
}

// Registry holds the live sessions of one backend. Safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	sessions map[uint64]Session
	removed  func()
	empty    chan struct{} // closed while there are no sessions
}

// NewRegistry returns an empty registry; removed, if not nil, is called
// (without locks held) after each Remove.
func NewRegistry(removed func()) *Registry {
	empty := make(chan struct{})
	close(empty)
	return &Registry{sessions: make(map[uint64]Session), removed: removed, empty: empty}
}

// Add registers s.
func (r *Registry) Add(s Session) {
	r.mu.Lock()
	if len(r.sessions) == 0 {
		r.empty = make(chan struct{})
	}
	r.sessions[s.ID()] = s
	r.mu.Unlock()
}

// Remove unregisters s.
func (r *Registry) Remove(s Session) {
	r.mu.Lock()
	if _, ok := r.sessions[s.ID()]; ok {
		delete(r.sessions, s.ID())
		if len(r.sessions) == 0 {
			close(r.empty)
		}
	}
	r.mu.Unlock()
	if r.removed != nil {
		r.removed()
	}
}

// Empty returns a channel that is closed while no session is registered.
func (r *Registry) Empty() <-chan struct{} {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.empty
}

// Len returns the number of sessions.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.sessions)
}

// Snapshot returns the sessions at this moment.
func (r *Registry) Snapshot() []Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, s)
	}
	return out
}

// Behind returns the sessions whose generation is below gen.
func (r *Registry) Behind(gen uint64) []Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Session
	for _, s := range r.sessions {
		if s.Generation() < gen {
			out = append(out, s)
		}
	}
	return out
}
