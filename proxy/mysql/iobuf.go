package mysql

import (
	"io"
	"net"
	"sync"
	"syscall"
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
	r := connReader{conn: c, pool: pool}
	if tc, ok := c.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			r.rc = rc
		}
	}
	return r
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
		for {
			n, rerr = syscall.Read(int(fd), b.buf[b.n:])
			if rerr != syscall.EINTR {
				break
			}
		}
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
