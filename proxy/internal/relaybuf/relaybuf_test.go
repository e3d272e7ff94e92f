package relaybuf

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/credswap/credswap/proxy"
)

func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestBuf(t *testing.T) {
	var p Pool
	b := Buf{B: p.Get()}
	b.N = copy(b.B, "hello world")
	b.Consume(6)
	if got := string(b.B[:b.N]); got != "world" {
		t.Fatalf("after Consume: %q", got)
	}
	b.Grow(Size + 10)
	if len(b.B) != Size+10 || string(b.B[:b.N]) != "world" {
		t.Fatalf("after Grow: len %d, %q", len(b.B), b.B[:b.N])
	}
	b.Release(&p) // not empty: kept
	if b.B == nil {
		t.Fatal("Release dropped a buffer holding data")
	}
	b.N = 0
	b.Release(&p)
	if b.B != nil {
		t.Fatal("Release kept an empty buffer")
	}
}

// TestReaderAndWriteAll relays bytes over loopback TCP: the reader holds
// no buffer until data arrives, Ensure waits for a message larger than a
// pooled buffer, WriteAll honours the write deadline, and the peer's close
// reads as io.EOF.
func TestReaderAndWriteAll(t *testing.T) {
	a, b := tcpPair(t)
	var p Pool
	r := NewReader(b, &p)
	if r.RC == nil || r.Pool() != &p {
		t.Fatal("a TCP connection has no RawConn")
	}
	var buf Buf
	msg := bytes.Repeat([]byte("0123456789"), Size/5) // two pooled buffers' worth
	go func() {
		time.Sleep(20 * time.Millisecond)
		WriteAll(a, RawConn(a), msg)
	}()
	if err := r.Ensure(&buf, len(msg)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.B[:len(msg)], msg) {
		t.Fatal("the bytes read differ from the bytes written")
	}

	// A write nobody reads fills the socket buffers and hits the deadline.
	a.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	err := WriteAll(a, RawConn(a), make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WriteAll past the deadline: %v", err)
	}

	c, d := tcpPair(t)
	rd := NewReader(d, &p)
	c.Close()
	var empty Buf
	if err := rd.Fill(&empty); err != io.EOF {
		t.Fatalf("Fill after the peer closed: %v", err)
	}
	if empty.B != nil {
		t.Fatal("Fill kept a buffer for an empty read")
	}
}

// TestGrowthFollowsArrivals: buffers grow with the bytes that arrive, not
// with the length a message declares. Ensure toward 10 MiB with 40 KiB
// sent holds a 64 KiB buffer; GrowFor charges the growth past Size to the
// budget, waits while the budget has nothing, and Fit gives it back as
// the data shrinks.
func TestGrowthFollowsArrivals(t *testing.T) {
	for _, c := range []struct{ c, need, want int }{
		{0, 10, 10}, {0, 1 << 30, Size}, {Size, 1 << 30, 2 * Size}, {4 << 20, 5 << 20, 5 << 20},
	} {
		if got := NextSize(c.c, c.need); got != c.want {
			t.Errorf("NextSize(%d, %d) = %d, want %d", c.c, c.need, got, c.want)
		}
	}

	a, b := tcpPair(t)
	var p Pool
	r := NewReader(b, &p)
	var buf Buf
	go func() {
		WriteAll(a, RawConn(a), make([]byte, 40<<10))
		a.Close()
	}()
	if err := r.Ensure(&buf, 10<<20); err != io.EOF {
		t.Fatalf("Ensure past the end of stream: %v", err)
	}
	if buf.N != 40<<10 || len(buf.B) != 2*Size {
		t.Fatalf("Ensure toward 10 MiB with 40 KiB sent: %d bytes in a buffer of %d", buf.N, len(buf.B))
	}

	m := proxy.NewMemoryBudget(7*Size, time.Minute, nil)
	msg := Buf{B: p.Get()}
	for _, size := range []int{2 * Size, 4 * Size, 8 * Size} {
		msg.N = len(msg.B)
		if err := msg.GrowFor(1<<30, m, nil); err != nil || len(msg.B) != size || msg.Held != size-Size || m.Used() != size-Size {
			t.Fatalf("GrowFor to %d: %v, len %d, held %d, used %d", size, err, len(msg.B), msg.Held, m.Used())
		}
	}
	// The budget is spent: the next growth waits until quit.
	msg.N = len(msg.B)
	quit := make(chan struct{})
	close(quit)
	if err := msg.GrowFor(1<<30, m, quit); !proxy.ErrMemoryWaitStopped(err) || len(msg.B) != 8*Size {
		t.Fatalf("GrowFor without memory: %v, len %d", err, len(msg.B))
	}
	msg.N = 2 * Size // a quarter: halved
	msg.Fit(&p, m)
	if len(msg.B) != 4*Size || msg.Held != 3*Size || m.Used() != 3*Size {
		t.Fatalf("Fit of a quarter: len %d, held %d, used %d", len(msg.B), msg.Held, m.Used())
	}
	msg.N = 10 // back to a pooled buffer
	msg.Fit(&p, m)
	if len(msg.B) != Size || msg.Held != 0 || m.Used() != 0 {
		t.Fatalf("Fit of 10 bytes: len %d, held %d, used %d", len(msg.B), msg.Held, m.Used())
	}
	msg.N = 0
	msg.Fit(&p, m)
	if msg.B != nil {
		t.Fatal("Fit kept an empty buffer")
	}

	var s Stop
	s.Close()
	s.Close()
	<-s.C()
}
