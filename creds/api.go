package creds

import (
	"context"
	"errors"
	"time"
)

// ErrRejected marks an error where the database refused a credential
// (PostgreSQL 28P01/28000, MySQL 1045). Verify functions and dialers wrap it
// so that callers can tell a bad credential from an unreachable database.
var ErrRejected = errors.New("credential rejected by the database")

// Source reads the backend credential from where it is kept.
type Source interface {
	// Kind names the source type: "file", "env".
	Kind() string
	// Fetch reads the current credential. It never returns a partially
	// filled Credential together with a nil error.
	Fetch(ctx context.Context) (Credential, error)
}

// Watcher is implemented by sources that can announce changes.
type Watcher interface {
	// Watch calls changed whenever the credential may have changed
	// (debounced, possibly spuriously) until ctx is done, then returns.
	// changed must not block.
	Watch(ctx context.Context, changed func()) error
}

// Retirer is implemented by sources whose credentials hold something that
// should be released once no session uses them, such as Vault leases.
type Retirer interface {
	// Retire releases every credential the source handed out except those
	// in keep. The Store calls it when a drain has completed: no session
	// uses an older generation any more.
	Retire(ctx context.Context, keep ...Credential) error
}

// VerifyFunc performs a test login with c. It returns nil when the database
// accepts c and an error wrapping ErrRejected when the database refuses it.
type VerifyFunc func(ctx context.Context, c Credential) error

// Generation is one adopted credential. Generations are numbered from 1 and
// never change once adopted.
type Generation struct {
	// N is the generation number.
	N uint64
	// Cred is the credential.
	Cred Credential
	// AdoptedAt is when the store adopted it.
	AdoptedAt time.Time
	// Verified reports whether a test login succeeded before adoption. Only
	// the very first generation can be adopted unverified (when the database
	// is unreachable at start-up).
	Verified bool
}

// Status is a point-in-time view of a Store for /v1/status and metrics. It
// never holds a password.
type Status struct {
	Current  *GenerationInfo `json:"current"`
	Fallback *GenerationInfo `json:"fallback,omitempty"`
	// Source is the source kind.
	Source string `json:"source"`
	// LastRefresh is when the source was last read successfully.
	LastRefresh time.Time `json:"last_refresh"`
	// LastError is the latest failure to read or adopt a credential; it is
	// cleared by the next successful adoption or refresh that finds no change.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Failing is true while a changed credential is being retried.
	Failing bool `json:"failing"`
	// AdoptionFailures counts failed adoptions and source read errors since start.
	AdoptionFailures uint64 `json:"adoption_failures"`
}

// GenerationInfo describes a generation without its password.
type GenerationInfo struct {
	Generation uint64    `json:"generation"`
	Username   string    `json:"username"`
	Version    string    `json:"version,omitempty"`
	Source     string    `json:"source"`
	Expiry     time.Time `json:"expiry,omitzero"`
	AdoptedAt  time.Time `json:"adopted_at"`
	Verified   bool      `json:"verified"`
}
