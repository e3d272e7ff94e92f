package postgres

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// Loops is a set of relay loops shared by the handlers of a process. A
// relay loop is one goroutine locked to an OS thread that waits on its own
// epoll instance and forwards bytes for many plaintext sessions, doing per
// batch exactly one read and one write system call and no goroutine
// switch, as PgBouncer does. Idle sessions cost no goroutine and no buffer.
type Loops struct {
	loops []*relayLoop
	next  atomic.Uint64
}

// NewLoops starts n relay loops (n ≥ 1).
func NewLoops(n int, log *zap.Logger) (*Loops, error) {
	if log == nil {
		log = zap.NewNop()
	}
	ls := &Loops{}
	for i := range n {
		l, err := newRelayLoop(log.With(zap.Int("loop", i)))
		if err != nil {
			ls.Close()
			return nil, err
		}
		ls.loops = append(ls.loops, l)
		go l.run()
	}
	return ls, nil
}

// pick returns the loop for a new session, round robin.
func (ls *Loops) pick() *relayLoop {
	return ls.loops[ls.next.Add(1)%uint64(len(ls.loops))]
}

// Close stops every loop and waits for them. Sessions still attached are
// abandoned; callers terminate sessions first. Idempotent.
func (ls *Loops) Close() {
	for _, l := range ls.loops {
		l.stop()
	}
}

// relayLoop owns the descriptors of the sessions attached to it. Everything
// below mu is touched only by the loop goroutine; other goroutines reach a
// session's relay state by posting a function to the loop.
type relayLoop struct {
	epfd int
	evfd int // eventfd that wakes EpollWait for posted functions
	log  *zap.Logger

	mu      sync.Mutex
	queue   []posted
	stopped bool
	done    chan struct{}

	eps map[int]*endpoint // attached descriptors
	buf []byte            // read buffer shared by all sessions of the loop
}

// endpoint is one registered descriptor: the client or the backend side of
// a session.
type endpoint struct {
	s      *session
	fd     int
	client bool
	in     bool // EPOLLIN registered (false while the peer is backed up)
	out    bool // EPOLLOUT registered (while bytes for fd are pending)
	// parked is set while the client is not read because the memory
	// budget has nothing for the message it is sending (awaitMemory):
	// neither EPOLLIN nor EPOLLRDHUP is registered then.
	parked bool
}

func newRelayLoop(log *zap.Logger) (*relayLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return &relayLoop{
		epfd: epfd, evfd: evfd, log: log,
		done: make(chan struct{}),
		eps:  make(map[int]*endpoint),
		buf:  make([]byte, relaybuf.Size),
	}, nil
}

// posted is a function to run on the loop goroutine for session s.
type posted struct {
	s *session
	f func()
}

// post runs f on the loop goroutine; a panic in f ends session s if it is
// attached. It reports false if the loop stopped.
func (l *relayLoop) post(s *session, f func()) bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, posted{s, f})
	l.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(l.evfd, one[:])
	return true
}

func (l *relayLoop) stop() {
	l.mu.Lock()
	already := l.stopped
	l.stopped = true
	l.mu.Unlock()
	if !already {
		var one = [8]byte{1}
		unix.Write(l.evfd, one[:])
	}
	<-l.done
}

// run is the loop goroutine. Its thread waits in epoll_wait while idle;
// since the P is merely in a system call, waking up costs one context
// switch and no scheduler hand-off. (The goroutine is not locked to its
// thread: yielding a locked goroutine hands its P to another thread.)
func (l *relayLoop) run() {
	defer func() {
		unix.Close(l.epfd)
		unix.Close(l.evfd)
		close(l.done)
	}()
	events := make([]unix.EpollEvent, 256)
	lastYield := time.Now()
	for {
		// A goroutine that never passes through the scheduler looks to
		// sysmon like one running for too long: after 10 ms it would
		// preempt it and take its P on every system call, keeping sysmon
		// awake at a 20 µs period. Yielding now and then avoids that.
		if now := time.Now(); now.Sub(lastYield) > 5*time.Millisecond {
			runtime.Gosched()
			lastYield = now
		}
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			l.log.Error("relay loop stopped", zap.Error(err))
			return
		}
		for i := range n {
			fd := int(events[i].Fd)
			if fd == l.evfd {
				if !l.runQueue() {
					return
				}
				continue
			}
			if ep := l.eps[fd]; ep != nil {
				l.handle(ep, events[i].Events)
			}
		}
	}
}

// runQueue runs posted functions; it reports false once the loop must stop.
func (l *relayLoop) runQueue() bool {
	var b [8]byte
	unix.Read(l.evfd, b[:])
	l.mu.Lock()
	q := l.queue
	l.queue = nil
	stopped := l.stopped
	l.mu.Unlock()
	for _, p := range q {
		l.safely(p.s, p.f)
	}
	return !stopped
}

// safely runs f, turning a panic into the end of session s (if any) so
// that one connection cannot take the loop and its other sessions down.
func (l *relayLoop) safely(s *session, f func()) {
	defer l.recoverSession(s)
	f()
}

// recoverSession, deferred directly, ends session s after a panic on the
// loop goroutine if the loop owns it (attached); a detached session
// belongs to the goroutine that detached it.
func (l *relayLoop) recoverSession(s *session) {
	r := recover()
	if r == nil {
		return
	}
	if s == nil {
		l.log.Error("panic in relay loop", zap.String("panic", fmt.Sprint(r)), zap.ByteString("stack", debug.Stack()))
		return
	}
	s.h.b.RecordPanic(s.id, "relay loop", r)
	s.readerFailed.Store(true)
	if s.attached {
		l.end(s, false, proxy.ErrInternalSession)
	}
}

func (l *relayLoop) handle(ep *endpoint, events uint32) {
	s := ep.s
	defer l.recoverSession(s)
	if events&unix.EPOLLOUT != 0 && ep.out {
		s.flushPending(l, ep)
		if !s.attached {
			return
		}
	}
	if ep.parked {
		if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			l.end(s, false, nil) // the client is gone; nothing reaches it
		}
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
		if ep.client {
			s.fromClient(l)
		} else {
			s.fromServer(l)
		}
	}
}

func (l *relayLoop) ctl(op int, ep *endpoint) error {
	ev := unix.EpollEvent{Fd: int32(ep.fd)}
	if !ep.parked {
		ev.Events = unix.EPOLLRDHUP
	}
	if ep.in {
		ev.Events |= unix.EPOLLIN
	}
	if ep.out {
		ev.Events |= unix.EPOLLOUT
	}
	return unix.EpollCtl(l.epfd, op, ep.fd, &ev)
}

// setInterest changes what the loop waits for on ep; a parked endpoint
// is not read whatever in says.
func (l *relayLoop) setInterest(ep *endpoint, in, out bool) {
	in = in && !ep.parked
	if ep.in == in && ep.out == out {
		return
	}
	ep.in, ep.out = in, out
	if err := l.ctl(unix.EPOLL_CTL_MOD, ep); err != nil {
		l.log.Error("epoll_ctl", zap.Error(err))
	}
}

// park stops reading ep (the client) until unpark, end of stream and
// all: see endpoint.parked.
func (l *relayLoop) park(ep *endpoint) {
	ep.parked, ep.in = true, false
	if err := l.ctl(unix.EPOLL_CTL_MOD, ep); err != nil {
		l.log.Error("epoll_ctl", zap.Error(err))
	}
}

// unpark reads ep again, if in (the peer is not backed up).
func (l *relayLoop) unpark(ep *endpoint, in bool) {
	ep.parked, ep.in = false, in
	if err := l.ctl(unix.EPOLL_CTL_MOD, ep); err != nil {
		l.log.Error("epoll_ctl", zap.Error(err))
	}
}

// attach registers both descriptors of s. Loop goroutine only.
func (l *relayLoop) attach(s *session) error {
	s.cep = endpoint{s: s, fd: s.client.(*fdConn).fd, client: true, in: true}
	s.bep = endpoint{s: s, fd: s.be.conn.(*fdConn).fd, in: true}
	if err := l.ctl(unix.EPOLL_CTL_ADD, &s.cep); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, &s.bep); err != nil {
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.cep.fd, nil)
		return os.NewSyscallError("epoll_ctl", err)
	}
	l.eps[s.cep.fd] = &s.cep
	l.eps[s.bep.fd] = &s.bep
	s.attached = true
	return nil
}

// detach unregisters both descriptors of s; afterwards one goroutine may
// use the session's connections with blocking I/O. Loop goroutine only.
func (l *relayLoop) detach(s *session) {
	if !s.attached {
		return
	}
	for _, ep := range []*endpoint{&s.cep, &s.bep} {
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, ep.fd, nil)
		delete(l.eps, ep.fd)
	}
	s.attached = false
}

// end detaches s and finishes it on its own goroutine (which may reset the
// backend connection for the pool). Loop goroutine only.
func (l *relayLoop) end(s *session, clean bool, cause error) {
	l.detach(s)
	go s.finish(clean, cause)
}
