// Package mysql is the MySQL and MariaDB side of credswap: the front end
// that terminates client connections with go-mysql's server package (TLS,
// caching_sha2_password and mysql_native_password against local users,
// the database and connection attributes of the handshake), the back end
// that logs in to the database with the current credential through
// go-mysql's client package and takes over the raw connection, the packet
// relay, and the live switch of a session to a new backend connection
// with its state replayed.
//
// Every login to the database (sessions, test logins, KILL, and through
// LoginGuard the rotations' go-sql-driver logins) obeys upstream_auth:
// unless upstream TLS verifies the server, it answers scrambles only, and
// a LoginGuard between the client library and the server breaks the login
// off before the library could hand over the password (docs/security.md,
// "The upstream").
//
// # Relay
//
// MySQL is a strict command/response protocol, so each session runs on
// one goroutine: it waits for the client's next command without holding
// a buffer, forwards its frames (4-byte header and payload, never decoded
// beyond what the state machine needs), and relays the response frame by
// frame, reading only packet headers: the status flags of OK and EOF
// packets (IN_TRANS, MORE_RESULTS, CURSOR_EXISTS), column counts, and
// PREPARE_OK. Statement ids are the proxy's own: PREPARE_OK carries an id
// the session mints, and EXECUTE, FETCH, RESET, CLOSE and SEND_LONG_DATA
// have it mapped to the backend's, so the client's ids survive switches.
// The text of COM_QUERY is lexed for the few statements whose effect the
// relay must know (temporary tables, GET_LOCK, LOCK TABLES, XA, HANDLER,
// SQL PREPARE, KILL, user variables).
//
// A command's first frame is read whole (commandReady says which need
// less) into a buffer that grows as its bytes arrive, never to the length
// its header declares, with the growth past a pooled buffer taken from the
// process' memory budget (proxy.MemoryBudget): a session the budget cannot
// serve is not read until memory is given back, and past the budget's
// wait bound it ends with ERR 1041. COM_STMT_SEND_LONG_DATA streams after
// its statement id.
//
// A server speaks unasked only to end a connection (wait_timeout, KILL,
// shutdown). Once a session has waited a moment for its client, a second
// goroutine waits for its backend connection to become readable, taking
// nothing from it, and then ends the client connection the same way at
// once; whoever takes the session's lock (a command, a switch) stops it
// first. A backend connection that ends under a command ends the client's
// without an ERR, as the server's would. Errors the proxy sends itself
// never carry the client libraries' numbers (2000–2999).
//
// Capabilities that change what goes over the wire (DEPRECATE_EOF,
// QUERY_ATTRIBUTES, MULTI_STATEMENTS, MULTI_RESULTS, PS_MULTI_RESULTS,
// SESSION_TRACK, FOUND_ROWS, IGNORE_SPACE, LOCAL_FILES) are negotiated
// identically on both legs: the client's flags intersected with what the
// proxy's greeting offered, which in turn is what the proxy supports and
// the database announced. The greeting itself is go-mysql's with the
// server version, connection id, capabilities and collation replaced.
//
// # Safe points and switches
//
// A session may change backend connections between commands when the
// last status had IN_TRANS clear (and, with autocommit off, nothing ran
// since COMMIT or ROLLBACK) and no SEND_LONG_DATA waits for its EXECUTE.
// A switch (docs/swap.md) reads the session's changed variables, user
// variables, current database and LAST_INSERT_ID() on the old connection
// in one query, replays them on a warm connection of the new generation
// in one pipelined round trip together with the SQL and protocol-level
// prepared statements, and closes the old connection. Temporary tables,
// GET_LOCK locks, LOCK TABLES, XA transactions, HANDLERs and open cursors
// pin a session to its connection until they are gone.
//
// Connection ids in the greeting are minted by the proxy; KILL and
// COM_PROCESS_KILL for them reach the session's current backend thread.
// CONNECTION_ID() returns the backend's thread id, which changes with a
// switch.
package mysql
