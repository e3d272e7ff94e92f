package mysql

import (
	"io"
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// relayBufSize is the size of pooled relay buffers: large enough that a
// typical batch of messages is read and written with one syscall each.
const relayBufSize = 32 << 10

// bufPool recycles relay buffers. Buffers larger than relayBufSize (grown
// for one oversized message) are dropped instead of pooled.
type bufPool struct{ p sync.Pool }

func (bp *bufPool) get() []byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, relayBufSize)
}

func (bp *bufPool) put(b []byte) {
	if cap(b) != relayBufSize {
		return
	}
	b = b[:relayBufSize]
	bp.p.Put(&b)
}

// rbuf is a relay buffer: data in buf[:n]. buf is nil while the connection
// is idle so that an idle session holds no buffer.
type rbuf struct {
	buf []byte
	n   int
}

// release returns an empty buffer to the pool.
func (b *rbuf) release(bp *bufPool) {
	if b.buf != nil && b.n == 0 {
		bp.put(b.buf)
		b.buf = nil
	}
}

// consume drops the first k bytes, keeping the rest at the front.
func (b *rbuf) consume(k int) {
	if k == 0 {
		return
	}
	b.n = copy(b.buf, b.buf[k:b.n])
}

// grow makes room for at least size bytes in total, keeping the data.
func (b *rbuf) grow(size int) {
	if size <= len(b.buf) {
		return
	}
	nb := make([]byte, size)
	copy(nb, b.buf[:b.n])
	b.buf = nb
}

// connReader reads from one connection into an rbuf. For plain TCP it
// waits for readability through syscall.RawConn and takes a buffer from the
// pool only when data has arrived, so idle sessions hold none; other
// connections (TLS) read through net.Conn.Read into a held buffer.
type connReader struct {
	conn net.Conn
	rc   syscall.RawConn // nil unless conn is a *net.TCPConn
	pool *bufPool
}

func newConnReader(c net.Conn, pool *bufPool) connReader {
	return connReader{conn: c, rc: rawConn(c), pool: pool}
}

// fill reads at least one byte into b after b.buf[:b.n]. It returns io.EOF
// at end of stream and the connection's error (deadline, closed) otherwise.
func (r *connReader) fill(b *rbuf) error {
	if r.rc == nil {
		if b.buf == nil {
			b.buf = r.pool.get()
		}
		n, err := r.conn.Read(b.buf[b.n:])
		b.n += n
		if n > 0 {
			return nil
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	var n int
	var rerr error
	err := r.rc.Read(func(fd uintptr) bool {
		acquired := false
		if b.buf == nil {
			b.buf = r.pool.get()
			acquired = true
		}
		n, rerr = rawRead(fd, b.buf[b.n:])
		if rerr == syscall.EAGAIN {
			if acquired {
				r.pool.put(b.buf)
				b.buf = nil
			}
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	if n <= 0 {
		return io.EOF
	}
	b.n += n
	return nil
}

// ensure reads from r until b holds at least n bytes, growing the buffer
// as needed.
func (r *connReader) ensure(b *rbuf, n int) error {
	if b.buf == nil {
		b.buf = r.pool.get()
	}
	if n > len(b.buf) {
		b.grow(n)
	}
	for b.n < n {
		if err := r.fill(b); err != nil {
			return err
		}
		if n > len(b.buf) {
			b.grow(n)
		}
	}
	return nil
}

// The relay's reads and writes on plain TCP connections are non-blocking
// system calls made from the netpoller's callbacks (syscall.RawConn), which
// wait for readiness themselves. They use RawSyscall: a call that cannot
// block needs no entersyscall/exitsyscall, and so sysmon never hands the P
// of a goroutine in a slow loopback write (the kernel delivers to the
// receiver and wakes it inside the call) to another thread, which would
// take a thread wake-up now and a sleep when the call returns.

// rawRead reads into p from the non-blocking descriptor fd, retrying on
// EINTR. It returns n < 0 with an error, as syscall.Read does.
func rawRead(fd uintptr, p []byte) (int, error) {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(r), nil
	}
}

// rawConn returns the syscall.RawConn of a plain TCP connection, and nil for
// any other connection (TLS).
func rawConn(c net.Conn) syscall.RawConn {
	if tc, ok := c.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// writeAll writes p in full to c. With rc (c's RawConn, see rawConn) it
// makes non-blocking write system calls and waits for writability through
// the netpoller, honouring c's write deadline like c.Write; without, it is
// c.Write.
func writeAll(c net.Conn, rc syscall.RawConn, p []byte) error {
	if rc == nil {
		_, err := c.Write(p)
		return err
	}
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for len(p) > 0 {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
			switch e {
			case 0:
				p = p[r:]
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				werr = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}
