package relaybuf

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
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
