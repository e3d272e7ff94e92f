package postgres

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Deferred statements
//
// PostgreSQL keeps a prepared statement whose tables, columns or types
// are dropped after it was prepared, and only fails when it is used; if
// the objects come back (psycopg 3 auto-prepares INSERTs into ON COMMIT
// DROP temporary tables that every transaction creates again), the next
// use re-analyzes the statement and succeeds. A new connection cannot
// prepare such a statement while its objects are missing. So a switch
// that fails to prepare a statement again still moves the session and
// remembers the statement as deferred; the relay prepares it on first use:
//
//   - a Bind or Describe of it, or a Parse of the same name, gets the
//     Parse injected right before it. Its ParseComplete is dropped from
//     the response; if it fails, its ErrorResponse is what the client
//     gets in place of the error PostgreSQL would have raised at the Bind
//     or Describe (the same error), and the statement stays deferred.
//   - a Query naming it after EXECUTE or DEALLOCATE gets the statement
//     prepared in a round of its own (Parse and Sync), whose whole answer
//     is dropped (for DEALLOCATE alone, a stand-in that always prepares). DEALLOCATE ALL and DISCARD ALL
//     forget every deferred statement; a Close of one forgets it.
//
// An injection is only made when no earlier Sync or Query of the client
// is still unanswered, so the proxy knows which answer is the injected
// Parse's; a client message that needs one while the client pipelines is
// held back until the earlier answers are in.

// errInject and errHold are returned by the client visitor: the message
// at the current position needs the bytes in session.inject sent first,
// or must wait until every earlier Sync and Query is answered. The
// visitor has changed no state for that message; it is visited again.
var (
	errInject = errors.New("inject before this message")
	errHold   = errors.New("hold this message")
	// errSkip is returned by the server visitor for a message answering
	// an injection: it is not forwarded to the client.
	errSkip = errors.New("skip this message")
)

// deferredStmt is a protocol-level statement the current backend
// connection lacks. (A SQL PREPARE that cannot be run again pins the
// session instead: only a query could recreate it, and a query cannot be
// sent in the middle of the client's extended-protocol round.)
type deferredStmt struct {
	parse []byte // Parse body to prepare it
}

// injection is a deferred statement sent to the database and awaiting its
// answer.
type injection struct {
	name string
	st   *deferredStmt
	// pos is the number of Parses before it in its Sync round (the
	// client's and injected ones): it answers the pos-th ParseComplete.
	pos int
	// own is set for a statement prepared in a round of its own; its whole
	// answer up to ReadyForQuery is dropped.
	own bool
	ok  bool // an own round whose statement was prepared
}

// deferredSet holds a session's deferred statements and the injections in
// flight. The client side (visit) and the server side (serverVisitor) of
// the relay both use it; mu orders them when they run on two goroutines.
// n is read without the lock on every batch: 0 means nothing to do.
type deferredSet struct {
	n        atomic.Int32 // len(byName) + len(pending)
	mu       sync.Mutex
	byName   map[string]*deferredStmt
	pending  []injection
	parseIdx int // ParseCompletes the server sent in the current round
	// parsesInRound counts the Parses forwarded since the client's last
	// Sync or Query (client side only; reset there).
	parsesInRound int
}

func (d *deferredSet) active() bool { return d.n.Load() > 0 }

func (d *deferredSet) count() { d.n.Store(int32(len(d.byName) + len(d.pending))) }

// snapshot returns a copy of the deferred statements, for a switch to try
// them again on the next connection.
func (d *deferredSet) snapshot() map[string]*deferredStmt {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.byName)
}

// reset makes m the deferred statements, after a switch moved the session
// to a connection that lacks them. Nothing is in flight at a safe point.
func (d *deferredSet) reset(m map[string]*deferredStmt) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.byName = m
	d.pending = nil
	d.parseIdx, d.parsesInRound = 0, 0
	d.count()
}

// clientMessage is called by the client visitor for the messages that can
// refer to a statement while statements are deferred. It returns
// errInject with the bytes to send first in *inject, errHold, or nil.
func (s *session) clientMessage(typ byte, body []byte, inject *[]byte) error {
	d := &s.dfr
	d.mu.Lock()
	defer d.mu.Unlock()
	var names []string
	switch typ {
	case 'P':
		name, _, _ := bytes.Cut(body, []byte{0})
		if _, ok := d.byName[string(name)]; ok {
			if len(name) == 0 { // a new unnamed statement replaces it
				delete(d.byName, "")
				d.count()
				return nil
			}
			names = []string{string(name)}
		}
	case 'B':
		_, rest, _ := bytes.Cut(body, []byte{0}) // portal
		name, _, _ := bytes.Cut(rest, []byte{0})
		if _, ok := d.byName[string(name)]; ok {
			names = []string{string(name)}
		}
	case 'D':
		if len(body) > 1 && body[0] == 'S' {
			name, _, _ := bytes.Cut(body[1:], []byte{0})
			if _, ok := d.byName[string(name)]; ok {
				names = []string{string(name)}
			}
		}
	case 'C':
		if len(body) > 1 && body[0] == 'S' {
			name, _, _ := bytes.Cut(body[1:], []byte{0})
			if _, ok := d.byName[string(name)]; ok {
				delete(d.byName, string(name)) // closing a statement that does not exist is no error either
				d.count()
			}
		}
		return nil
	case 'Q':
		q, _, _ := bytes.Cut(body, []byte{0})
		if _, ok := d.byName[""]; ok { // a Query destroys the unnamed statement
			delete(d.byName, "")
			d.count()
		}
		exec, dealloc, all := statementRefs(string(q))
		if all {
			d.byName = nil
			d.count()
			return nil
		}
		for _, n := range exec {
			if _, ok := d.byName[n]; ok && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		for _, n := range dealloc {
			if _, ok := d.byName[n]; ok && !slices.Contains(names, n) {
				// Only deallocated: a stand-in that always prepares
				// lets the DEALLOCATE succeed as it would have.
				d.byName[n] = &deferredStmt{parse: standInParse(n)}
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return nil
	}
	own := typ == 'Q'
	if s.outstanding.Load() > 0 || s.copyIn.Load() || (own && s.ext) {
		if own && s.ext {
			return nil // a Query inside an extended-protocol round: left alone
		}
		return errHold
	}
	out := (*inject)[:0]
	for _, n := range names {
		st := d.byName[n]
		inj := injection{name: n, st: st, own: own}
		switch {
		case own:
			out = appendRaw(out, 'P', st.parse)
			out = appendFrontendMsg(out, &pgproto3.Sync{})
		default:
			out = appendRaw(out, 'P', st.parse)
			inj.pos = d.parsesInRound
			d.parsesInRound++
		}
		delete(d.byName, n)
		d.pending = append(d.pending, inj)
	}
	d.count()
	if len(out) == 0 {
		return nil
	}
	*inject = out
	return errInject
}

// serverMessage is called by the server visitor while statements are
// deferred, for ParseComplete, ErrorResponse and ReadyForQuery. It reports whether the message answers an injection and
// must not reach the client.
func (s *session) serverMessage(typ byte) (skip bool) {
	d := &s.dfr
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.count()
	var front *injection
	if len(d.pending) > 0 {
		front = &d.pending[0]
	}
	switch typ {
	case '1': // ParseComplete
		if front != nil && front.own {
			front.ok = true
			return true
		}
		idx := d.parseIdx
		d.parseIdx++
		if front != nil && front.pos == idx {
			d.pending = d.pending[1:] // prepared
			return true
		}
	case 'E':
		if front != nil && front.own {
			return true // the statement stays deferred (restored at ReadyForQuery)
		}
		// The rest of the round is skipped by the server: injections
		// still waiting in it were not prepared.
		d.restorePending()
	case 'Z':
		d.parseIdx = 0
		if front != nil && front.own {
			if !front.ok {
				d.restore(front)
			}
			d.pending = d.pending[1:]
			return true
		}
		d.restorePending()
	}
	return false
}

// restorePending puts every injection still waiting for its answer back
// among the deferred statements. Callers hold mu.
func (d *deferredSet) restorePending() {
	for i := range d.pending {
		d.restore(&d.pending[i])
	}
	d.pending = d.pending[:0]
}

func (d *deferredSet) restore(inj *injection) {
	if d.byName == nil {
		d.byName = make(map[string]*deferredStmt)
	}
	if _, ok := d.byName[inj.name]; !ok {
		d.byName[inj.name] = inj.st
	}
}

// standInParse is the body of a Parse that prepares a statement named
// name which always prepares.
func standInParse(name string) []byte {
	msg, _ := appendParse(nil, name, "SELECT 1", nil)
	return msg[headerLen:]
}

// statementRefs returns the prepared statement names a query string
// refers to with EXECUTE name (exec) and DEALLOCATE [PREPARE] name
// (dealloc), and all = true when it contains DEALLOCATE [PREPARE] ALL or
// DISCARD ALL. Names are folded to lower case unless quoted, as
// PostgreSQL does.
func statementRefs(q string) (exec, dealloc []string, all bool) {
	// prev and prev2 are the tokens before tok, lower-cased; execStart
	// and deallocStart are set when EXECUTE or DEALLOCATE begins a
	// statement (or follows EXPLAIN or CREATE TABLE … AS), not when the
	// word is a column name.
	prev, prev2 := ";", ""
	var execStart, deallocStart bool
	forEachToken(q, func(tok string) {
		low := strings.ToLower(tok)
		switch {
		case low == "execute":
			execStart = prev == ";" || prev == "explain" || prev == "analyze" || prev == "verbose" || prev == ")" || prev == "as"
		case low == "deallocate":
			deallocStart = prev == ";"
		case prev == "execute" && execStart:
			if name, ok := identName(tok); ok {
				exec = append(exec, name)
			}
		case deallocStart && (prev == "deallocate" || (prev == "prepare" && prev2 == "deallocate")):
			if low == "all" {
				all = true
			} else if low != "prepare" {
				if name, ok := identName(tok); ok {
					dealloc = append(dealloc, name)
				}
			}
		case prev == "discard" && low == "all" && prev2 == ";":
			all = true
		}
		prev2, prev = prev, low
	})
	return exec, dealloc, all
}

// identName turns an identifier token into the name it denotes.
func identName(tok string) (string, bool) {
	if tok == "" {
		return "", false
	}
	if tok[0] == '"' {
		if len(tok) < 2 || tok[len(tok)-1] != '"' {
			return "", false
		}
		return strings.ReplaceAll(tok[1:len(tok)-1], `""`, `"`), true
	}
	if !isIdentByte(tok[0]) || ('0' <= tok[0] && tok[0] <= '9') {
		return "", false
	}
	return strings.ToLower(tok), true
}

// forEachToken calls f with each token of q outside comments: words,
// quoted identifiers, strings and single punctuation bytes.
func forEachToken(q string, f func(tok string)) {
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case isSpace(c):
			i++
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			for i < len(q) && q[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			depth := 0
			for i < len(q) {
				if q[i] == '/' && i+1 < len(q) && q[i+1] == '*' {
					depth++
					i += 2
				} else if q[i] == '*' && i+1 < len(q) && q[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
		default:
			j := skipToken(q, i)
			f(q[i:j])
			i = j
		}
	}
}
