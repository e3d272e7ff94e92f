package postgres

import (
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credswap/credswap/proxy"
)

// sqlState maps a proxy error code to the SQLSTATE a PostgreSQL client
// expects (https://www.postgresql.org/docs/current/errcodes-appendix.html).
func sqlState(c proxy.Code) string {
	switch c {
	case proxy.CodeClientAuthFailed:
		return "28P01" // invalid_password
	case proxy.CodeTLSRequired:
		return "28000" // invalid_authorization_specification
	case proxy.CodeTooManyClients:
		return "53300" // too_many_connections
	case proxy.CodeShutdown, proxy.CodeDrainDeadline:
		return "57P01" // admin_shutdown
	case proxy.CodeBackendUnavailable:
		return "08001" // sqlclient_unable_to_establish_sqlconnection
	case proxy.CodeBackendLost, proxy.CodeHandshakeTimeout:
		return "08006" // connection_failure
	case proxy.CodeProtocolViolation, proxy.CodeMessageTooLarge:
		return "08P01" // protocol_violation
	case proxy.CodeFeatureNotSupported:
		return "0A000" // feature_not_supported
	case proxy.CodeOutOfMemory:
		return "53200" // out_of_memory
	}
	return "XX000" // internal_error
}

// appendFatal appends a FATAL ErrorResponse carrying e's client-safe
// message; e.Err is never sent.
func appendFatal(dst []byte, e *proxy.Error) []byte {
	msg := &pgproto3.ErrorResponse{
		Severity:            "FATAL",
		SeverityUnlocalized: "FATAL",
		Code:                sqlState(e.Code),
		Message:             e.Msg,
	}
	out, err := msg.Encode(dst)
	if err != nil { // only on absurd lengths; keep the connection's bytes sane
		return dst
	}
	return out
}
