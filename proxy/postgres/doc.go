// Package postgres is the PostgreSQL side of credswap: the front end that
// terminates client connections (SSLRequest and direct TLS, GSSENCRequest,
// CancelRequest, protocol negotiation, SCRAM-SHA-256[-PLUS], md5 and
// cleartext-over-TLS authentication against local users), the back end that
// logs in to the database with the current credential through pgconn and
// hijacks the connection, the frame relay, and the live switch of a
// session to a new backend connection with its state replayed. Every
// login to the database answers only the authentication requests
// upstream_auth allows (SCRAM-SHA-256 unless upstream TLS verifies the
// server; docs/security.md, "The upstream").
//
// # Relay
//
// Plaintext sessions on Linux are relayed by epoll loops (Loops): a loop
// owns the descriptors of many sessions and, per batch, does one read and
// one write and no goroutine switch; an idle session costs no goroutine
// and no buffer. TLS sessions use two goroutines each, the client reader
// (clientLoop) and the backend reader (backendLoop). Either way the relay
// forwards whole batches and decodes only message headers, except for the
// few messages the state machine needs whole: Query and Parse from the
// client (custom setting names, the unnamed statement), ReadyForQuery,
// ParameterStatus and ErrorResponse from the server. See
// docs/architecture.md for why there are two relays.
//
// A message read whole is held in a buffer that grows as its bytes
// arrive, never to the length its header declares. On the client side
// the growth past a pooled buffer is taken from the process' memory
// budget (proxy.MemoryBudget): a session the budget cannot serve is not
// read (a loop parks its client socket) until memory is given back, and
// past the budget's wait bound it ends with FATAL 53200.
//
// # Safe points and switches
//
// A session may change backend connections only when nothing is in
// flight: the last ReadyForQuery said idle, every Sync, Query and
// FunctionCall has been answered, no extended-protocol message was sent
// since the last Sync, and no COPY is running. A switch (docs/swap.md)
// pauses the backend reader at a message boundary, captures the session's
// state on the old connection in one round trip, replays it on a warm
// connection of the new generation in one more, forwards what the old
// connection still delivered, sends the client the ParameterStatus values
// that changed, and resumes the reader on the new connection. Temporary
// tables, WITH HOLD cursors and session advisory locks pin a session to
// its connection until they are gone.
//
// Cancel keys are minted by the proxy and mapped to the session's current
// backend process, so cancels keep working across switches.
package postgres
