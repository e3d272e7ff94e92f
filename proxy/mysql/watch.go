package mysql

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// A MySQL server speaks only when asked, except when it ends a connection
// on its own: wait_timeout, KILL CONNECTION from another session, a
// shutdown. MariaDB 10.11 then closes the connection without a word (a
// reset after wait_timeout, which it closes with SO_LINGER 0; a FIN
// otherwise); MySQL 8.0.24 and later first send an unsolicited ERR packet
// (4031 for wait_timeout) with sequence number 0. A client connected
// directly notices at once: drivers check an idle connection before they
// use it (go-sql-driver's connCheck) and replace it. So that a client of
// the proxy sees the same, a watcher waits for the backend connection to
// become readable while the session waits for its client, and ends the
// client connection the way the server ended its own: the ERR packet, if
// the server sent one, forwarded as it came, then a close, a reset if the
// server reset.
//
// The watcher never consumes a byte: it waits in the netpoller for the
// socket to become readable and peeks. It runs while nobody holds the
// session's mu and the session has waited watchDelay for its client's
// next command: sessionMu's Lock and TryLock stop it before they return,
// so whoever takes mu (the relay of a command, a switch on a drain worker,
// finish) has the backend connection to itself, and Unlock starts it again
// unless a command began.

// watchDelay is how long a session waits for its client's next command
// before its backend connection is watched. A watch costs a goroutine, a
// system call and a handoff when the next command comes (sysbench
// oltp_point_select through the proxy took about 30% more CPU per query
// when every command started one), so clients that send commands close
// together never start it: they pay one timer reset per command. A
// backend connection that ends within watchDelay of the client's last
// command is noticed at watchDelay, or by a switch before it.
const watchDelay = 50 * time.Millisecond

// unsolicitedWait bounds how long the watcher reads what a server that
// spoke unasked still sends before it closes (an ERR packet and the end
// of the stream come together).
const unsolicitedWait = time.Second

// errSessionEnded stops a command that arrived while its session was
// ending (its backend connection ended, or it was terminated): the
// command is not relayed.
var errSessionEnded = errors.New("the session ended before the command was relayed")

// sessionMu is the session's mu. Besides excluding the relay and switches
// from each other, it hands the backend connection to the idle watcher
// while nobody holds it.
type sessionMu struct {
	m sync.Mutex
	s *session
	// idle is set once the session has waited watchDelay for its client,
	// and cleared when a command begins; guarded by m.
	idle bool
	w    *watcher // the running watcher; guarded by m
}

// Lock takes mu and stops the watcher.
func (l *sessionMu) Lock() {
	l.m.Lock()
	l.stopWatch()
}

// TryLock takes mu if it is free, and then stops the watcher. Only
// Switch uses it, for a session that waits for its client: a backend
// connection that ended before the watcher saw it (within watchDelay of
// the last command) ends the session here as the watcher would have,
// instead of failing the switch's capture.
func (l *sessionMu) TryLock() bool {
	if !l.m.TryLock() {
		return false
	}
	l.stopWatch()
	if !l.s.closing {
		l.s.backendEndedNow()
	}
	return true
}

// Unlock starts the watcher if the session is idle, and releases mu.
func (l *sessionMu) Unlock() {
	if l.idle {
		l.startWatch()
	}
	l.m.Unlock()
}

// watcher is one watch of a backend connection, from startWatch to
// stopWatch or to the end of the session.
type watcher struct {
	s    *session
	be   *serverConn
	tcp  *net.TCPConn // the socket under be, under TLS too
	rc   syscall.RawConn
	done chan struct{} // closed when the goroutine has returned

	mu       sync.Mutex // guards stopping and acting
	stopping bool       // stopWatch wants the connection back
	acting   bool       // the watcher saw the backend end and is ending the session
}

// startWatch starts a watcher for a session that waits for its client.
// The caller holds l.m.
func (l *sessionMu) startWatch() {
	s := l.s
	if l.w != nil || s.closing || s.be == nil || s.busy.Load() || s.terminated.Load() {
		return
	}
	tcp := tcpConn(s.be.conn)
	if tcp == nil {
		return
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return
	}
	w := &watcher{s: s, be: s.be, tcp: tcp, rc: rc, done: make(chan struct{})}
	l.w = w
	go w.run()
}

// stopWatch stops the watcher, if one runs, and waits for its goroutine to
// return. A watcher that already saw the backend end finishes ending the
// session first. The caller holds l.m.
func (l *sessionMu) stopWatch() {
	w := l.w
	if w == nil {
		return
	}
	l.w = nil
	w.mu.Lock()
	w.stopping = true
	acting := w.acting
	w.mu.Unlock()
	if !acting {
		w.tcp.SetReadDeadline(aLongTimeAgo)
	}
	<-w.done
	if !acting {
		w.tcp.SetReadDeadline(time.Time{})
	}
}

// run waits until the backend connection is readable. Readable while the
// session is idle means the server ended the connection (end of stream, a
// reset, or an unsolicited packet before either): the session is ended.
// A panic here ends this session alone.
func (w *watcher) run() {
	defer close(w.done)
	defer func() {
		if r := recover(); r != nil {
			s := w.s
			s.h.b.RecordPanic(s.id, "idle watch", r)
			s.terminate(errorFor(proxy.ErrInternalSession), proxy.ErrInternalSession.Code, true)
			s.client.Close() // also when the session was already ending
		}
	}()
	ready, peeked, err := peekEnd(w.rc, true)
	if err != nil || !ready {
		return // stopped, or the connection was closed under the watcher
	}
	w.mu.Lock()
	if w.stopping {
		// The session took its connection back first: whoever reads next
		// finds what the server sent.
		w.mu.Unlock()
		return
	}
	w.acting = true
	w.mu.Unlock()
	w.s.h.fault("watch")
	w.s.backendEnded(w.be, peeked)
}

// peekEnd looks at a backend socket without taking anything from it.
// ready reports that it is readable: peeked is then nil for data, io.EOF
// for the end of the stream, or the socket's error. With wait it waits in
// the netpoller until the socket is readable or its read deadline passes.
func peekEnd(rc syscall.RawConn, wait bool) (ready bool, peeked, err error) {
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				return !wait
			case err != nil:
				peeked = err
			case n == 0:
				peeked = io.EOF
			}
			ready = true
			return true
		}
	})
	return ready, peeked, err
}

// backendEndedNow ends the session, as the watcher would, if its backend
// connection has already ended, and reports whether the session has
// ended. It costs a system call: callers use it only before a switch. The
// caller holds mu (no watcher runs).
func (s *session) backendEndedNow() bool {
	if s.terminated.Load() {
		return true
	}
	tcp := tcpConn(s.be.conn)
	if tcp == nil {
		return false
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	if ready, peeked, err := peekEnd(rc, false); err == nil && ready {
		s.backendEnded(s.be, peeked)
	}
	return s.terminated.Load()
}

// backendEnded ends a session whose backend connection became readable
// while the session waited for its client: the server closed it, reset
// it, or sent something unasked, which servers do only right before they
// close. The client gets what the server sent (an ERR packet, forwarded
// with the server's own sequence number) and then a close, a reset if the
// server reset, just as from the database directly.
func (s *session) backendEnded(be *serverConn, peeked error) {
	var got []byte
	end := peeked
	if peeked == nil {
		got, end = readUntilEnd(be)
	}
	pkt := unsolicitedErr(got)
	reset := errors.Is(end, syscall.ECONNRESET)
	if s.killed.Load() {
		// A KILL CONNECTION of this session's proxy id: report it as the
		// KILL does.
		s.terminateKilled()
		return
	}
	if !s.terminated.CompareAndSwap(false, true) {
		return
	}
	s.h.b.CountClientError(proxy.CodeBackendLost)
	s.wmu.Lock()
	if pkt != nil && !s.errWritten && !s.outMid {
		s.client.SetWriteDeadline(time.Now().Add(time.Second))
		relaybuf.WriteAll(s.client, s.crd.RC, pkt)
	}
	s.errWritten = true
	s.wmu.Unlock()
	closeClient(s.client, reset)
	fields := []zap.Field{zap.String("how", endDescription(end, reset))}
	if pkt != nil {
		e := parseErr(pkt[4:])
		fields = append(fields, zap.Uint16("mysql_error", e.Code), zap.String("message", e.Message))
	} else if len(got) > 0 {
		fields = append(fields, zap.Int("unexpected_bytes", len(got)))
	}
	s.log().Info("the database ended the connection of an idle session; the client's connection is closed too", fields...)
}

// readUntilEnd reads what the server sent unasked until the connection
// ends (at most 64 KiB, for at most unsolicitedWait), and returns it with
// the error that ended the read.
func readUntilEnd(be *serverConn) ([]byte, error) {
	be.conn.SetReadDeadline(time.Now().Add(unsolicitedWait))
	var got []byte
	buf := make([]byte, 512)
	for len(got) < 64<<10 {
		n, err := be.conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

// unsolicitedErr returns the first packet of got, header included, if it
// is a complete ERR packet (one frame), and nil otherwise.
func unsolicitedErr(got []byte) []byte {
	if len(got) < 4 {
		return nil
	}
	n := frameLen(got)
	if n < 3 || n >= maxFrame || len(got) < 4+n || got[4] != hdrERR {
		return nil
	}
	return got[:4+n]
}

// endDescription names how a backend connection ended, for the log.
func endDescription(err error, reset bool) string {
	switch {
	case reset:
		return "reset"
	case err == nil, errors.Is(err, io.EOF):
		return "closed"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "sent data and stayed open"
	}
	return fmt.Sprintf("failed: %v", err)
}

// idleTimeout runs on the idle timer's goroutine once the session has
// waited watchDelay for its client: it marks the session idle and starts
// the watcher. A panic here ends this session alone.
func (s *session) idleTimeout() {
	defer s.h.b.Recover(s, "idle timer")
	if s.busy.Load() {
		return // a command runs; its end sets the timer again
	}
	if !s.mu.m.TryLock() {
		// A switch or finish has the session: look again later.
		s.idleTimer.Reset(watchDelay)
		return
	}
	defer s.mu.m.Unlock()
	if !s.busy.Load() {
		s.mu.idle = true
		s.mu.startWatch()
	}
}
