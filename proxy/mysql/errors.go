package mysql

import (
	"fmt"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/credswap/credswap/proxy"
)

// MySQL error numbers the proxy sends or recognizes
// (https://mariadb.com/kb/en/mariadb-error-code-reference/). Numbers
// 2000–2999 belong to the client libraries (2003 "Can't connect", 2013
// "Lost connection"), which report them for failures they see themselves:
// the proxy never sends one, because libmariadb (the mariadb CLI,
// sysbench, the Python and PHP connectors built on it) turns a server ERR
// carrying one into "2027 Received malformed packet".
const (
	erConCount            = 1040 // too many connections
	erTooManyUserConns    = 1203 // max_user_connections reached
	erOutOfResources      = 1041 // out of memory, as a server that cannot grow a packet buffer
	erDBAccessDenied      = 1044
	erAccessDenied        = 1045
	erUnknownCom          = 1047
	erBadDB               = 1049
	erServerShutdown      = 1053
	erHandshake           = 1043
	erUnknownError        = 1105
	erNetPacketTooLarge   = 1153
	erNotSupportedYet     = 1235
	erConnectionKilled    = 1927 // MariaDB; MySQL uses 1053 for a killed connection
	erSecureTransportReq  = 3159
	erMustChangePassword  = 1820
	erPasswordExpired     = 1862
	erAccountLockedMySQL  = 3118
	erAccountLockedMaria  = 4151
	erUnknownStmtHandler  = 1243
	erWrongArgumentsStmt  = 1210
	erQueryInterrupted    = 1317
	erSpecificAccessDenie = 1227
)

// myError is an ERR packet: code, SQLSTATE and a message that is safe to
// send to the client.
type myError struct {
	Code    uint16
	State   string
	Message string
}

func (e *myError) Error() string {
	return fmt.Sprintf("ERROR %d (%s): %s", e.Code, e.State, e.Message)
}

// errorFor maps a protocol-neutral proxy error to the ERR packet a MySQL
// client expects; e.Err is never sent.
func errorFor(e *proxy.Error) *myError {
	code, state := errorCode(e.Code)
	return &myError{Code: code, State: state, Message: e.Msg}
}

// errorCode maps a proxy.Code to a MySQL error number and SQLSTATE.
func errorCode(c proxy.Code) (uint16, string) {
	switch c {
	case proxy.CodeClientAuthFailed:
		return erAccessDenied, "28000"
	case proxy.CodeTLSRequired:
		return erSecureTransportReq, "HY000"
	case proxy.CodeTooManyClients:
		return erConCount, "08004"
	case proxy.CodeShutdown, proxy.CodeDrainDeadline:
		return erServerShutdown, "08S01"
	case proxy.CodeBackendUnavailable, proxy.CodeBackendLost:
		// The database cannot be reached, or the proxy cannot go on with
		// the session's connection to it: a server error that every client
		// takes as the end of the connection (SQLSTATE 08S01, communication
		// link failure). A backend connection that the database simply
		// ended is passed on as a close instead, with no ERR (finish).
		return erServerShutdown, "08S01"
	case proxy.CodeProtocolViolation:
		return erUnknownCom, "08S01"
	case proxy.CodeMessageTooLarge:
		return erNetPacketTooLarge, "08S01"
	case proxy.CodeHandshakeTimeout:
		return erHandshake, "08S01"
	case proxy.CodeFeatureNotSupported:
		return erNotSupportedYet, "42000"
	case proxy.CodeOutOfMemory:
		return erOutOfResources, "HY000"
	}
	return erUnknownError, "HY000"
}

// goMyError converts e for go-mysql's server, which sends a *MyError as it
// is (any other error would reach the client with its internal text).
func goMyError(e *myError) *gomysql.MyError {
	return &gomysql.MyError{Code: e.Code, State: e.State, Message: e.Message}
}
