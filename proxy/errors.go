package proxy

import (
	"errors"
	"fmt"
)

// Code classifies what went wrong for a client in protocol-neutral terms.
// Each protocol maps a Code to its own error (a PostgreSQL SQLSTATE, a MySQL
// error number); metrics and logs group failures by Code.String.
type Code int

// The codes a client can see.
const (
	// CodeInternal is an unexpected failure inside the proxy.
	CodeInternal Code = iota
	// CodeClientAuthFailed is a wrong local password or unknown local user.
	CodeClientAuthFailed
	// CodeTLSRequired is a plaintext connection to a listener that requires TLS.
	CodeTLSRequired
	// CodeTooManyClients is a connection past max_client_conns.
	CodeTooManyClients
	// CodeShutdown is a session closed because the proxy is stopping.
	CodeShutdown
	// CodeBackendUnavailable is a backend connection that could not be made in time.
	CodeBackendUnavailable
	// CodeBackendLost is a backend connection that ended under a session.
	CodeBackendLost
	// CodeProtocolViolation is a client message that breaks the protocol.
	CodeProtocolViolation
	// CodeMessageTooLarge is a client message longer than max_message_size.
	CodeMessageTooLarge
	// CodeHandshakeTimeout is a client that did not finish logging in in time.
	CodeHandshakeTimeout
	// CodeDrainDeadline is a session closed because it stayed on a replaced
	// credential past drain_deadline with on_deadline: close.
	CodeDrainDeadline
	// CodeFeatureNotSupported is a request the proxy refuses (e.g. replication).
	CodeFeatureNotSupported
	// CodeClientDisconnected is a client that closed its connection in the
	// middle of logging in (psql does, to prompt for a password). Nothing
	// is sent to it; it is counted apart from authentication failures.
	CodeClientDisconnected
	// CodeOutOfMemory is a session ended because the memory for partially
	// received client messages (limits.max_partial_message_memory) stayed
	// used up by other sessions for longer than it may wait.
	CodeOutOfMemory
)

var codeNames = [...]string{
	CodeInternal:            "internal",
	CodeClientAuthFailed:    "client_auth_failed",
	CodeTLSRequired:         "tls_required",
	CodeTooManyClients:      "too_many_clients",
	CodeShutdown:            "shutdown",
	CodeBackendUnavailable:  "backend_unavailable",
	CodeBackendLost:         "backend_lost",
	CodeProtocolViolation:   "protocol_violation",
	CodeMessageTooLarge:     "message_too_large",
	CodeHandshakeTimeout:    "handshake_timeout",
	CodeDrainDeadline:       "drain_deadline",
	CodeFeatureNotSupported: "feature_not_supported",
	CodeClientDisconnected:  "client_disconnected",
	CodeOutOfMemory:         "out_of_memory",
}

// String returns the snake_case name used as the metrics label.
func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", int(c))
}

// Error is a failure to be reported to a client. Msg is safe to send to the
// client; Err is the internal cause, logged but never sent.
type Error struct {
	Code Code
	Msg  string
	Err  error
}

// Errorf returns an *Error with a client-safe message and an optional cause.
func Errorf(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// Error includes the cause, for logs.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// AsError returns err as an *Error, wrapping anything else as CodeInternal
// with a generic client message.
func AsError(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	return &Error{Code: CodeInternal, Msg: "internal proxy error", Err: err}
}

// ErrPermanent marks a backend connection error that retrying cannot fix
// (the database does not exist, the user may not connect to it, a startup
// parameter is invalid). Backend.Connect returns such errors at once so
// that the client learns the reason without waiting for connect_timeout.
var ErrPermanent = errors.New("permanent backend error")

// ErrDatabaseFull marks a backend login the database refused for lack of
// connection slots (PostgreSQL 53300, MySQL 1040 and 1203). A drain backs
// off and tries again; a client never sees it from a drain.
var ErrDatabaseFull = errors.New("the database has no connection slot free")

// ErrUpstreamAuthRefused marks a backend login the proxy broke off
// because the database (or whoever answered on its address) asked for a
// password exchange that upstream_auth does not allow, such as the
// cleartext password without verified TLS (docs/security.md). It is
// always also ErrPermanent: asking again gets the same request.
var ErrUpstreamAuthRefused = errors.New("refused the database's authentication request")
