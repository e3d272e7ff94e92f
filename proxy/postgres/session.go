package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// Message types whose whole body the relay needs (all others stream
// through unbuffered). Client: Query and Parse, scanned for custom setting
// names and the unnamed statement. Server: ReadyForQuery (transaction
// status), ParameterStatus (reported values), ErrorResponse (FATAL).
var (
	clientWant = wantSet('Q', 'P')
	serverWant = wantSet('Z', 'S', 'E')
	// While statements are deferred (deferred.go) the relay also reads
	// the messages that name a statement, and the answers it may drop.
	clientWantDeferred = wantSet('Q', 'P', 'B', 'D', 'C')
	serverWantDeferred = wantSet('Z', 'S', 'E', '1')
)

// clientWantSet is the want set for the client's stream now.
func (s *session) clientWantSet() *[256]bool {
	if s.dfr.active() {
		return clientWantDeferred
	}
	return clientWant
}

// serverWantSet is the want set for the backend's stream now.
func (s *session) serverWantSet() *[256]bool {
	if s.dfr.active() {
		return serverWantDeferred
	}
	return serverWant
}

// maxCustomSettings bounds the custom setting names one session remembers.
const maxCustomSettings = 256

// errTerminated stops the client reader of a session that was terminated.
var errTerminated = errors.New("session terminated")

// aLongTimeAgo is a deadline in the past, used to interrupt a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// cancelTarget is where a CancelRequest for the session goes: its current
// backend process.
type cancelTarget struct {
	pid    uint32
	secret []byte
}

// pinState records why a session cannot move to a new backend connection.
type pinState struct {
	reason string
	since  time.Time
}

// session is one authenticated client and its backend connection.
//
// Goroutines: the client reader (the handler's goroutine, running
// clientLoop) forwards client→backend; the backend reader (backendLoop)
// forwards backend→client. Switches run on the client reader or on a
// drain worker, always holding mu, and pause the backend reader while they
// use the backend connection themselves.
type session struct {
	h  *Handler
	id uint64
	// lg is the session's logger, built on first use: zap's With costs a
	// kilobyte or so per call, which an idle session should not hold.
	lg     *zap.Logger
	lgOnce sync.Once

	client     net.Conn
	clientAddr string
	crd        relaybuf.Reader
	cbuf       relaybuf.Buf // client reader only; grown through the memory budget
	cfs        frameState   // client reader only
	user       string
	database   string
	// params are the startup parameters forwarded to every backend
	// connection of the session; key is their pool key.
	params      map[string]string
	key         string
	cancelPID   uint32
	secret      uint32 // the cancel key's secret half
	connectedAt time.Time
	gucSink     func(string) // s.addCustomSetting, bound once

	// wmu serializes writes to the client. clientMidMsg (under wmu) is set
	// while the client has received only part of a message, when nothing
	// else may be written to it.
	wmu          sync.Mutex
	clientMidMsg bool

	// mu is held by the client reader while it forwards one batch, and by
	// Switch and finish for their whole run. The fields below it are
	// guarded by it.
	mu           sync.Mutex
	be           *serverConn // replaced only while the backend reader is paused
	ext          bool        // extended-protocol messages sent since the last Sync
	lastQE       byte        // 'Q' or 'E', whichever the client sent last
	syncsAfterQE int32       // Syncs forwarded since then
	customGUCs   []string
	replayPin    replayPin // a SQL PREPARE whose replay failed
	// inject holds the messages the client visitor asks to send before
	// the current one (client side only).
	inject []byte
	// clientParams are the ParameterStatus values the client knew before
	// the first of the switches since its last message; nil when the
	// client is up to date. The net change is sent before its next batch.
	clientParams map[string]string
	unnamed      []byte // body of the last unnamed Parse; valid if hasUnnamed
	hasUnnamed   bool
	closing      bool
	lastPinCheck time.Time

	gen         atomic.Uint64
	outstanding atomic.Int32  // Syncs and Queries not yet answered by ReadyForQuery
	txStatus    atomic.Uint32 // status byte of the last ReadyForQuery
	copyIn      atomic.Bool   // the backend is in copy-in mode
	target      atomic.Pointer[cancelTarget]
	pin         atomic.Pointer[pinState]
	retry       proxy.SwitchRetry // spaces out attempts after failed switches
	// dfr holds statements the backend connection lacks (deferred.go).
	dfr deferredSet
	// holdWait is set while the client reader (goroutine relay) holds a
	// message until every Sync and Query is answered; the backend reader
	// then signals holdCh. held is the relay loop's equivalent.
	holdWait   atomic.Bool
	holdCh     chan struct{}
	held       bool
	terminated atomic.Bool
	// finished is set by the first finish; released once the client slot
	// and registry entry are given back.
	finished atomic.Bool
	released atomic.Bool
	// readerFailed is set when the backend reader ended on its own (the
	// backend or the client failed); the backend connection may then be
	// mid-message and is never reused.
	readerFailed atomic.Bool

	// termErr is what Terminate was asked to tell the client.
	termErr atomic.Pointer[proxy.Error]
	// stop is closed when the session ends, ending a wait for memory.
	stop relaybuf.Stop

	// Relay loop state, used when lp is set (plaintext sessions on Linux).
	// While attached, only the loop goroutine touches it and the relay
	// state above; while detached, only the goroutine that detached the
	// session does.
	lp             *relayLoop
	attached       bool
	cep, bep       endpoint
	cpend, spend   []byte // bytes waiting for the backend / the client to accept them
	ccarry, scarry []byte // bytes read but not yet forwarded (a partial message, or a batch held for a switch)
	cneed, sneed   int
	cheld          int // the part of ccarry's capacity taken from the memory budget
	sv             serverVisitor

	// Backend reader state and control (goroutine relay). sbuf and sfs
	// belong to the backend reader, and to a switch while the reader is
	// paused; the relay loop uses sfs too.
	sbuf     relaybuf.Buf
	sfs      frameState
	pauseReq atomic.Bool
	paused   chan struct{}
	resume   chan *serverConn
	g2done   chan struct{}
}

var _ proxy.Session = (*session)(nil)

// log returns the session's logger (client, user, database, session id).
func (s *session) log() *zap.Logger {
	s.lgOnce.Do(func() {
		s.lg = s.h.log.With(zap.String("client", s.clientAddr), zap.String("user", s.user),
			zap.String("database", s.database), zap.Uint64("session", s.id))
	})
	return s.lg
}

// ID implements proxy.Session.
func (s *session) ID() uint64 { return s.id }

// Generation implements proxy.Session.
func (s *session) Generation() uint64 { return s.gen.Load() }

// PoolKey implements proxy.Session.
func (s *session) PoolKey() string { return s.key }

// Info implements proxy.Session.
func (s *session) Info() proxy.SessionInfo {
	info := proxy.SessionInfo{
		ID:          s.id,
		Client:      s.clientAddr,
		User:        s.user,
		Database:    s.database,
		Generation:  s.gen.Load(),
		State:       s.state(),
		ConnectedAt: s.connectedAt,
	}
	if p := s.pin.Load(); p != nil {
		info.PinReason = p.reason
		info.PinnedSince = p.since
	}
	info.SwitchFailure = s.retry.Failure()
	return info
}

func (s *session) state() string {
	switch {
	case s.outstanding.Load() > 0:
		return "active"
	case s.txStatus.Load() != 'I':
		return "idle_in_transaction"
	}
	return proxy.StateIdle
}

// DialSpare implements proxy.Session.
func (s *session) DialSpare(ctx context.Context, gen *creds.Generation) (proxy.PooledConn, error) {
	return s.h.dial(ctx, gen, s.database, s.params, s.key)
}

// Terminate implements proxy.Session: it sends a FATAL error when the
// client is between messages, and closes the client connection, which ends
// the client reader and with it the session.
func (s *session) Terminate(e *proxy.Error) {
	if !s.terminated.CompareAndSwap(false, true) {
		return
	}
	s.termErr.Store(e)
	s.h.b.CountClientError(e.Code)
	s.stop.Close()
	if s.lp != nil {
		s.loopTerminate(e)
		return
	}
	s.wmu.Lock()
	if !s.clientMidMsg {
		s.client.SetWriteDeadline(time.Now().Add(time.Second))
		s.client.Write(appendFatal(nil, e))
	}
	s.wmu.Unlock()
	s.client.Close()
}

// pinThrottled reports whether a pinned session past the drain deadline
// re-checked its pins less than a second ago: such a session is not
// re-captured before every statement.
// switchDue reports whether the session should switch before its next
// batch: it is behind the target at a safe point, and neither a pin
// re-check nor a failed attempt makes it wait. Callers own the relay state.
func (s *session) switchDue() bool {
	return s.h.b.Behind(s.gen.Load()) && s.safePoint() && !s.pinThrottled() &&
		s.retry.Ready(time.Now(), s.h.b.Newest(nil).N)
}

func (s *session) pinThrottled() bool {
	return s.pin.Load() != nil && s.h.b.DrainOverdue() && time.Since(s.lastPinCheck) < pinRecheckPeriod
}

// safePoint reports whether nothing is in flight between client and
// backend, so the backend connection may be exchanged. Callers hold mu.
func (s *session) safePoint() bool {
	return s.outstanding.Load() == 0 && !s.ext && s.txStatus.Load() == 'I' &&
		!s.copyIn.Load() && s.cfs.atBoundary()
}

// run relays until either side ends, then releases everything.
func (s *session) run(ctx context.Context) {
	go s.backendLoop(s.be)
	s.h.b.Sessions.Add(s) // the relay runs: the drain controller may see it
	clean, err := s.relayClient(ctx)
	s.finish(clean, err)
}

// relayClient runs clientLoop; a panic ends the session with an internal
// error instead of leaving it registered without a reader.
func (s *session) relayClient(ctx context.Context) (clean bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.h.b.RecordPanic(s.id, "client reader", r)
			s.readerFailed.Store(true)
			clean, err = false, proxy.ErrInternalSession
		}
	}()
	return s.clientLoop(ctx)
}

// recoverSwitch, deferred directly by a switch while it holds mu, turns a
// panic into a failed switch that ends the session: the backend
// connection may be mid-exchange and is never used again. A session in a
// loop is finished when it is reattached; one relayed by goroutines is
// told and closed now.
func (s *session) recoverSwitch(res *proxy.SwitchResult, err *error) {
	r := recover()
	if r == nil {
		return
	}
	s.h.b.RecordPanic(s.id, "switch", r)
	*res, *err = proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageInternal, Err: fmt.Errorf("panic: %v", r)}
	s.readerFailed.Store(true)
	if s.lp != nil {
		if s.terminated.CompareAndSwap(false, true) {
			s.termErr.Store(proxy.ErrInternalSession)
			s.h.b.CountClientError(proxy.CodeInternal)
		}
		return
	}
	s.Terminate(proxy.ErrInternalSession)
}

// recoverDetached, deferred directly by a goroutine that owns a session
// detached from its loop, finishes the session after a panic.
func (s *session) recoverDetached(where string) {
	if r := recover(); r != nil {
		s.h.b.RecordPanic(s.id, where, r)
		s.readerFailed.Store(true)
		s.finish(false, proxy.ErrInternalSession)
	}
}

// clientLoop forwards client messages to the backend until the client
// leaves (clean: Terminate or EOF) or something fails. A message the relay
// reads whole (clientWant) grows cbuf as its bytes arrive, through the
// memory budget: while the budget has nothing to give, the client is not
// read.
func (s *session) clientLoop(ctx context.Context) (clean bool, err error) {
	pool := &s.h.bufs
	mem := s.h.b.Memory()
	for {
		if s.cbuf.N == 0 {
			s.cbuf.Fit(pool, mem)
		}
		if err := s.crd.Fill(&s.cbuf); err != nil {
			return errors.Is(err, io.EOF), err
		}
		fwd, need, stop, scanErr, werr := s.forwardClientBatch(ctx)
		s.cbuf.Consume(fwd)
		switch {
		case scanErr != nil:
			return false, clientScanError(scanErr)
		case werr != nil:
			return false, proxy.Errorf(proxy.CodeBackendLost, werr, "lost the connection to the database server")
		case stop:
			return true, nil
		}
		if fwd > 0 {
			s.cbuf.Fit(pool, mem)
		}
		if need > s.cbuf.N && s.cbuf.N == len(s.cbuf.B) {
			if err := s.cbuf.GrowFor(need, mem, s.stop.C()); err != nil {
				if proxy.ErrMemoryWaitStopped(err) {
					return false, errTerminated
				}
				return false, err
			}
		}
	}
}

// forwardClientBatch switches first if the session is behind and at a
// safe point, then forwards the whole messages in cbuf, holding mu.
func (s *session) forwardClientBatch(ctx context.Context) (fwd, need int, stop bool, scanErr, werr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.switchDue() {
		s.switchLocked(ctx, s.h.b.Target())
		if s.terminated.Load() { // the switch failed beyond repair
			return 0, 0, false, nil, errTerminated
		}
	}
	if out := s.paramChanges(); len(out) > 0 {
		s.wmu.Lock()
		_, err := s.client.Write(out)
		s.wmu.Unlock()
		if err != nil {
			return 0, 0, false, nil, errTerminated
		}
	}
	emit := func(p []byte) bool {
		werr = s.be.write(p)
		return werr == nil
	}
	for {
		n, need, stop, hold, ok, scanErr := scanForward(&s.cfs, s.cbuf.B[fwd:s.cbuf.N], s.h.maxBody, s.clientWantSet, s, &s.inject, emit)
		fwd += n
		if !ok || !hold {
			return fwd, need, stop, scanErr, werr
		}
		if err := s.waitAnswered(); err != nil {
			return fwd, 0, false, nil, err
		}
	}
}

// waitAnswered waits until every Sync and Query the client sent has been
// answered (goroutine relay), for a message held by the visitor.
func (s *session) waitAnswered() error {
	s.holdWait.Store(true)
	defer s.holdWait.Store(false)
	for s.outstanding.Load() > 0 {
		select {
		case <-s.holdCh:
		case <-s.g2done:
			return errTerminated
		}
	}
	return nil
}

// clientScanError turns a framing error in the client's stream into the
// error the client is told.
func clientScanError(err error) *proxy.Error {
	var le *lengthError
	if errors.As(err, &le) && le.bodyLen >= 0 {
		return proxy.Errorf(proxy.CodeMessageTooLarge, err,
			"message of %d bytes exceeds the proxy's max_message_size", le.bodyLen+4)
	}
	return proxy.Errorf(proxy.CodeProtocolViolation, err, "invalid message from client")
}

// visit implements visitor for client→backend messages; the client reader
// calls it holding mu. It updates the safe-point state before the batch
// is forwarded, so the backend's answer can never overtake it.
func (s *session) visit(typ byte, _ int, body []byte) (bool, error) {
	if s.dfr.active() {
		switch typ {
		case 'P', 'B', 'D', 'C', 'Q':
			if err := s.clientMessage(typ, body, &s.inject); err != nil {
				return false, err
			}
		}
	}
	switch typ {
	case 'Q': // Query: destroys the unnamed statement
		s.outstanding.Add(1)
		s.lastQE, s.syncsAfterQE = 'Q', 0
		s.hasUnnamed = false
		s.dfr.parsesInRound = 0
		scanSettingNames(body, s.gucSink)
	case 'P': // Parse
		s.ext = true
		s.dfr.parsesInRound++
		name, rest, _ := bytes.Cut(body, []byte{0})
		if len(name) == 0 {
			s.unnamed = append(s.unnamed[:0], body...)
			s.hasUnnamed = true
		}
		if q, _, ok := bytes.Cut(rest, []byte{0}); ok {
			scanSettingNames(q, s.gucSink)
		}
	case 'E': // Execute
		s.ext = true
		s.lastQE, s.syncsAfterQE = 'E', 0
	case 'S': // Sync; ignored by the server in copy-in mode
		if !s.copyIn.Load() {
			s.outstanding.Add(1)
			s.ext = false
			s.syncsAfterQE++
			s.dfr.parsesInRound = 0
		}
	case 'F': // FunctionCall
		s.outstanding.Add(1)
	case 'c', 'f': // CopyDone, CopyFail
		if s.copyIn.Load() {
			s.copyIn.Store(false)
			// The server ignored the Syncs that followed an Execute of
			// COPY FROM STDIN; a client sends another after CopyDone.
			if s.lastQE == 'E' {
				s.outstanding.Add(-s.syncsAfterQE)
				s.syncsAfterQE = 0
			}
		}
	case 'd': // CopyData
	case 'X': // Terminate: the backend connection stays open for the pool
		return true, nil
	default: // Bind, Describe, Close, Flush and anything else
		s.ext = true
	}
	return false, nil
}

// paramChanges returns the ParameterStatus messages for the values that
// differ between what the client knew before the switches since its last
// message and what the current backend connection reports: the net
// change, however many switches happened while the client was quiet.
// Callers hold mu (or own the detached session) and send the result
// before forwarding the client's next batch.
func (s *session) paramChanges() []byte {
	if s.clientParams == nil {
		return nil
	}
	var out []byte
	for k, v := range s.be.params {
		if ov, ok := s.clientParams[k]; !ok || ov != v {
			out = appendMsg(out, &pgproto3.ParameterStatus{Name: k, Value: v})
		}
	}
	s.clientParams = nil
	return out
}

func (s *session) addCustomSetting(name string) {
	for _, n := range s.customGUCs {
		if n == name {
			return
		}
	}
	if len(s.customGUCs) < maxCustomSettings {
		s.customGUCs = append(s.customGUCs, name)
	}
}

// serverVisitor implements visitor for backend→client messages on the
// backend reader.
type serverVisitor struct {
	s     *session
	be    *serverConn
	rfq   bool // a ReadyForQuery went by in this batch
	fatal bool // a FATAL ErrorResponse went by
}

func (v *serverVisitor) visit(typ byte, n int, body []byte) (bool, error) {
	s := v.s
	if s.dfr.active() {
		switch typ {
		case '1', 'Z':
			if s.serverMessage(typ) {
				return false, errSkip
			}
		case 'E':
			if !isFatal(body) && s.serverMessage(typ) {
				return false, errSkip
			}
		}
	}
	switch typ {
	case 'Z':
		if n != 1 {
			return false, errors.New("malformed ReadyForQuery from the database")
		}
		s.txStatus.Store(uint32(body[0]))
		if s.outstanding.Add(-1) < 0 {
			s.outstanding.Store(0)
		}
		// ReadyForQuery means the server left any copy mode, whatever
		// the client did (an error can end COPY FROM STDIN before the
		// client sends CopyDone).
		s.copyIn.Store(false)
		v.rfq = true
	case 'S':
		if name, value, ok := parseParameterStatus(body); ok {
			v.be.setParam(name, value)
		}
	case 'E':
		if isFatal(body) {
			v.fatal = true
		}
	case 'G', 'W': // CopyInResponse, CopyBothResponse
		s.copyIn.Store(true)
	}
	return false, nil
}

// backendLoop forwards backend messages to the client. It pauses at a
// message boundary when asked (pauseReq and a read deadline in the past),
// hands the connection to the pauser, and continues with whatever backend
// connection it is given back; nil ends it.
func (s *session) backendLoop(be *serverConn) {
	defer close(s.g2done)
	defer func() {
		if r := recover(); r != nil {
			s.h.b.RecordPanic(s.id, "backend reader", r)
			s.readerFailed.Store(true)
			s.Terminate(proxy.ErrInternalSession)
		}
	}()
	pool := &s.h.bufs
	rd := relaybuf.NewReader(be.conn, pool)
	v := serverVisitor{s: s, be: be}
	for {
		if s.pauseReq.Load() && s.sbuf.N == 0 && s.sfs.atBoundary() {
			s.sbuf.Release(pool)
			s.paused <- struct{}{}
			nb := <-s.resume
			if nb == nil {
				return
			}
			be = nb
			rd = relaybuf.NewReader(be.conn, pool)
			v = serverVisitor{s: s, be: be}
			continue
		}
		if s.sbuf.N == 0 {
			s.sbuf.Release(pool)
		}
		if err := rd.Fill(&s.sbuf); err != nil {
			if s.pauseReq.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				if s.sbuf.N > 0 || !s.sfs.atBoundary() {
					be.conn.SetReadDeadline(time.Time{}) // finish the message first
				}
				continue
			}
			s.backendGone(err, v.fatal)
			return
		}
		var werr error
		emit := func(p []byte) bool {
			s.wmu.Lock()
			_, werr = s.client.Write(p)
			s.clientMidMsg = !s.sfs.atBoundary()
			s.wmu.Unlock()
			return werr == nil
		}
		fwd, need, _, _, _, err := scanForward(&s.sfs, s.sbuf.B[:s.sbuf.N], 0, s.serverWantSet, &v, nil, emit)
		if werr != nil {
			s.readerFailed.Store(true)
			s.client.Close() // ends the client reader
			s.sbuf.N = 0
			s.sbuf.Release(pool)
			return
		}
		if err != nil {
			s.backendGone(err, false)
			return
		}
		s.sbuf.Consume(fwd)
		if need > s.sbuf.N && s.sbuf.N == len(s.sbuf.B) {
			s.sbuf.Grow(relaybuf.NextSize(len(s.sbuf.B), need))
		}
		if v.rfq {
			v.rfq = false
			if s.holdWait.Load() && s.outstanding.Load() == 0 {
				select {
				case s.holdCh <- struct{}{}:
				default:
				}
			}
			if s.outstanding.Load() == 0 && s.txStatus.Load() == 'I' && s.pin.Load() == nil && s.h.b.Behind(s.gen.Load()) {
				s.h.b.Nudge(s)
			}
		}
	}
}

// backendGone ends the session after the backend connection failed or
// closed. A FATAL error the server sent has been forwarded already;
// otherwise the client gets one.
func (s *session) backendGone(err error, fatalSent bool) {
	s.readerFailed.Store(true)
	s.stop.Close()
	s.sbuf.N = 0
	s.sbuf.Release(&s.h.bufs)
	if s.terminated.Load() {
		return
	}
	s.log().Info("backend connection ended", zap.Error(err))
	if !fatalSent && s.terminated.CompareAndSwap(false, true) {
		e := proxy.Errorf(proxy.CodeBackendLost, err, "server closed the connection unexpectedly")
		s.h.b.CountClientError(e.Code)
		s.wmu.Lock()
		if !s.clientMidMsg {
			s.client.SetWriteDeadline(time.Now().Add(time.Second))
			s.client.Write(appendFatal(nil, e))
		}
		s.wmu.Unlock()
	}
	s.terminated.Store(true)
	s.client.Close()
}

// pauseReader stops the backend reader at a message boundary so that the
// caller may use be itself. It reports false if the reader had already
// ended (the backend connection is gone). Callers hold mu.
func (s *session) pauseReader(be *serverConn) bool {
	s.pauseReq.Store(true)
	be.conn.SetReadDeadline(aLongTimeAgo)
	select {
	case <-s.paused:
		be.conn.SetReadDeadline(time.Time{})
		return true
	case <-s.g2done:
		s.pauseReq.Store(false)
		return false
	}
}

// resumeReader lets a paused backend reader continue with be; nil ends it.
func (s *session) resumeReader(be *serverConn) {
	s.pauseReq.Store(false)
	s.resume <- be
}

// stopReader ends the backend reader and waits for it.
func (s *session) stopReader() {
	if s.pauseReader(s.be) {
		s.resumeReader(nil)
	}
	<-s.g2done
}

// finish releases the session: the backend connection goes back to the
// pool if the client left cleanly at a safe point with a current
// connection, and is closed otherwise.
func (s *session) finish(clean bool, cause error) {
	if !s.finished.CompareAndSwap(false, true) {
		return
	}
	s.stop.Close()
	defer func() {
		if r := recover(); r != nil {
			s.h.b.RecordPanic(s.id, "finish", r)
			s.client.Close()
			s.be.Close()
			s.releaseSlot()
		}
	}()
	var pe *proxy.Error
	atBoundary := func() bool {
		if s.lp != nil {
			return len(s.spend) == 0 && s.sfs.atBoundary()
		}
		return !s.clientMidMsg
	}
	if cause != nil && !clean && errors.As(cause, &pe) && s.terminated.CompareAndSwap(false, true) {
		s.termErr.Store(pe)
		s.h.b.CountClientError(pe.Code)
		s.log().Info("closing session", zap.Error(cause))
	} else if s.terminated.Load() && s.lp != nil {
		// Terminated while detached (a switch was running): tell the
		// client now.
		pe = s.termErr.Load()
	} else {
		pe = nil
	}
	if pe != nil {
		s.wmu.Lock()
		if atBoundary() {
			s.client.SetWriteDeadline(time.Now().Add(time.Second))
			s.client.Write(appendFatal(nil, pe))
		}
		s.wmu.Unlock()
	}
	// Closing the client first also frees a backend reader blocked on a
	// client that stopped reading.
	s.client.Close()
	s.mu.Lock()
	s.closing = true
	if s.lp == nil {
		s.stopReader()
	}
	be := s.be
	cur := s.h.b.Store.Current()
	// A connection on which custom settings were defined is not pooled:
	// DISCARD ALL resets their values but cannot remove the placeholders,
	// and the next client would find them ('' where it expects NULL).
	reuse := clean && !s.terminated.Load() && !s.readerFailed.Load() && s.safePoint() && cur != nil && be.gen == cur.N &&
		len(s.cpend) == 0 && len(s.scarry) == 0 && len(s.customGUCs) == 0
	s.mu.Unlock()
	s.releaseSlot()
	s.cbuf.N = 0
	s.cbuf.Fit(&s.h.bufs, s.h.b.Memory())
	s.ccarry = nil
	s.h.b.Memory().Release(s.cheld)
	s.cheld = 0

	if reuse && s.h.b.Pool.Len() < s.h.maxIdle {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.h.resetForPool(ctx, be)
		cancel()
		if err == nil && s.h.b.Pool.Put(be, cur.N) {
			return
		}
		if err != nil {
			s.log().Debug("backend connection not reusable", zap.Error(err))
		}
	}
	be.Close()
}

// releaseSlot unregisters the session and gives back its client slot, once.
func (s *session) releaseSlot() {
	if s.released.CompareAndSwap(false, true) {
		s.h.unregister(s)
		s.h.b.Release()
	}
}
