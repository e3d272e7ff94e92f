package mysql

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// aLongTimeAgo is a deadline in the past, used to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// pinState records why a session cannot move to a new backend connection.
type pinState struct {
	reason string
	since  time.Time
}

// session is one authenticated client and its backend connection.
//
// Goroutines: MySQL is strictly command/response (the server speaks
// unasked only to end a connection), so one goroutine, the handler's, runs
// the session: it waits for the client's next command without holding a
// buffer, forwards it, and relays the response, holding mu from the
// command's first byte to the response's last. A switch runs either on
// that goroutine before a command or on a drain worker while the session
// waits for its client; both hold mu, so the backend connection is only
// ever used by one of them. Once the session has waited watchDelay for
// its client, a watcher goroutine waits, while nobody holds mu, for the
// backend connection to become readable, that is for the server to end it
// (watch.go); taking mu stops it. Terminate may be called from any
// goroutine.
type session struct {
	h      *Handler
	id     uint64
	connID uint32 // proxy-minted connection id, sent in the greeting
	lg     *zap.Logger
	lgOnce sync.Once

	client     net.Conn
	clientAddr string
	crd        relaybuf.Reader
	// cbuf holds bytes read from the client; sbuf bytes read from the
	// backend. Both belong to the session goroutine, and sbuf to a switch
	// holding mu. cbuf grows past a pooled buffer through the memory
	// budget, as the bytes of a command's first frame arrive.
	cbuf relaybuf.Buf
	sbuf relaybuf.Buf
	// stop is closed when the session ends, ending a wait for memory.
	stop relaybuf.Stop
	// caps are the capabilities negotiated with the client (the mirrored
	// ones are identical on every backend connection of the session).
	caps        uint32
	database    string // the database of the handshake
	params      dialParams
	connectedAt time.Time
	user        atomic.Pointer[string]

	// wmu orders writes to the client between the session goroutine and
	// Terminate. The fields below it are guarded by it.
	wmu        sync.Mutex
	inCommand  bool // a command is being relayed
	outMid     bool // the client has received part of a packet
	outSeq     byte // the sequence number the client expects next
	errWritten bool // an ERR was sent by Terminate

	// mu is held by the session goroutine while it relays one command, and
	// by Switch and finish for their whole run; the watcher has the backend
	// connection while nobody holds it. The fields below it are guarded by
	// it.
	mu           sessionMu
	be           *serverConn
	key          string
	st           sessState
	info         sqlInfo // scratch for scanSQL
	rs           respScanner
	closing      bool
	lastPinCheck time.Time
	retry        proxy.SwitchRetry // backoff after failed switches
	replayPin    replayPin         // a SQL PREPARE whose replay failed

	gen        atomic.Uint64
	status     atomic.Uint32 // status flags of the latest OK or EOF
	thread     atomic.Uint32 // the backend's thread id (KILL)
	busy       atomic.Bool   // a command is in flight
	beConn     atomic.Pointer[net.Conn]
	pin        atomic.Pointer[pinState]
	terminated atomic.Bool
	termErr    atomic.Pointer[myError]
	// idleTimer starts the watcher when the session has waited watchDelay
	// for its client; every command sets it again.
	idleTimer *time.Timer
	// killed is set while a KILL CONNECTION of the session's proxy id
	// runs: however the end reaches the session first (the KILL's answer,
	// or its backend connection ending), the client gets "Connection was
	// killed".
	killed atomic.Bool
}

var _ proxy.Session = (*session)(nil)

// newSession creates the session of an authenticated client; it joins the
// backend's registry when its relay runs.
func (h *Handler) newSession(client net.Conn, connID uint32, user string, lg *login) *session {
	s := &session{
		h:           h,
		id:          h.nextID.Add(1),
		connID:      connID,
		client:      client,
		clientAddr:  client.RemoteAddr().String(),
		crd:         relaybuf.NewReader(client, &h.bufs),
		caps:        lg.params.caps,
		database:    lg.db,
		params:      lg.params,
		key:         lg.key,
		connectedAt: time.Now(),
		be:          lg.be,
	}
	s.mu.s = s
	s.idleTimer = time.AfterFunc(time.Duration(math.MaxInt64), s.idleTimeout) // run sets it
	s.user.Store(&user)
	s.st.init(s.caps, lg.db)
	s.setBackend(lg.be)
	s.status.Store(uint32(lg.be.status))
	h.connMu.Lock()
	h.conns[connID] = s
	h.connMu.Unlock()
	return s
}

// setBackend makes c the session's backend connection.
func (s *session) setBackend(c *serverConn) {
	s.be = c
	s.gen.Store(c.gen)
	s.thread.Store(c.thread)
	s.beConn.Store(&c.conn)
}

// log returns the session's logger (client, user, database, session id).
func (s *session) log() *zap.Logger {
	s.lgOnce.Do(func() {
		s.lg = s.h.log.With(zap.String("client", s.clientAddr), zap.String("user", *s.user.Load()),
			zap.String("database", s.database), zap.Uint64("session", s.id))
	})
	return s.lg
}

// ID implements proxy.Session.
func (s *session) ID() uint64 { return s.id }

// Generation implements proxy.Session.
func (s *session) Generation() uint64 { return s.gen.Load() }

// PoolKey implements proxy.Session.
func (s *session) PoolKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key
}

// Info implements proxy.Session.
func (s *session) Info() proxy.SessionInfo {
	info := proxy.SessionInfo{
		ID:          s.id,
		Client:      s.clientAddr,
		User:        *s.user.Load(),
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
	case s.busy.Load():
		return "active"
	case uint16(s.status.Load())&statusInTrans != 0:
		return "idle_in_transaction"
	}
	return proxy.StateIdle
}

// DialSpare implements proxy.Session.
func (s *session) DialSpare(ctx context.Context, gen *creds.Generation) (proxy.PooledConn, error) {
	s.mu.Lock()
	p, key := s.params, s.key
	s.mu.Unlock()
	return s.h.dial(ctx, gen, p, key)
}

// Terminate implements proxy.Session: a session waiting for its client
// gets an ERR and is closed; one relaying a command is interrupted, and
// its goroutine sends the ERR where the client can read it.
func (s *session) Terminate(e *proxy.Error) {
	s.terminate(errorFor(e), e.Code, true)
}

// terminate ends the session with me, counting code when count is set.
func (s *session) terminate(me *myError, code proxy.Code, count bool) {
	if !s.terminated.CompareAndSwap(false, true) {
		return
	}
	s.termErr.Store(me)
	s.stop.Close()
	if count {
		s.h.b.CountClientError(code)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.inCommand {
		// Sequence 1: the answer to whatever the client sends next.
		s.client.SetWriteDeadline(time.Now().Add(time.Second))
		s.client.Write(appendErr(nil, 1, me))
		s.errWritten = true
		s.client.Close()
		return
	}
	s.client.SetReadDeadline(aLongTimeAgo)
	if c := s.beConn.Load(); c != nil {
		(*c).SetDeadline(aLongTimeAgo)
	}
}

// run relays until either side ends, then releases everything.
func (s *session) run(ctx context.Context) {
	s.h.b.Sessions.Add(s) // the relay runs: the drain controller may see it
	s.idleTimer.Reset(watchDelay)
	var clean bool
	var err error
	defer func() {
		// A panic while relaying ends this session alone, with a clean
		// error to its client; it is logged with its stack and counted.
		if r := recover(); r != nil {
			s.h.b.RecordPanic(s.id, "session", r)
			clean, err = false, proxy.ErrInternalSession
		}
		s.finish(clean, err)
	}()
	clean, err = s.clientLoop(ctx)
}

// clientLoop reads commands from the client and relays each until the
// client leaves (clean: COM_QUIT, or EOF between commands) or something
// fails. Each command sets the idle timer again, which starts the backend
// connection's watcher when no command follows for watchDelay (watch.go).
//
// A command whose first frame the relay reads whole (commandReady) grows
// cbuf as its bytes arrive, through the memory budget: while the budget
// has nothing to give, the client is not read.
func (s *session) clientLoop(ctx context.Context) (clean bool, err error) {
	pool := &s.h.bufs
	mem := s.h.b.Memory()
	for {
		if s.cbuf.N == 0 {
			s.cbuf.Fit(pool, mem)
		}
		if s.cbuf.N >= 4 {
			n := frameLen(s.cbuf.B)
			if n == 0 {
				return false, proxy.Errorf(proxy.CodeProtocolViolation, nil, "empty command packet")
			}
			if s.h.maxPayload > 0 && n > s.h.maxPayload {
				return false, tooLarge(n)
			}
			if s.commandReady(n) {
				quit, err := s.command(ctx)
				if err != nil || quit {
					return quit, err
				}
				s.cbuf.Fit(pool, mem)
				s.idleTimer.Reset(watchDelay)
				continue
			}
			if s.cbuf.N == len(s.cbuf.B) {
				if err := s.cbuf.GrowFor(4+n, mem, s.stop.C()); err != nil {
					if proxy.ErrMemoryWaitStopped(err) {
						return false, nil // terminated: the client was told
					}
					return false, err
				}
			}
		}
		if err := s.crd.Fill(&s.cbuf); err != nil {
			if s.cbuf.N == 0 && errors.Is(err, io.EOF) {
				return true, nil
			}
			if s.terminated.Load() {
				return false, nil
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return false, nil // the client left mid-command
			}
			return false, err
		}
	}
}

// commandReady reports whether the command at the start of cbuf (the
// first frame's header, n payload bytes) can be handled with the bytes
// there. Most commands need their first frame whole, because the relay
// reads their arguments (or a statement's text) before it forwards them.
// COM_STMT_SEND_LONG_DATA needs only its statement id and streams the
// rest; COM_STMT_PREPARE, COM_CHANGE_USER and the commands the proxy
// refuses are read packet by packet as their bytes arrive (readPacket,
// skipPacket).
func (s *session) commandReady(n int) bool {
	if s.cbuf.N >= 4+n {
		return true
	}
	if s.cbuf.N < 5 {
		return false
	}
	switch s.cbuf.B[4] {
	case comStmtSendLongData:
		return s.cbuf.N >= 4+5 // command, statement id
	case comStmtPrepare, comChangeUser:
		return true
	case comQuit, comQuery, comInitDB, comFieldList, comCreateDB, comDropDB, comRefresh, comShutdown,
		comStatistics, comProcessInfo, comProcessKill, comDebug, comPing, comStmtExecute, comStmtClose,
		comStmtReset, comSetOption, comStmtFetch, comResetConnection:
		return false
	}
	return true // refused: skipped as it arrives
}

func tooLarge(n int) *proxy.Error {
	return proxy.Errorf(proxy.CodeMessageTooLarge, nil,
		"Got a packet bigger than the proxy's max_message_size (%d bytes)", n)
}

// beginCommand marks a command in flight; the client's next expected
// sequence number is seq+1. The caller holds mu.
func (s *session) beginCommand(seq byte) {
	s.mu.idle = false
	s.wmu.Lock()
	s.inCommand, s.outMid, s.outSeq = true, false, seq+1
	s.wmu.Unlock()
	s.busy.Store(true)
}

// endCommand marks the session waiting for its client again. After a
// failure the command stays marked, so that finish answers it with the
// sequence number the client expects.
func (s *session) endCommand(err error) {
	if err != nil {
		return
	}
	s.wmu.Lock()
	s.inCommand = false
	s.wmu.Unlock()
	s.busy.Store(false)
}

// writeClient sends p, bytes of the response to the current command.
func (s *session) writeClient(p []byte, mid bool, nextSeq byte) error {
	err := relaybuf.WriteAll(s.client, s.crd.RC, p)
	s.wmu.Lock()
	s.outMid, s.outSeq = mid, nextSeq
	s.wmu.Unlock()
	return err
}

// reply sends a packet the proxy made as the complete answer to the
// current command.
func (s *session) reply(p []byte) error {
	return relaybuf.WriteAll(s.client, s.crd.RC, p)
}

// finish releases the session: the backend connection goes back to the
// pool if the client left cleanly at a safe point with a current
// connection, and is closed otherwise.
//
// A backend connection that the database ended under a command (end of
// stream, reset) ends the client connection the same way and without an
// ERR, as the database's own connection would have: the client's library
// reports the lost connection itself (2013 "Lost connection to server
// during query").
func (s *session) finish(clean bool, cause error) {
	s.idleTimer.Stop()
	s.stop.Close()
	me := s.termErr.Load()
	reset := false
	if me == nil && cause != nil && !clean {
		var pe *proxy.Error
		var gone *backendGoneError
		switch {
		case errors.As(cause, &gone) && s.killed.Load():
			s.terminateKilled()
			me = s.termErr.Load()
		case errors.As(cause, &gone) && s.terminated.CompareAndSwap(false, true):
			s.h.b.CountClientError(proxy.CodeBackendLost)
			reset = errors.Is(gone, syscall.ECONNRESET)
			s.wmu.Lock()
			s.errWritten = true // nothing: the database sent nothing either
			s.wmu.Unlock()
			s.log().Info("the database ended the session's connection during a command; the client's connection is closed too",
				zap.Error(gone.err))
		case errors.As(cause, &pe) && s.terminated.CompareAndSwap(false, true):
			me = errorFor(pe)
			s.termErr.Store(me)
			s.h.b.CountClientError(pe.Code)
			s.log().Info("closing session", zap.Error(cause))
		default:
			s.log().Debug("session ended", zap.Error(cause))
		}
	}
	if me != nil {
		s.wmu.Lock()
		if !s.errWritten && !s.outMid {
			seq := byte(1)
			if s.inCommand {
				seq = s.outSeq
			}
			s.client.SetWriteDeadline(time.Now().Add(time.Second))
			s.client.Write(appendErr(nil, seq, me))
			s.errWritten = true
		}
		s.wmu.Unlock()
	}
	closeClient(s.client, reset)

	s.mu.Lock()
	s.closing = true
	be := s.be
	cur := s.h.b.Store.Current()
	reuse := clean && !s.terminated.Load() && !s.busy.Load() && s.safePoint() && cur != nil && be.gen == cur.N &&
		s.cbuf.N == 0
	key := s.key
	s.mu.Unlock()
	s.h.unregister(s)
	s.h.b.Release()
	s.cbuf.N = 0
	s.cbuf.Fit(&s.h.bufs, s.h.b.Memory())
	s.sbuf.N = 0
	s.sbuf.Release(&s.h.bufs)

	if reuse && key == be.key && s.h.b.Pool.Len() < s.h.maxIdle {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.h.resetForPool(ctx, be, s.database)
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

// closeClient closes the client connection; with reset, with a TCP reset
// (SO_LINGER 0), as a server that reset its own connection would have.
func closeClient(c net.Conn, reset bool) {
	if reset {
		if t := tcpConn(c); t != nil {
			t.SetLinger(0)
		}
	}
	c.Close()
}

// tcpConn returns the TCP connection under a client or backend
// connection (plain, or TLS over the handshake wrapper or the greeting
// sniffer), or nil.
func tcpConn(c net.Conn) *net.TCPConn {
	for {
		switch cc := c.(type) {
		case *net.TCPConn:
			return cc
		case *tls.Conn:
			c = cc.NetConn()
		case *sniffConn:
			c = cc.Conn
		case *handshakeConn:
			c = cc.Conn
		default:
			return nil
		}
	}
}

// unregister forgets the session and its connection id.
func (h *Handler) unregister(s *session) {
	h.connMu.Lock()
	if h.conns[s.connID] == s {
		delete(h.conns, s.connID)
	}
	h.connMu.Unlock()
	h.b.Sessions.Remove(s)
}

// replayPin is a SQL PREPARE whose replay failed on a new connection, and
// when: the session stays pinned for replayPinPeriod unless the client
// deallocates it.
type replayPin struct {
	name string
	at   time.Time
}
