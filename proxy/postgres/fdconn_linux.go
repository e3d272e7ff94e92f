package postgres

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// fdConn is a TCP connection taken out of Go's netpoller so that a relay
// loop can own its descriptor. Outside the loop it behaves as a blocking
// net.Conn: Read and Write wait for readiness with poll(2), honouring
// deadlines set before the call. Deadlines do not interrupt a call already
// waiting, so fdConn is only used where one goroutine at a time does I/O
// (a switch, a pool reset, a handshake reply).
type fdConn struct {
	fd           int
	laddr, raddr net.Addr
	rdl, wdl     atomic.Int64 // deadlines in Unix nanoseconds; 0 = none
	closed       atomic.Bool
}

var _ net.Conn = (*fdConn)(nil)

// detachTCP moves c's socket out of Go's netpoller: it duplicates the
// descriptor and closes c, which removes c's registration from the runtime's
// epoll instance. The duplicate shares the socket and its non-blocking mode.
func detachTCP(c *net.TCPConn) (*fdConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	fc := &fdConn{fd: nfd, laddr: c.LocalAddr(), raddr: c.RemoteAddr()}
	c.Close()
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	return fc, nil
}

func (c *fdConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(c.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if err := c.wait(unix.POLLIN, &c.rdl); err != nil {
				return 0, err
			}
			continue
		case err != nil:
			return 0, c.opError("read", err)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (c *fdConn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Write(c.fd, p[done:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if err := c.wait(unix.POLLOUT, &c.wdl); err != nil {
				return done, err
			}
			continue
		case err != nil:
			return done, c.opError("write", err)
		}
		done += n
	}
	return done, nil
}

// wait blocks until the descriptor is ready for events or the deadline
// passes.
func (c *fdConn) wait(events int16, deadline *atomic.Int64) error {
	for {
		if c.closed.Load() {
			return net.ErrClosed
		}
		timeout := -1
		if dl := deadline.Load(); dl != 0 {
			left := time.Until(time.Unix(0, dl))
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			timeout = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		fds := []unix.PollFd{{Fd: int32(c.fd), Events: events}}
		n, err := unix.Poll(fds, timeout)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return c.opError("poll", err)
		}
		if n > 0 {
			return nil // ready, or an error/hangup the next read or write reports
		}
	}
}

func (c *fdConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: os.NewSyscallError(op, err)}
}

// Close closes the descriptor. Callers make sure no relay loop still has it
// registered. Idempotent.
func (c *fdConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	return unix.Close(c.fd)
}

func (c *fdConn) LocalAddr() net.Addr  { return c.laddr }
func (c *fdConn) RemoteAddr() net.Addr { return c.raddr }

func (c *fdConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *fdConn) SetReadDeadline(t time.Time) error {
	c.rdl.Store(deadlineNanos(t))
	return nil
}

func (c *fdConn) SetWriteDeadline(t time.Time) error {
	c.wdl.Store(deadlineNanos(t))
	return nil
}

func deadlineNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// peekHealthy reports whether an idle connection has nothing to read.
func (c *fdConn) peekHealthy() bool {
	var b [1]byte
	_, _, err := unix.Recvfrom(c.fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err == unix.EAGAIN
}

// netConn hands the socket back to Go's netpoller, for a session relayed
// by goroutines: fdConn's deadlines cannot interrupt a read already
// waiting, and pausing that session's backend reader for a switch relies
// on exactly that. c is closed; the returned connection owns the socket.
func (c *fdConn) netConn() (net.Conn, error) {
	if !c.closed.CompareAndSwap(false, true) {
		return nil, net.ErrClosed
	}
	f := os.NewFile(uintptr(c.fd), "tcp")
	nc, err := net.FileConn(f) // duplicates the descriptor
	f.Close()
	return nc, err
}
