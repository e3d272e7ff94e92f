package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// Pin reasons, as shown in /v1/status and the pinned_sessions metric.
const (
	PinTempTable     = "temp_table"
	PinHoldCursor    = "hold_cursor"
	PinAdvisoryLock  = "advisory_lock"
	PinSQLPrepare    = "unreplayable_prepare"
	pinRecheckPeriod = time.Second
)

// captureSQL reads the movable state of a session in one round trip
// (docs/swap.md): settings set in this session, role, the pins, prepared
// statements and LISTEN channels. The custom-setting probe is appended
// when the session set any.
//
// It calls the functions behind the pg_settings, pg_cursors, pg_locks and
// pg_prepared_statements views directly: on a backend that never ran it,
// expanding the views costs more catalog lookups than the query itself.
// The temporary-table count only runs when the session ever had a
// temporary schema.
const captureSQL = `SELECT s.name, pg_catalog.current_setting(s.name) FROM pg_catalog.pg_show_all_settings() s WHERE s.source = 'session';` +
	`SELECT pg_catalog.current_setting('role'),` +
	` CASE WHEN pg_catalog.pg_my_temp_schema() = 0 THEN 0 ELSE (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) END,` +
	` (SELECT count(*) FROM pg_catalog.pg_cursor() c WHERE c.is_holdable),` +
	` (SELECT count(*) FROM pg_catalog.pg_lock_status() l WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'advisory');` +
	`SELECT p.name, p.statement, p.from_sql, p.parameter_types::pg_catalog.oid[]::text FROM pg_catalog.pg_prepared_statement() p;` +
	`SELECT pg_catalog.pg_listening_channels();`

// notReplayed are settings that set_config cannot or must not restore.
func notReplayed(name string) bool {
	return strings.HasPrefix(name, "transaction_") || name == "session_authorization" || name == "role"
}

type preparedStmt struct {
	name, statement string
	fromSQL         bool
	oids            []uint32
}

// sessionState is what a switch captured on the old backend connection.
type sessionState struct {
	settings  [][2]string
	role      string
	prepared  []preparedStmt
	channels  []string
	pinReason string
}

// Switch implements proxy.Session. It never waits for the client reader:
// if that one is forwarding, the session is busy and switches itself
// before its next batch.
func (s *session) Switch(ctx context.Context, gen *creds.Generation) (proxy.SwitchResult, error) {
	if gen == nil {
		return proxy.SwitchDone, nil
	}
	if s.lp != nil {
		return s.loopSwitchRequest(ctx, gen)
	}
	if !s.mu.TryLock() {
		return proxy.SwitchBusy, nil
	}
	defer s.mu.Unlock()
	if s.closing {
		return proxy.SwitchDone, nil
	}
	return s.switchLocked(ctx, gen)
}

// switchLocked moves the session to a backend connection of gen if it is
// at a safe point. Callers hold mu.
func (s *session) switchLocked(ctx context.Context, gen *creds.Generation) (res proxy.SwitchResult, err error) {
	if gen == nil || s.be.gen >= gen.N {
		return proxy.SwitchDone, nil
	}
	if !s.safePoint() || s.terminated.Load() {
		return proxy.SwitchBusy, nil
	}
	if s.pinThrottled() {
		return proxy.SwitchPinned, nil
	}
	if !s.retry.Ready(time.Now(), s.h.b.Newest(gen).N) {
		return proxy.SwitchBusy, nil // backing off after failed attempts
	}
	if !s.pauseReader(s.be) {
		return proxy.SwitchFailed, errors.New("backend connection already closed")
	}
	defer func() { s.resumeReader(s.be) }()
	defer s.recoverSwitch(&res, &err)
	return s.performSwitch(ctx, gen)
}

// performSwitch captures the session's state on its backend connection,
// replays it on a connection of gen and moves the session there. The
// caller holds mu and has exclusive use of the backend connection and of
// writes to the client (the relay is paused or detached).
func (s *session) performSwitch(ctx context.Context, gen *creds.Generation) (res proxy.SwitchResult, err error) {
	gen = s.h.b.Newest(gen)
	if s.be.gen >= gen.N {
		return proxy.SwitchDone, nil
	}
	start := time.Now()
	defer func() {
		s.h.b.CountSwitch(res, time.Since(start))
		s.retry.Record(time.Now(), gen.N, res, err)
		if err != nil {
			s.log().Warn("session switch failed", zap.Uint64("generation", gen.N), zap.Error(err))
		}
	}()
	old := s.be
	if len(s.spend) > 0 { // bytes the client has not taken yet go first
		s.client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, werr := s.client.Write(s.spend)
		s.client.SetWriteDeadline(time.Time{})
		s.spend = s.spend[:0]
		if werr != nil {
			return proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageInternal, Err: fmt.Errorf("writing to the client: %w", werr)}
		}
	}

	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > 10*time.Second {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	s.h.fault("capture")
	st, err := s.capture(ctx, old)
	moved := false
	defer func() {
		if !moved {
			s.restoreUnnamed(ctx, old)
		}
	}()
	if err != nil {
		return proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageCapture, Err: err}
	}
	s.lastPinCheck = time.Now()
	if st.pinReason != "" {
		s.setPin(st.pinReason)
		return proxy.SwitchPinned, nil
	}
	s.pin.Store(nil)
	s.replayPin = replayPin{}

	nb, _ := s.h.b.Pool.Get(s.key, gen.N).(*serverConn)
	if nb == nil {
		nb, err = s.h.dial(ctx, gen, s.database, s.params, s.key)
		if errors.Is(err, creds.ErrRejected) {
			// The credential may have changed again since gen was
			// adopted: look for a newer one and go there instead.
			if newer := s.h.b.Newest(gen); newer.N > gen.N {
				gen = newer
				nb, err = s.h.dial(ctx, gen, s.database, s.params, s.key)
			}
		}
		if err != nil {
			return proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageConnect, Err: fmt.Errorf("generation %d: %w", gen.N, err)}
		}
	}
	adopted := false
	defer func() {
		if !adopted { // failed or panicked before the session took it
			nb.Close()
		}
	}()
	if s.lp != nil {
		if !nb.forLoop() {
			return proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageConnect, Err: errors.New("the new backend connection cannot be relayed by a loop")}
		}
	} else if err := nb.forGoroutines(); err != nil {
		return proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageConnect, Err: err}
	}
	s.h.fault("replay")
	held, deferred, err := s.replay(ctx, nb, st)
	var up *unreplayablePrepare
	if errors.As(err, &up) {
		s.setPin(PinSQLPrepare)
		s.replayPin = replayPin{name: up.name, at: time.Now()}
		s.log().Info("session pinned: a SQL PREPARE cannot be run again on a new connection", zap.Error(err))
		return proxy.SwitchPinned, nil
	}
	if err != nil {
		return proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageReplay, Err: err}
	}

	// The new connection is ready: deliver what the old one still has,
	// then what arrived on the new one. The changed parameters wait for
	// the client's next message (paramChanges), so that a client quiet
	// through several switches learns only the net change.
	out, err := s.retire(ctx, old, len(st.channels) > 0)
	old.Close()
	if err != nil {
		s.log().Debug("retiring old backend connection", zap.Error(err))
	}
	out = append(out, held...)
	if s.clientParams == nil {
		s.clientParams = maps.Clone(old.params)
	}
	if len(out) > 0 {
		s.wmu.Lock()
		_, werr := s.client.Write(out)
		s.wmu.Unlock()
		if werr != nil {
			s.readerFailed.Store(true)
			if s.lp == nil {
				s.client.Close() // ends the client reader
			} else {
				s.terminated.Store(true) // reattach finishes the session
			}
		}
	}
	s.be = nb
	adopted, moved = true, true
	s.dfr.reset(deferred)
	s.gen.Store(nb.gen)
	s.target.Store(&cancelTarget{pid: nb.pid, secret: nb.secret})
	s.log().Debug("session switched", zap.Uint64("generation", nb.gen), zap.Duration("took", time.Since(start)))
	return proxy.SwitchDone, nil
}

// exchange sends req on c and reads until ReadyForQuery count times,
// passing every other message to handle. NotificationResponses go to
// notify (raw, header included). It leaves the connection at a message
// boundary with nothing buffered.
func (s *session) exchange(ctx context.Context, c *serverConn, req []byte, count int,
	handle func(typ byte, body []byte) error, notify func(raw []byte)) error {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
		defer c.conn.SetDeadline(time.Time{})
	}
	if err := c.write(req); err != nil {
		return err
	}
	m := msgReader{rd: relaybuf.NewReader(c.conn, &s.h.bufs)}
	defer m.release()
	var firstErr error
	for count > 0 || m.buffered() {
		typ, body, err := m.next()
		if err != nil {
			return err
		}
		switch typ {
		case 'Z':
			count--
		case 'A':
			notify(appendRaw(nil, typ, body))
		case 'S':
			if name, value, ok := parseParameterStatus(body); ok {
				c.setParam(name, value)
			}
		case 'N':
		case 'E':
			if firstErr == nil {
				firstErr = pgErrorFrom(body)
			}
		default:
			if handle != nil {
				if err := handle(typ, body); err != nil && firstErr == nil {
					firstErr = err
				}
			}
		}
	}
	return firstErr
}

// restoreUnnamed prepares the client's unnamed statement again on c after
// a capture that did not lead to a switch: the capture's Query destroyed
// it, and a client may Bind it after a Sync. An error (its table is gone
// meanwhile) leaves it missing, as a failed Parse would.
func (s *session) restoreUnnamed(ctx context.Context, c *serverConn) {
	if !s.hasUnnamed {
		return
	}
	req := appendRaw(nil, 'P', s.unnamed)
	req = appendFrontendMsg(req, &pgproto3.Sync{})
	var notes []byte
	if err := s.exchange(ctx, c, req, 1, nil, func(raw []byte) { notes = append(notes, raw...) }); err != nil {
		s.log().Debug("preparing the unnamed statement again on the old connection", zap.Error(err))
	}
	if len(notes) > 0 {
		s.wmu.Lock()
		s.client.Write(notes)
		s.wmu.Unlock()
	}
}

// capture reads the session's movable state from the old connection and
// finds pins. Notifications that arrive meanwhile go to the client.
func (s *session) capture(ctx context.Context, c *serverConn) (*sessionState, error) {
	q := captureSQL
	if len(s.customGUCs) > 0 {
		var b strings.Builder
		b.WriteString("SELECT n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[")
		for i, n := range s.customGUCs {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(QuoteLiteral(n))
		}
		b.WriteString("]::text[]) AS n;")
		q += b.String()
	}
	st := &sessionState{}
	set := -1
	var row pgproto3.DataRow
	seen := map[string]bool{}
	handle := func(typ byte, body []byte) error {
		switch typ {
		case 'T':
			set++
		case 'D':
			if err := row.Decode(body); err != nil {
				return err
			}
			v := row.Values
			switch set {
			case 0, 4: // settings; custom settings (NULL when undefined)
				if len(v) == 2 && v[1] != nil && !notReplayed(string(v[0])) && !seen[string(v[0])] {
					seen[string(v[0])] = true
					st.settings = append(st.settings, [2]string{string(v[0]), string(v[1])})
				}
			case 1:
				if len(v) == 4 {
					// Replayed even when "none": the new login's
					// default role (ALTER ROLE … SET role) may be
					// another.
					st.role = string(v[0])
					switch {
					case string(v[1]) != "0":
						st.pinReason = PinTempTable
					case string(v[2]) != "0":
						st.pinReason = PinHoldCursor
					case string(v[3]) != "0":
						st.pinReason = PinAdvisoryLock
					}
				}
			case 2:
				if len(v) == 4 {
					p := preparedStmt{name: string(v[0]), statement: string(v[1]), fromSQL: string(v[2]) == "t"}
					oids, err := parseOIDArray(string(v[3]))
					if err != nil {
						return err
					}
					p.oids = oids
					if p.fromSQL && st.pinReason == "" && (!singleStatement(p.statement) || s.replayPin.holds(p.name)) {
						st.pinReason = PinSQLPrepare
					}
					st.prepared = append(st.prepared, p)
				}
			case 3:
				if len(v) == 1 && v[0] != nil {
					st.channels = append(st.channels, string(v[0]))
				}
			}
		}
		return nil
	}
	req := appendFrontendMsg(nil, &pgproto3.Query{String: q})
	var notes []byte
	err := s.exchange(ctx, c, req, 1, handle, func(raw []byte) { notes = append(notes, raw...) })
	if len(notes) > 0 {
		s.wmu.Lock()
		s.client.Write(notes)
		s.wmu.Unlock()
	}
	return st, err
}

// replay restores st on nb in one pipelined round trip: settings, role and
// LISTENs in one query; then every prepared statement in a round of its
// own, so that one that cannot be prepared now is known by name: each SQL
// PREPARE as a query, exactly as the client sent it (PostgreSQL records
// the whole query string as the statement's text), each protocol-level
// statement (named, the unnamed one, and those still deferred from an
// earlier switch) as a Parse and a Sync. It returns the notifications nb
// delivered meanwhile, to be sent after the old connection's, and the
// statements to defer (deferred.go): those whose objects are gone, which
// PostgreSQL only complains about when they are used.
func (s *session) replay(ctx context.Context, nb *serverConn, st *sessionState) (held []byte, deferred map[string]*deferredStmt, err error) {
	var sql strings.Builder
	if len(st.settings) > 0 || st.role != "" {
		sql.WriteString("SELECT ")
		first := true
		add := func(name, value string) {
			if !first {
				sql.WriteString(", ")
			}
			first = false
			fmt.Fprintf(&sql, "pg_catalog.set_config(%s, %s, false)", QuoteLiteral(name), QuoteLiteral(value))
		}
		for _, kv := range st.settings {
			add(kv[0], kv[1])
		}
		if st.role != "" {
			add("role", st.role)
		}
		sql.WriteString(";")
	}
	for _, ch := range st.channels {
		sql.WriteString("LISTEN ")
		sql.WriteString(QuoteIdent(ch))
		sql.WriteString(";")
	}
	type round struct {
		name    string
		st      *deferredStmt // a protocol-level statement
		fromSQL bool          // a SQL PREPARE
	}
	var req []byte
	var rounds []round
	if sql.Len() > 0 {
		req = appendFrontendMsg(req, &pgproto3.Query{String: sql.String()})
		rounds = append(rounds, round{})
	}
	addStmt := func(name string, ds *deferredStmt) {
		req = appendRaw(req, 'P', ds.parse)
		req = appendFrontendMsg(req, &pgproto3.Sync{})
		rounds = append(rounds, round{name: name, st: ds})
	}
	for _, p := range st.prepared {
		if p.fromSQL {
			req = appendFrontendMsg(req, &pgproto3.Query{String: p.statement})
			rounds = append(rounds, round{name: p.name, fromSQL: true})
			continue
		}
		msg, err := appendParse(nil, p.name, p.statement, p.oids)
		if err != nil {
			return nil, nil, err
		}
		addStmt(p.name, &deferredStmt{parse: msg[headerLen:]})
	}
	for name, ds := range s.dfr.snapshot() {
		if name != "" || !s.hasUnnamed {
			addStmt(name, ds)
		}
	}
	if s.hasUnnamed {
		addStmt("", &deferredStmt{parse: s.unnamed})
	}
	if len(rounds) == 0 {
		return nil, nil, nil
	}

	notify := func(raw []byte) { held = append(held, raw...) }
	failed := make([]error, len(rounds))
	if err := s.exchangeRounds(ctx, nb, req, failed, notify); err != nil {
		return nil, nil, err
	}
	for i, r := range rounds {
		switch {
		case failed[i] == nil:
		case r.fromSQL:
			return nil, nil, &unreplayablePrepare{name: r.name, err: failed[i]}
		case r.st == nil:
			return nil, nil, failed[i]
		default:
			if deferred == nil {
				deferred = make(map[string]*deferredStmt)
			}
			deferred[r.name] = r.st
			s.log().Debug("prepared statement deferred to its first use", zap.String("statement", r.name), zap.Error(failed[i]))
		}
	}
	return held, deferred, nil
}

// replayPin remembers a SQL PREPARE whose replay failed: while it exists
// the session stays pinned without another login, and the replay is tried
// again every replayPinRetry in case its objects are back.
type replayPin struct {
	name string
	at   time.Time
}

const replayPinRetry = 30 * time.Second

func (r replayPin) holds(name string) bool {
	return r.name != "" && r.name == name && time.Since(r.at) < replayPinRetry
}

// setPin records that the session is pinned for reason.
func (s *session) setPin(reason string) {
	if p := s.pin.Load(); p == nil || p.reason != reason {
		s.pin.Store(&pinState{reason: reason, since: time.Now()})
		s.log().Info("session pinned to its backend connection", zap.String("reason", reason))
	}
}

// unreplayablePrepare is a SQL PREPARE that failed when run again on the
// new connection (its objects are gone): the session stays pinned to its
// connection, where the statement still exists, rather than lose it.
type unreplayablePrepare struct {
	name string
	err  error
}

func (e *unreplayablePrepare) Error() string {
	return fmt.Sprintf("statement %q cannot be prepared again: %v", e.name, e.err)
}

// exchangeRounds sends req, which holds len(failed) rounds each ending in
// ReadyForQuery, and records the first error of each round in failed.
// Errors of the connection itself are returned.
func (s *session) exchangeRounds(ctx context.Context, c *serverConn, req []byte, failed []error, notify func(raw []byte)) error {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
		defer c.conn.SetDeadline(time.Time{})
	}
	if err := c.write(req); err != nil {
		return err
	}
	m := msgReader{rd: relaybuf.NewReader(c.conn, &s.h.bufs)}
	defer m.release()
	for i := 0; i < len(failed) || m.buffered(); {
		typ, body, err := m.next()
		if err != nil {
			return err
		}
		switch typ {
		case 'Z':
			i++
		case 'A':
			notify(appendRaw(nil, typ, body))
		case 'S':
			if name, value, ok := parseParameterStatus(body); ok {
				c.setParam(name, value)
			}
		case 'E':
			if isFatal(body) {
				return pgErrorFrom(body)
			}
			if i < len(failed) && failed[i] == nil {
				failed[i] = pgErrorFrom(body)
			}
		}
	}
	return nil
}

// maxParseParams is the most parameter types a Parse message can list
// (an Int16 count). PostgreSQL accepts statements with more parameters
// when the client lists fewer types and lets it infer the rest.
const maxParseParams = 1<<16 - 1

// appendParse appends a Parse re-creating a named statement. Its
// parameter types are the ones PostgreSQL reported for the original: all
// of them, or, past what a Parse can list, the first 65,535, from which
// PostgreSQL infers the rest again exactly as it did the first time.
func appendParse(dst []byte, name, query string, oids []uint32) ([]byte, error) {
	if len(oids) > maxParseParams {
		oids = oids[:maxParseParams]
	}
	out, err := (&pgproto3.Parse{Name: name, Query: query, ParameterOIDs: oids}).Encode(dst)
	if err != nil {
		return dst, fmt.Errorf("statement %q cannot be prepared again: %w", name, err)
	}
	return out, nil
}

// retire stops the old connection listening (if it was) and returns the
// notifications it delivered until then, so none is lost. Notifications
// committed between the new connection's LISTEN and this UNLISTEN arrive
// twice (docs/swap.md).
func (s *session) retire(ctx context.Context, old *serverConn, listening bool) ([]byte, error) {
	if !listening {
		return nil, nil
	}
	var out []byte
	req := appendFrontendMsg(nil, &pgproto3.Query{String: "UNLISTEN *"})
	err := s.exchange(ctx, old, req, 1, nil, func(raw []byte) { out = append(out, raw...) })
	return out, err
}

// resetForPool runs DISCARD ALL so that the connection carries nothing of
// the last client into the next.
func (h *Handler) resetForPool(ctx context.Context, c *serverConn) error {
	s := &session{h: h}
	req := appendFrontendMsg(nil, &pgproto3.Query{String: "DISCARD ALL"})
	return s.exchange(ctx, c, req, 1, nil, func([]byte) {})
}

// pgError is an ErrorResponse received by the proxy's own queries.
type pgError struct {
	code, message string
}

func (e *pgError) Error() string { return e.message + " (SQLSTATE " + e.code + ")" }

func pgErrorFrom(body []byte) error {
	var er pgproto3.ErrorResponse
	if err := er.Decode(body); err != nil {
		return err
	}
	return &pgError{code: er.Code, message: er.Message}
}

// setParam records a ParameterStatus value.
func (c *serverConn) setParam(name, value string) {
	if old, ok := c.params[name]; ok && old == value {
		return
	}
	c.params[name] = value
}

func parseParameterStatus(body []byte) (name, value string, ok bool) {
	n, rest, ok1 := bytes.Cut(body, []byte{0})
	v, _, ok2 := bytes.Cut(rest, []byte{0})
	return string(n), string(v), ok1 && ok2
}

// isFatal reports whether an ErrorResponse body has severity FATAL or PANIC.
func isFatal(body []byte) bool {
	for len(body) > 1 {
		field := body[0]
		v, rest, ok := bytes.Cut(body[1:], []byte{0})
		if !ok {
			return false
		}
		if field == 'S' || field == 'V' {
			return string(v) == "FATAL" || string(v) == "PANIC"
		}
		body = rest
	}
	return false
}

// appendRaw appends a message with the given type and body.
func appendRaw(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(dst[len(dst)-4:], uint32(len(body)+4))
	return append(dst, body...)
}

// parseOIDArray parses the text form of an oid[] such as {23,25}.
func parseOIDArray(s string) ([]uint32, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make([]uint32, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("parameter type %q: %w", p, err)
		}
		out[i] = uint32(n)
	}
	return out, nil
}

// QuoteLiteral quotes s as an escape string literal (E'…'), valid
// whatever standard_conforming_strings is.
func QuoteLiteral(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 3)
	b.WriteString("E'")
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// QuoteIdent quotes s as an identifier.
func QuoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
