package proxy

import (
	"container/list"
	"errors"
	"net"
	"sync"
	"time"
)

// ErrHandshakesFull is returned by HandshakeGate.Enter when a connection
// can neither start its handshake nor wait for a turn.
var ErrHandshakesFull = errors.New("too many connections are logging in")

// evictAfter is how long a handshake must have been running before a newer
// connection may take its place. A client that logs in normally is done
// well within it (SCRAM with 4096 iterations takes a few milliseconds); a
// connection that sends nothing, or only its first message, is not.
const evictAfter = 100 * time.Millisecond

// HandshakeGate bounds the client connections that have not authenticated
// yet, in total and per source address, apart from the sessions that have
// (Backend.Admit).
//
// A connection whose source is at its limit takes the place of that
// source's oldest handshake if it has been running for evictAfter (it is
// closed), and otherwise waits for a turn. A connection that finds the total
// limit reached takes the place of the oldest handshake of the busiest other
// source: at once if that source holds more handshakes than the newcomer's
// would, if it would hold as many only when that handshake has been running
// for evictAfter; otherwise it waits. Waits end at the connection's
// handshake deadline, and no more connections wait than may run.
//
// A flood of connections that never log in therefore costs the flood's
// sources their own turns, and a valid login from an address that holds
// fewer handshakes than the flood's addresses is never displaced, however
// long it takes. Only a flood from about as many addresses as the total
// limit competes with it on equal terms. Safe for concurrent use.
type HandshakeGate struct {
	max, perSource int

	mu      sync.Mutex
	active  list.List // of *Handshake, oldest first
	sources map[string]*sourceTurns
	waiting int
	// changed is closed and replaced whenever a turn ends.
	changed chan struct{}

	evicted func() // counts an eviction; may be nil
	now     func() time.Time
}

type sourceTurns struct {
	active list.List // of *Handshake, oldest first
}

// Handshake is one connection's turn. Done ends it.
type Handshake struct {
	g       *HandshakeGate
	conn    net.Conn
	src     string
	start   time.Time
	all     *list.Element
	bySrc   *list.Element
	evicted bool
}

// NewHandshakeGate returns a gate for at most max handshakes at once and at
// most perSource from one address (0: no per-source limit).
func NewHandshakeGate(max, perSource int) *HandshakeGate {
	return &HandshakeGate{max: max, perSource: perSource, sources: make(map[string]*sourceTurns),
		changed: make(chan struct{}), now: time.Now}
}

// sourceOf returns the address conn came from without its port.
func sourceOf(conn net.Conn) string {
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		return conn.RemoteAddr().String()
	}
	return host
}

// Enter starts conn's handshake, waiting until deadline for a turn when its
// scope is full and no handshake there can be displaced. It returns
// ErrHandshakesFull when the wait would exceed deadline or too many
// connections wait already (as many as may log in at once); the caller then
// refuses conn.
func (g *HandshakeGate) Enter(conn net.Conn, deadline time.Time) (*Handshake, error) {
	src := sourceOf(conn)
	g.mu.Lock()
	waited := false
	for {
		var evict []*Handshake
		ok := true
		st := g.sources[src]
		if g.perSource > 0 && st != nil && st.active.Len() >= g.perSource {
			if h := st.active.Front().Value.(*Handshake); g.now().Sub(h.start) >= evictAfter {
				evict = append(evict, h)
			} else {
				ok = false
			}
		}
		if ok && g.active.Len()-len(evict) >= g.max {
			mine := 0
			if st != nil {
				mine = st.active.Len() - len(evict)
			}
			// Room is made at the busiest source: at once if it holds more
			// than the newcomer's would, else only if its oldest stalled.
			if n, h := g.busiest(src); h != nil && (n > mine+1 || n == mine+1 && g.now().Sub(h.start) >= evictAfter) {
				evict = append(evict, h)
			} else {
				ok = false
			}
		}
		if ok {
			for _, h := range evict {
				g.removeLocked(h)
				h.evicted = true
				h.conn.Close()
				if g.evicted != nil {
					g.evicted()
				}
			}
			h := &Handshake{g: g, conn: conn, src: src, start: g.now()}
			h.all = g.active.PushBack(h)
			if st == nil {
				st = &sourceTurns{}
				g.sources[src] = st
			}
			h.bySrc = st.active.PushBack(h)
			if waited {
				g.waiting--
			}
			g.mu.Unlock()
			return h, nil
		}
		if !waited {
			if g.waiting >= g.max {
				g.mu.Unlock()
				return nil, ErrHandshakesFull
			}
			g.waiting++
			waited = true
		}
		wait := deadline.Sub(g.now())
		if wait <= 0 {
			g.waiting--
			g.mu.Unlock()
			return nil, ErrHandshakesFull
		}
		// Wake at the latest when the oldest blocking handshake may be
		// displaced, else when any turn ends.
		if oldest := g.active.Front(); oldest != nil {
			wait = min(wait, max(evictAfter-g.now().Sub(oldest.Value.(*Handshake).start), time.Millisecond))
		}
		if st != nil && st.active.Len() > 0 {
			wait = min(wait, max(evictAfter-g.now().Sub(st.active.Front().Value.(*Handshake).start), time.Millisecond))
		}
		changed := g.changed
		g.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
		g.mu.Lock()
	}
}

// busiest returns how many handshakes the source other than src with the
// most holds, and its oldest; among equally busy sources, the one whose
// oldest handshake started first.
func (g *HandshakeGate) busiest(src string) (int, *Handshake) {
	var best *Handshake
	n := 0
	for s, st := range g.sources {
		if s == src {
			continue
		}
		front := st.active.Front().Value.(*Handshake)
		if l := st.active.Len(); l > n || l == n && front.start.Before(best.start) {
			n, best = l, front
		}
	}
	return n, best
}

func (g *HandshakeGate) removeLocked(h *Handshake) {
	if h.all == nil {
		return
	}
	g.active.Remove(h.all)
	h.all = nil
	if st := g.sources[h.src]; st != nil {
		st.active.Remove(h.bySrc)
		if st.active.Len() == 0 {
			delete(g.sources, h.src)
		}
	}
	close(g.changed)
	g.changed = make(chan struct{})
}

// Done ends the handshake's turn: the client authenticated (it holds a
// session slot from now on) or its connection ended. Safe to call more
// than once and on a nil Handshake.
func (h *Handshake) Done() {
	if h == nil {
		return
	}
	h.g.mu.Lock()
	h.g.removeLocked(h)
	h.g.mu.Unlock()
}

// Evicted reports whether a newer connection took this handshake's place
// (its connection was closed).
func (h *Handshake) Evicted() bool {
	if h == nil {
		return false
	}
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	return h.evicted
}

// Len returns the number of handshakes running.
func (g *HandshakeGate) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active.Len()
}
