package mysql

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// Limits on what a client may send before it is authenticated.
const (
	// maxHandshakePacket bounds one packet of the connection phase
	// (handshake response with attributes, auth switch responses, RSA
	// blocks); MySQL caps connection attributes at 64 KiB.
	maxHandshakePacket = 128 << 10
	// maxHandshakeBytes bounds everything read before authentication ends.
	maxHandshakeBytes = 1 << 20
)

// sslRequestLen is the payload length of an SSLRequest: capabilities (4),
// max packet size (4), collation (1) and 23 reserved bytes. A handshake
// response is always longer (it adds at least the user name's NUL).
const sslRequestLen = 32

var (
	errHandshakeTooLarge = errors.New("handshake packet larger than the proxy accepts")
	errHandshakeTooLong  = errors.New("client sent too much before authenticating")
	errSwallowed         = errors.New("connection closing")
)

// greeting is what the proxy announces in its initial handshake instead of
// go-mysql's fixed values.
type greeting struct {
	version   string
	connID    uint32
	caps      uint32
	collation byte
	status    uint16
}

// handshakeConn wraps a client connection while go-mysql's server runs the
// connection phase. It rewrites the greeting (the first packet go-mysql
// writes) with the proxy's server version, connection id, capabilities and
// collation; notes whether the client's first packet was an SSLRequest;
// refuses oversized packets (checked on the plaintext header of the first
// packet) and bounds the bytes read before authentication; and can swallow
// go-mysql's own error packet after the proxy sent a sanitized one. After
// the handshake (done) it passes bytes through untouched.
//
// Only the handshake goroutine uses it until done is set; afterwards the
// session owns the connection.
type handshakeConn struct {
	net.Conn
	greeting greeting

	wroteGreeting bool
	read          int     // bytes read during the handshake
	hdr           [4]byte // the first frame header the client sent
	hdrN          int
	tls           bool        // the first packet was an SSLRequest
	swallow       atomic.Bool // drop further writes (go-mysql's unsanitized ERR)
	done          atomic.Bool
	// readErr is the last error reading from the client during the
	// handshake. go-mysql keeps only its text, so this is what tells a
	// timeout or a client that left from a bad handshake.
	readErr error
}

func (c *handshakeConn) Read(p []byte) (int, error) {
	if c.done.Load() {
		return c.Conn.Read(p)
	}
	if c.read >= maxHandshakeBytes {
		return 0, errHandshakeTooLong
	}
	if len(p) > maxHandshakeBytes-c.read {
		p = p[:maxHandshakeBytes-c.read]
	}
	n, err := c.Conn.Read(p)
	if err != nil {
		c.readErr = err
	}
	c.read += n
	if c.hdrN < 4 && n > 0 {
		k := copy(c.hdr[c.hdrN:], p[:n])
		c.hdrN += k
		if c.hdrN == 4 {
			l := frameLen(c.hdr[:])
			if l > maxHandshakePacket {
				return 0, errHandshakeTooLarge
			}
			c.tls = l == sslRequestLen
		}
	}
	return n, err
}

// clientLeft reports whether a read error means the client closed the
// connection.
func clientLeft(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET)
}

func (c *handshakeConn) Write(p []byte) (int, error) {
	if c.done.Load() {
		return c.Conn.Write(p)
	}
	if c.swallow.Load() {
		return 0, errSwallowed
	}
	if !c.wroteGreeting {
		c.wroteGreeting = true
		if out, ok := rewriteGreeting(p, c.greeting); ok {
			if _, err := c.Conn.Write(out); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

// rewriteGreeting replaces the server version, connection id, capability
// flags, collation and status of go-mysql's initial handshake packet
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_v10.html),
// keeping its scramble and plugin name, which go-mysql checks the client's
// answer against.
func rewriteGreeting(frame []byte, g greeting) ([]byte, bool) {
	if len(frame) < 5 || frameLen(frame) != len(frame)-4 {
		return nil, false
	}
	p := frame[4:]
	if p[0] != 10 {
		return nil, false
	}
	end := bytes.IndexByte(p[1:], 0)
	if end < 0 {
		return nil, false
	}
	i := 1 + end // the version's NUL
	// connection id (4), scramble part 1 (8), filler (1), capabilities low
	// (2), collation (1), status (2), capabilities high (2), scramble
	// length (1), reserved (10)
	if len(p) < i+1+4+8+1+2+1+2+2+1+10 {
		return nil, false
	}
	salt1 := p[i+5 : i+13]
	authLen := p[i+21]
	rest := p[i+32:] // scramble part 2, NUL, plugin name, NUL

	out := make([]byte, 4, 4+len(p)+len(g.version))
	out = append(out, 10)
	out = append(out, g.version...)
	out = append(out, 0)
	out = binary.LittleEndian.AppendUint32(out, g.connID)
	out = append(out, salt1...)
	out = append(out, 0)
	out = binary.LittleEndian.AppendUint16(out, uint16(g.caps))
	out = append(out, g.collation)
	out = binary.LittleEndian.AppendUint16(out, g.status)
	out = binary.LittleEndian.AppendUint16(out, uint16(g.caps>>16))
	out = append(out, authLen)
	out = append(out, make([]byte, 10)...)
	out = append(out, rest...)
	putFrameHeader(out, len(out)-4, frame[3])
	return out, true
}
