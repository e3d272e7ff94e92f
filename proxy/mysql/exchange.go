package mysql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// The proxy's own commands on a backend connection (state capture and
// replay, pool reset) go through exchange: commands are written at once
// (pipelined) and the responses read in order, packet by packet.

// packetReader reads whole packets (frames merged) from a connection.
type packetReader struct {
	rd   relaybuf.Reader
	buf  relaybuf.Buf
	pool *relaybuf.Pool
	used int // bytes of buf handed out by the last next
	big  []byte
}

func newPacketReader(c *serverConn, pool *relaybuf.Pool) *packetReader {
	return &packetReader{rd: relaybuf.NewReader(c.conn, pool), pool: pool}
}

// next returns the payload of the next packet, valid until the next call.
func (p *packetReader) next() ([]byte, error) {
	p.buf.Consume(p.used)
	p.used = 0
	p.big = p.big[:0]
	for {
		if err := p.rd.Ensure(&p.buf, 4); err != nil {
			return nil, err
		}
		n := frameLen(p.buf.B)
		if err := p.rd.Ensure(&p.buf, 4+n); err != nil {
			return nil, err
		}
		if n < maxFrame && len(p.big) == 0 {
			p.used = 4 + n
			return p.buf.B[4 : 4+n], nil
		}
		p.big = append(p.big, p.buf.B[4:4+n]...)
		p.buf.Consume(4 + n)
		if n < maxFrame {
			return p.big, nil
		}
	}
}

// buffered reports whether bytes are left after the last packet.
func (p *packetReader) buffered() bool { return p.buf.N > p.used }

func (p *packetReader) release() {
	p.buf.Consume(p.used)
	p.used = 0
	if p.buf.N == 0 {
		p.buf.Release(p.pool)
	}
}

// cmdResult is the outcome of one command of an exchange.
type cmdResult struct {
	err      *myError // the server's ERR, if any
	status   uint16
	prepID   uint32
	prepPars uint16
	prepCols uint16
}

// exchange writes req (framed commands) to c and reads one response per
// entry of kinds. Text rows of result sets go to row (command index,
// column values with nil for NULL; valid only during the call). A server
// error does not stop the exchange: it is reported in the command's
// result. The returned error is an I/O or protocol failure, after which c
// must not be used again.
func exchange(ctx context.Context, c *serverConn, pool *relaybuf.Pool, req []byte, kinds []respKind,
	row func(cmd int, cols [][]byte) error) ([]cmdResult, error) {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
		defer c.conn.SetDeadline(time.Time{})
	}
	if err := c.write(req); err != nil {
		return nil, err
	}
	pr := newPacketReader(c, pool)
	defer pr.release()
	deprecateEOF := c.caps&capDeprecateEOF != 0
	out := make([]cmdResult, len(kinds))
	var cols [][]byte
	var rowErr error
	for i, k := range kinds {
		var r respScanner
		r.start(k, deprecateEOF)
		for {
			p, err := pr.next()
			if err != nil {
				return nil, err
			}
			if len(p) == 0 {
				return nil, errors.New("empty packet from the server")
			}
			if k == respQuery && r.phase == phRows && p[0] != hdrERR && !isTerminator(p, len(p), deprecateEOF) && row != nil {
				cols = cols[:0]
				for pos := 0; pos < len(p); {
					v, n, null, err := lenencString(p[pos:])
					if err != nil {
						return nil, fmt.Errorf("malformed row: %w", err)
					}
					if null {
						v = nil
					} else if v == nil {
						v = []byte{}
					}
					cols = append(cols, v)
					pos += n
				}
				if err := row(i, cols); err != nil && rowErr == nil {
					rowErr = err
				}
			}
			done, err := r.packet(p, len(p))
			if err != nil {
				return nil, err
			}
			if r.infile {
				return nil, errors.New("unexpected LOCAL INFILE request")
			}
			if done {
				if !r.ok {
					out[i].err = parseErr(p)
				}
				break
			}
		}
		out[i].status = r.status
		out[i].prepID, out[i].prepPars, out[i].prepCols = r.prepID, r.prepPars, r.prepCols
	}
	if pr.buffered() {
		return nil, errors.New("unexpected data from the server")
	}
	return out, rowErr
}

// appendCommand appends a command packet (sequence 0) with payload
// cmd+arg, framed as the protocol requires.
func appendCommand(dst []byte, cmd byte, arg []byte) []byte {
	payload := make([]byte, 0, 1+len(arg))
	payload = append(payload, cmd)
	payload = append(payload, arg...)
	dst, _ = appendPacket(dst, 0, payload)
	return dst
}

// appendQuery appends a COM_QUERY for sql on a connection with caps: with
// QUERY_ATTRIBUTES (MySQL 8) the text follows an empty attribute set.
func appendQuery(dst []byte, caps uint32, sql string) []byte {
	payload := make([]byte, 0, 3+len(sql))
	payload = append(payload, comQuery)
	if caps&capQueryAttributes != 0 {
		payload = append(payload, 0, 1)
	}
	payload = append(payload, sql...)
	dst, _ = appendPacket(dst, 0, payload)
	return dst
}
