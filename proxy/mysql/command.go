package mysql

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"

	"go.uber.org/zap"

	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// errClientGone ends a session whose client connection failed.
var errClientGone = errors.New("client connection failed")

// backendLost wraps a failure of the backend connection for the client:
// a *backendGoneError when the database ended the connection (finish
// then closes the client's without a word, as the database did), a
// proxy.Error with CodeBackendLost otherwise (the proxy cannot follow the
// server; the client gets ERR 1053 where it can read one).
func backendLost(err error) error {
	if connectionEnded(err) {
		return &backendGoneError{err: err}
	}
	return proxy.Errorf(proxy.CodeBackendLost, err, "Lost connection to the database server")
}

// backendGoneError is the failure of a command whose backend connection
// the database ended (end of stream or a reset).
type backendGoneError struct{ err error }

func (e *backendGoneError) Error() string {
	return "the database ended the connection: " + e.err.Error()
}

func (e *backendGoneError) Unwrap() error { return e.err }

// connectionEnded reports whether err says that the peer ended a
// connection (or that the network did), rather than a deadline or a close
// on the proxy's side.
func connectionEnded(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ETIMEDOUT)
}

// command relays the command at the start of cbuf, and its response:
// its first frame is whole there unless commandReady says the command
// needs less. quit reports COM_QUIT.
func (s *session) command(ctx context.Context) (quit bool, err error) {
	n := frameLen(s.cbuf.B)
	seq := s.cbuf.B[3]
	cmd := s.cbuf.B[4]
	switch cmd {
	case comQuit:
		s.cbuf.Consume(4 + n)
		return true, nil
	case comChangeUser:
		return false, s.changeUser(ctx, n, seq)
	case comQuery, comInitDB, comFieldList, comCreateDB, comDropDB, comRefresh, comShutdown, comStatistics,
		comProcessInfo, comProcessKill, comDebug, comPing, comStmtPrepare, comStmtExecute, comStmtSendLongData,
		comStmtClose, comStmtReset, comSetOption, comStmtFetch, comResetConnection:
	case comBinlogDump, comBinlogDumpGTID, comRegisterSlave:
		return false, s.refuse(n, seq, &myError{Code: erNotSupportedYet, State: "42000",
			Message: "Replication connections are not supported by this proxy"})
	default:
		return false, s.refuse(n, seq, &myError{Code: erUnknownCom, State: "08S01", Message: "Unknown command"})
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.terminated.Load() && s.h.b.Behind(s.gen.Load()) && s.safePoint() && !s.backendEndedNow() {
		s.switchLocked(ctx, s.h.b.Target())
	}
	if s.terminated.Load() {
		// Its backend connection ended (the watcher or a failed switch
		// found it so) or it was terminated while this command arrived.
		return false, errSessionEnded
	}
	s.beginCommand(seq)
	defer func() { s.endCommand(err) }()
	s.h.fault("command")
	if p := s.deferredStmt(cmd, n); p != nil {
		if handled, err := s.prepareDeferred(ctx, p, cmd, n, seq); handled || err != nil {
			return false, err
		}
	}
	switch cmd {
	case comQuery:
		err = s.query(ctx, n, seq)
	case comStmtPrepare:
		err = s.prepare(n)
	case comStmtExecute:
		err = s.execute(n, seq)
	case comStmtFetch, comStmtReset, comStmtClose, comStmtSendLongData:
		err = s.stmtCommand(cmd, n)
	case comProcessKill:
		if n >= 5 {
			if target := s.h.sessionByConnID(binary.LittleEndian.Uint32(s.cbuf.B[5:])); target != nil {
				s.cbuf.Consume(4 + n)
				return false, s.kill(ctx, target, false, seq)
			}
		}
		err = s.simple(n, respSingle)
	case comFieldList:
		err = s.simple(n, respFieldList)
	case comProcessInfo:
		err = s.simple(n, respQuery)
	case comResetConnection:
		if err = s.simple(n, respSingle); err == nil && s.rs.ok {
			s.st.reset()
		}
	case comSetOption:
		opt := -1
		if n >= 3 {
			opt = int(binary.LittleEndian.Uint16(s.cbuf.B[5:]))
		}
		if err = s.simple(n, respSingle); err == nil && s.rs.ok && opt >= 0 {
			s.st.multiStmts = opt == 0 // MYSQL_OPTION_MULTI_STATEMENTS_ON
		}
	case comInitDB:
		db := string(s.cbuf.B[5 : 4+n])
		if err = s.simple(n, respSingle); err == nil && s.rs.ok {
			s.st.setDB(db)
		}
	default:
		err = s.simple(n, respSingle)
	}
	if err == nil && !s.st.txnMaybeOpen && uint16(s.status.Load())&statusInTrans == 0 &&
		s.pin.Load() == nil && s.h.b.Behind(s.gen.Load()) {
		s.h.b.Nudge(s)
	}
	return false, err
}

// safePoint reports whether nothing is in flight between client and
// backend and no transaction is open, so the backend connection may be
// exchanged. Callers hold mu and are between commands.
func (s *session) safePoint() bool {
	return uint16(s.status.Load())&statusInTrans == 0 && !s.st.txnMaybeOpen && !s.st.pendingLongData()
}

// forward sends the command's first frame (n payload bytes, starting at
// the start of cbuf) to the backend, what has not arrived yet as it
// arrives, then its continuation frames if it has any.
func (s *session) forward(n int) error {
	m := min(4+n, s.cbuf.N)
	if err := s.be.write(s.cbuf.B[:m]); err != nil {
		return backendLost(err)
	}
	s.cbuf.Consume(m)
	if len(s.cbuf.B) > relaybuf.Size {
		s.cbuf.Fit(&s.h.bufs, s.h.b.Memory()) // the frame is gone: the rest streams
	}
	if err := s.pipe(4 + n - m); err != nil {
		return err
	}
	if n == maxFrame {
		return s.forwardFrames(n, false)
	}
	return nil
}

// forwardFrames streams client frames to the backend: the continuation
// frames of a packet whose first frames carried total bytes (until a frame
// shorter than maxFrame), or with infile the packets of a LOCAL INFILE
// transfer (until an empty packet).
func (s *session) forwardFrames(total int, infile bool) error {
	cont := !infile
	for {
		if err := s.crd.Ensure(&s.cbuf, 4); err != nil {
			return s.clientReadError(err)
		}
		n := frameLen(s.cbuf.B)
		if cont {
			total += n
		} else {
			total = n
		}
		if s.h.maxPayload > 0 && total > s.h.maxPayload {
			return tooLarge(total)
		}
		if err := s.pipe(4 + n); err != nil {
			return err
		}
		if infile && !cont && n == 0 {
			return nil
		}
		cont = n == maxFrame
		if !infile && !cont {
			return nil
		}
	}
}

// pipe forwards the next k bytes of the client's stream to the backend.
func (s *session) pipe(k int) error {
	for k > 0 {
		if s.cbuf.N == 0 {
			if err := s.crd.Ensure(&s.cbuf, 1); err != nil {
				return s.clientReadError(err)
			}
		}
		m := min(k, s.cbuf.N)
		if err := s.be.write(s.cbuf.B[:m]); err != nil {
			return backendLost(err)
		}
		s.cbuf.Consume(m)
		k -= m
	}
	return nil
}

// clientReadError marks a failed read of the client's stream.
func (s *session) clientReadError(err error) error {
	return fmt.Errorf("%w: %w", errClientGone, err)
}

// readPacket reads the whole current client packet, whose first frame
// (n payload bytes) starts at the start of cbuf, and returns its payload
// and the sequence number of its last frame. A first frame that is whole
// in cbuf is copied at once; otherwise the payload grows as the bytes
// arrive, and while the packet is incomplete its growth past a pooled
// buffer's size is taken from the memory budget, where the client buffer's
// share moves to as its bytes are copied.
func (s *session) readPacket(n int) ([]byte, byte, error) {
	if n < maxFrame && s.cbuf.N >= 4+n {
		payload := append([]byte(nil), s.cbuf.B[4:4+n]...)
		seq := s.cbuf.B[3]
		s.cbuf.Consume(4 + n)
		return payload, seq, nil
	}
	mem := s.h.b.Memory()
	held := s.cbuf.Held // the bytes the client buffer holds move to payload
	s.cbuf.Held = 0
	defer func() { mem.Release(held) }()
	var payload []byte
	for {
		if err := s.crd.Ensure(&s.cbuf, 4); err != nil {
			return nil, 0, s.clientReadError(err)
		}
		n = frameLen(s.cbuf.B)
		seq := s.cbuf.B[3]
		total := len(payload) + n
		if s.h.maxPayload > 0 && total > s.h.maxPayload {
			return nil, 0, tooLarge(total)
		}
		s.cbuf.Consume(4)
		for len(payload) < total {
			if s.cbuf.N == 0 {
				if err := s.crd.Fill(&s.cbuf); err != nil {
					return nil, 0, s.clientReadError(err)
				}
			}
			k := min(total-len(payload), s.cbuf.N)
			if len(payload)+k > cap(payload) {
				size := max(len(payload)+k, relaybuf.NextSize(cap(payload), total))
				if d := relaybuf.Charge(size) - held; d > 0 {
					if err := mem.Take(d, s.stop.C()); err != nil {
						if proxy.ErrMemoryWaitStopped(err) {
							return nil, 0, errSessionEnded
						}
						return nil, 0, err
					}
					held += d
				}
				payload = append(make([]byte, 0, size), payload...)
			}
			payload = append(payload, s.cbuf.B[:k]...)
			s.cbuf.Consume(k)
			if len(s.cbuf.B) > relaybuf.Size {
				s.cbuf.Fit(&s.h.bufs, mem) // its memory moved to payload
			}
		}
		if n < maxFrame {
			return payload, seq, nil
		}
	}
}

// skipPacket reads the current client packet, whose first frame starts
// at the start of cbuf, without keeping it, and returns the sequence
// number of its last frame.
func (s *session) skipPacket() (byte, error) {
	for {
		if err := s.crd.Ensure(&s.cbuf, 4); err != nil {
			return 0, s.clientReadError(err)
		}
		n := frameLen(s.cbuf.B)
		seq := s.cbuf.B[3]
		for k := 4 + n; k > 0; {
			if s.cbuf.N == 0 {
				if err := s.crd.Fill(&s.cbuf); err != nil {
					return 0, s.clientReadError(err)
				}
			}
			m := min(k, s.cbuf.N)
			s.cbuf.Consume(m)
			k -= m
		}
		if n < maxFrame {
			return seq, nil
		}
	}
}

// refuse answers a command the proxy does not relay with e, after reading
// the whole packet (first frame of n payload bytes at the start of cbuf).
func (s *session) refuse(n int, seq byte, e *myError) error {
	seq, err := s.skipPacket()
	if err != nil {
		return err
	}
	if err := s.reply(appendErr(nil, seq+1, e)); err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return nil
}

// relay forwards the backend's response to the current command to the
// client, as s.rs (started by the caller) follows it, including a LOCAL
// INFILE transfer.
func (s *session) relay() error {
	be := s.be
	pool := &s.h.bufs
	rd := be.reader(pool)
	defer func() {
		if s.sbuf.N == 0 {
			s.sbuf.Release(pool)
		}
	}()
	for {
		if s.sbuf.N > 0 {
			fwd, need, done, err := s.rs.scan(s.sbuf.B[:s.sbuf.N])
			if err != nil {
				return backendLost(err)
			}
			if fwd > 0 {
				werr := s.writeClient(s.sbuf.B[:fwd], !s.rs.atBoundary(), s.rs.lastSeq+1)
				s.sbuf.Consume(fwd)
				if werr != nil {
					return fmt.Errorf("%w: %w", errClientGone, werr)
				}
			}
			if done {
				if s.sbuf.N > 0 {
					return backendLost(errors.New("the server sent more than the response"))
				}
				if !s.rs.infile {
					return nil
				}
				if s.caps&capLocalFiles == 0 {
					return backendLost(errors.New("LOCAL INFILE request on a session that did not negotiate it"))
				}
				if err := s.forwardFrames(0, true); err != nil {
					return err
				}
				s.rs.resume()
				continue
			}
			if need > len(s.sbuf.B) {
				s.sbuf.Grow(need)
			}
		}
		if s.sbuf.N == len(s.sbuf.B) && s.sbuf.B != nil {
			s.sbuf.Grow(2 * len(s.sbuf.B))
		}
		if err := rd.Fill(&s.sbuf); err != nil {
			if s.terminated.Load() {
				return fmt.Errorf("session terminated: %w", err)
			}
			return backendLost(err)
		}
	}
}

// simple relays a command that needs no rewriting.
func (s *session) simple(n int, k respKind) error {
	s.rs.start(k, s.caps&capDeprecateEOF != 0)
	if err := s.forward(n); err != nil {
		return err
	}
	if err := s.relay(); err != nil {
		return err
	}
	s.noteStatus()
	return nil
}

// noteStatus records the status flags of the response just relayed.
func (s *session) noteStatus() {
	if s.rs.sawStatus {
		s.status.Store(uint32(s.rs.status))
	}
}

// query relays a COM_QUERY, reading its text for the statements the
// relay must know (sqlscan.go) and answering KILL of a proxy connection
// id itself.
func (s *session) query(ctx context.Context, n int, seq byte) error {
	text := s.cbuf.B[5 : 4+n]
	if s.caps&capQueryAttributes != 0 {
		// MySQL 8: parameter count and parameter set count come first; the
		// text can be found without decoding only when there are none.
		cnt, k, ok := lenenc(text)
		if ok && cnt == 0 && len(text) > k {
			text = text[k+1:]
		} else {
			text = nil
		}
	}
	in := &s.info
	scanSQL(text, in)
	if in.kill && in.stmts == 1 {
		if target := s.h.sessionByConnID(uint32(in.killID)); target != nil {
			s.cbuf.Consume(4 + n)
			return s.kill(ctx, target, in.killQuery, seq)
		}
	}
	s.rs.start(respQuery, s.caps&capDeprecateEOF != 0)
	if err := s.forward(n); err != nil {
		return err
	}
	if err := s.relay(); err != nil {
		return err
	}
	s.noteStatus()
	s.st.applyQuery(in, s.rs.ok, uint16(s.status.Load()))
	return nil
}

// prepare relays COM_STMT_PREPARE, giving the statement an id of the
// session's own in PREPARE_OK.
func (s *session) prepare(n int) error {
	payload, seq, err := s.readPacket(n)
	if err != nil {
		return err
	}
	id := s.st.nextStmt + 1
	if id == 0 || id == mariaDBLastStatement {
		id = 1
	}
	for s.st.stmts[id] != nil {
		id++
	}
	s.rs.start(respPrepare, s.caps&capDeprecateEOF != 0)
	s.rs.rewritePrep, s.rs.prepClientID = true, id
	first := seq - byte((len(payload))/maxFrame)
	req, _ := appendPacket(nil, first, payload)
	if err := s.be.write(req); err != nil {
		return backendLost(err)
	}
	if err := s.relay(); err != nil {
		return err
	}
	if !s.rs.ok {
		return nil
	}
	s.st.nextStmt = id
	s.st.order++
	p := &stmt{clientID: id, backendID: s.rs.prepID, query: payload[1:], params: s.rs.prepPars,
		cols: s.rs.prepCols, order: s.st.order, db: s.st.db()}
	s.st.stmts[id] = p
	s.st.lastPrepared = p
	return nil
}

// deferredStmt returns the deferred statement the statement command cmd
// in cbuf (n payload bytes) names, or nil.
func (s *session) deferredStmt(cmd byte, n int) *stmt {
	switch cmd {
	case comStmtExecute, comStmtFetch, comStmtReset, comStmtClose, comStmtSendLongData:
	default:
		return nil
	}
	if n < 5 {
		return nil
	}
	id := binary.LittleEndian.Uint32(s.cbuf.B[5:])
	p := s.st.stmts[id]
	if id == mariaDBLastStatement {
		p = s.st.lastPrepared
	}
	if p == nil || !p.deferred {
		return nil
	}
	return p
}

// lookupStmt returns the statement the client calls id and rewrites the
// id in payload[1:5] to the backend's (0, which no statement has, for an
// id the proxy does not know). MariaDB's 0xffffffff stays as it is.
func (s *session) lookupStmt(payload []byte) *stmt {
	if len(payload) < 5 {
		return nil
	}
	id := binary.LittleEndian.Uint32(payload[1:])
	if id == mariaDBLastStatement {
		return s.st.lastPrepared
	}
	p := s.st.stmts[id]
	backend := uint32(0)
	if p != nil {
		backend = p.backendID
	}
	binary.LittleEndian.PutUint32(payload[1:], backend)
	return p
}

// stmtCommand relays COM_STMT_FETCH, RESET, CLOSE and SEND_LONG_DATA
// (which streams: only its statement id need have arrived).
func (s *session) stmtCommand(cmd byte, n int) error {
	payload := s.cbuf.B[4:min(4+n, s.cbuf.N)]
	id := uint32(0)
	if len(payload) >= 5 {
		id = binary.LittleEndian.Uint32(payload[1:])
	}
	p := s.lookupStmt(payload)
	switch cmd {
	case comStmtClose:
		if p == nil && id != mariaDBLastStatement {
			s.cbuf.Consume(4 + n) // nothing to close; no response
			return nil
		}
		if p != nil {
			delete(s.st.stmts, p.clientID)
			if s.st.lastPrepared == p {
				s.st.lastPrepared = nil
			}
		}
		return s.forward(n)
	case comStmtSendLongData:
		if p != nil {
			p.longData = true
		}
		return s.forward(n)
	case comStmtFetch:
		if err := s.simple(n, respFetch); err != nil {
			return err
		}
		if p != nil && s.rs.lastRow {
			p.cursor = false
		}
	case comStmtReset:
		if err := s.simple(n, respSingle); err != nil {
			return err
		}
		if p != nil && s.rs.ok {
			p.longData, p.cursor = false, false
		}
	}
	return nil
}

// execute relays COM_STMT_EXECUTE. It remembers the parameter types the
// client binds, and adds them to the first EXECUTE after the statement was
// prepared again on a new backend connection if the client sends none.
func (s *session) execute(n int, seq byte) error {
	payload := s.cbuf.B[4 : 4+n]
	p := s.lookupStmt(payload)
	cursor := len(payload) > 5 && payload[5]&cursorReadOnly != 0
	s.rs.start(respExecute, s.caps&capDeprecateEOF != 0)
	s.rs.cursor = cursor
	var err error
	if rewrite := p != nil && s.noteTypes(p, payload); rewrite {
		err = s.executeWithTypes(p, n, seq)
	} else {
		err = s.forward(n)
	}
	if err != nil {
		return err
	}
	if err := s.relay(); err != nil {
		return err
	}
	s.noteStatus()
	if p != nil {
		p.longData = false
		p.cursor = s.rs.cursorOpn
	}
	s.st.afterStatement(false, uint16(s.status.Load()))
	return nil
}

// execLayout finds the parameter part of a COM_STMT_EXECUTE payload
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html):
// the offset of new_params_bound_flag and the parameter count. ok is false
// when the packet has no parameter part or is too short.
func execLayout(payload []byte, params uint16, caps uint32) (off int, count uint64, ok bool) {
	if len(payload) < 10 {
		return 0, 0, false
	}
	flags := payload[5]
	off = 10
	count = uint64(params)
	qa := caps&capQueryAttributes != 0
	if qa && (params > 0 || flags&paramCountAvailable != 0) {
		c, k, ok := lenenc(payload[off:])
		if !ok {
			return 0, 0, false
		}
		count, off = c, off+k
	}
	if count == 0 {
		return 0, 0, false
	}
	off += int((count + 7) / 8)
	if off >= len(payload) {
		return 0, 0, false
	}
	return off, count, true
}

// typesEnd returns the end of the parameter types that start at pos: two
// bytes per parameter, with QUERY_ATTRIBUTES each followed by its name.
func typesEnd(payload []byte, pos int, count uint64, qa bool) (int, bool) {
	for range count {
		pos += 2
		if pos > len(payload) {
			return 0, false
		}
		if qa {
			_, k, _, err := lenencString(payload[pos:])
			if err != nil {
				return 0, false
			}
			pos += k
		}
	}
	return pos, true
}

// noteTypes remembers the parameter types an EXECUTE binds and reports
// whether it must be rewritten to carry the remembered ones.
func (s *session) noteTypes(p *stmt, payload []byte) bool {
	off, count, ok := execLayout(payload, p.params, s.caps)
	if !ok {
		return false
	}
	if payload[off] == 1 {
		end, ok := typesEnd(payload, off+1, count, s.caps&capQueryAttributes != 0)
		if ok {
			p.types = append(p.types[:0], payload[off+1:end]...)
			p.typesCount = count
		}
		p.needTypes = false
		return false
	}
	return p.needTypes && p.types != nil && p.typesCount == count
}

// executeWithTypes sends an EXECUTE that binds the statement's remembered
// parameter types: the whole packet is read, rewritten and framed again;
// if that takes more frames than the client sent, the response's sequence
// numbers are shifted back for the client.
func (s *session) executeWithTypes(p *stmt, n int, seq byte) error {
	firstSeq := seq
	payload, lastSeq, err := s.readPacket(n)
	if err != nil {
		return err
	}
	off, _, ok := execLayout(payload, p.params, s.caps)
	if !ok {
		return errors.New("execute layout changed")
	}
	out := make([]byte, 0, len(payload)+1+len(p.types))
	out = append(out, payload[:off]...)
	out = append(out, 1)
	out = append(out, p.types...)
	out = append(out, payload[off+1:]...)
	req, next := appendPacket(nil, firstSeq, out)
	s.rs.seqDelta = next - (lastSeq + 1)
	if err := s.be.write(req); err != nil {
		return backendLost(err)
	}
	p.needTypes = false
	s.log().Debug("added remembered parameter types to the first EXECUTE after a switch", zap.Uint32("statement", p.clientID))
	return nil
}
