// Package relaybuf holds the buffers and socket I/O the PostgreSQL and
// MySQL relays share: pooled relay buffers that idle sessions do not hold,
// a reader that waits for readability in the netpoller before taking a
// buffer, and writes made as non-blocking raw system calls.
//
// Buffers grow as bytes arrive, never to a length a peer merely declares:
// a message that announces 60 MiB and sends 1 byte costs a pooled buffer,
// not 60 MiB (NextSize). The growth of buffers that hold partial client
// messages past Size is charged to a memory budget (Budget, GrowFor, Fit).
package relaybuf

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// Size is the size of pooled relay buffers: large enough that a
// typical batch of messages is read and written with one syscall each.
const Size = 32 << 10

// Pool recycles relay buffers. Buffers larger than Size (grown
// for one oversized message) are dropped instead of pooled.
type Pool struct{ p sync.Pool }

func (bp *Pool) Get() []byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, Size)
}

func (bp *Pool) Put(b []byte) {
	if cap(b) != Size {
		return
	}
	b = b[:Size]
	bp.p.Put(&b)
}

// NextSize returns the capacity to grow a full buffer of capacity c to
// when the message being read needs need bytes in all (need > c): twice
// c, at least Size, and never more than need. Growing so as bytes arrive,
// a buffer is at most about twice the bytes received, whatever length the
// sender declared.
func NextSize(c, need int) int {
	return min(need, max(2*c, Size))
}

// Charge is what a buffer of capacity c costs a Budget: the part beyond
// Size. Every session may hold a pooled buffer per direction anyway, so
// messages that fit one never wait for memory.
func Charge(c int) int { return max(0, c-Size) }

// Budget is the memory budget that buffers of partial client messages are
// charged to (*proxy.MemoryBudget; a nil one is unlimited).
type Budget interface {
	// Take takes n bytes, waiting while they are not available; it fails
	// when quit is closed or after the budget's wait bound.
	Take(n int, quit <-chan struct{}) error
	// Release gives back n bytes.
	Release(n int)
}

// Buf is a relay buffer: data in B[:N]. B is nil while the connection
// is idle so that an idle session holds no buffer.
type Buf struct {
	B []byte
	N int
	// Held is the part of B's capacity taken from a Budget (GrowFor);
	// Fit gives it back. Buffers grown otherwise hold none.
	Held int
}

// GrowFor makes room in a full buffer for more of a message that needs
// need bytes in all (need > len(B)), growing it to NextSize and taking the
// growth's Charge from bud first, waiting for it while quit is open.
func (b *Buf) GrowFor(need int, bud Budget, quit <-chan struct{}) error {
	size := NextSize(len(b.B), need)
	if d := Charge(size) - b.Held; d > 0 {
		if err := bud.Take(d, quit); err != nil {
			return err
		}
		b.Held += d
	}
	b.Grow(size)
	return nil
}

// Fit gives back memory that the data in b no longer needs, typically
// after Consume: an empty buffer is released (to the pool if it is a
// pooled one), a grown one holding at most Size bytes is replaced by a
// pooled buffer, and one at most a quarter full by one of half its size;
// the Charge given up goes back to bud.
func (b *Buf) Fit(bp *Pool, bud Budget) {
	if len(b.B) <= Size {
		if b.N == 0 {
			b.Release(bp)
		}
		return
	}
	switch {
	case b.N == 0:
		b.B = nil
	case b.N <= Size:
		nb := bp.Get()
		copy(nb, b.B[:b.N])
		b.B = nb
	case b.N <= len(b.B)/4:
		nb := make([]byte, len(b.B)/2)
		copy(nb, b.B[:b.N])
		b.B = nb
	}
	if c := Charge(len(b.B)); c < b.Held {
		bud.Release(b.Held - c)
		b.Held = c
	}
}

// Release returns an empty buffer to the pool.
func (b *Buf) Release(bp *Pool) {
	if b.B != nil && b.N == 0 {
		bp.Put(b.B)
		b.B = nil
	}
}

// Consume drops the first k bytes, keeping the rest at the front.
func (b *Buf) Consume(k int) {
	if k == 0 {
		return
	}
	b.N = copy(b.B, b.B[k:b.N])
}

// Grow makes room for at least size bytes in total, keeping the data.
func (b *Buf) Grow(size int) {
	if size <= len(b.B) {
		return
	}
	nb := make([]byte, size)
	copy(nb, b.B[:b.N])
	b.B = nb
}

// Reader reads from one connection into a Buf. For plain TCP it
// waits for readability through syscall.RawConn and takes a buffer from the
// pool only when data has arrived, so idle sessions hold none; other
// connections (TLS) read through net.Conn.Read into a held buffer.
type Reader struct {
	Conn net.Conn
	RC   syscall.RawConn // nil unless Conn is a *net.TCPConn
	pool *Pool
}

func NewReader(c net.Conn, pool *Pool) Reader {
	return Reader{Conn: c, RC: RawConn(c), pool: pool}
}

// Pool returns the pool r takes buffers from.
func (r *Reader) Pool() *Pool { return r.pool }

// Fill reads at least one byte into b after b.B[:b.N]. It returns io.EOF
// at end of stream and the connection's error (deadline, closed) otherwise.
func (r *Reader) Fill(b *Buf) error {
	if r.RC == nil {
		if b.B == nil {
			b.B = r.pool.Get()
		}
		n, err := r.Conn.Read(b.B[b.N:])
		b.N += n
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
	err := r.RC.Read(func(fd uintptr) bool {
		acquired := false
		if b.B == nil {
			b.B = r.pool.Get()
			acquired = true
		}
		n, rerr = rawRead(fd, b.B[b.N:])
		if n <= 0 && acquired {
			// Nothing read (not yet, end of stream or an error): an
			// idle session keeps holding no buffer.
			r.pool.Put(b.B)
			b.B = nil
		}
		return rerr != syscall.EAGAIN
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
	b.N += n
	return nil
}

// Ensure reads from r until b holds at least n bytes, growing the buffer
// as they arrive (NextSize). The growth is not charged to a budget: it is
// for the backend's messages and for short client headers.
func (r *Reader) Ensure(b *Buf, n int) error {
	for b.N < n {
		if b.B != nil && b.N == len(b.B) {
			b.Grow(NextSize(len(b.B), n))
		}
		if err := r.Fill(b); err != nil {
			return err
		}
	}
	return nil
}

// Stop is a channel closed once, when a session ends, that stops its
// waits for memory. The zero value is ready to use.
type Stop struct {
	once, closeOnce sync.Once
	ch              chan struct{}
}

// C returns the channel.
func (s *Stop) C() <-chan struct{} {
	s.once.Do(func() { s.ch = make(chan struct{}) })
	return s.ch
}

// Close closes the channel; later calls do nothing.
func (s *Stop) Close() {
	s.C()
	s.closeOnce.Do(func() { close(s.ch) })
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

// RawConn returns the syscall.RawConn of a plain TCP connection, and nil for
// any other connection (TLS).
func RawConn(c net.Conn) syscall.RawConn {
	if tc, ok := c.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// WriteAll writes p in full to c. With rc (c's RawConn, see RawConn) it
// makes non-blocking write system calls and waits for writability through
// the netpoller, honouring c's write deadline like c.Write; without, it is
// c.Write.
func WriteAll(c net.Conn, rc syscall.RawConn, p []byte) error {
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

// PeekIdle reports whether an idle connection (plain or TLS over TCP) has
// nothing to read: data or EOF on a pooled backend connection means the
// server closed it or sent an error while it was idle.
func PeekIdle(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	idle := false
	var b [1]byte
	rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		idle = err == syscall.EAGAIN
		return true
	})
	return idle
}
