// Package proxy is the protocol-neutral core of credswap: the accept loop
// (Server), the runtime of one configured backend (Backend: client limit,
// credential Store, Pool of idle backend connections by generation, session
// Registry, drain controller), switch outcomes, Prometheus metrics, the
// client-facing error codes, and the MemoryBudget that bounds what all
// sessions of a process hold in client messages still arriving.
//
// Protocol packages (proxy/postgres) implement Handler for accepted
// connections and Session for authenticated clients, and report into the
// Backend. The Backend never touches the wire: it decides when sessions
// should move to a newer credential generation (Target), warms a few
// connections for them, asks each to Switch at its safe point (as a
// pipeline within DrainConnectionBudget extra backend connections), and
// applies the drain deadline. Before a session holds a slot, its
// connection holds a turn of the HandshakeGate, and the AuthThrottle makes
// repeated failed logins wait.
//
// Generations: every credential the Store adopts gets the next number.
// Backend connections and sessions carry the generation they logged in
// with. Store.Current is what new connections use at once; Target trails
// it while the drain controller pre-dials the first connections of the
// new generation; each later switch warms its own connection just before
// it, so that the switch itself costs no login.
//
// Concurrency: every exported method is safe for concurrent use unless
// its comment says otherwise. Metrics gauges are computed when scraped, so
// the relay's hot path touches no shared state.
package proxy
