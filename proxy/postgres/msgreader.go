package postgres

import (
	"encoding/binary"
	"fmt"
)

// msgReader reads whole messages from a backend connection outside the
// relay: while capturing or replaying session state and while resetting a
// connection for the pool. It owns its buffer until release.
type msgReader struct {
	rd  connReader
	b   rbuf
	pos int // length of the message returned last, consumed on the next call
}

// next returns the next message; body is valid until the following call.
func (m *msgReader) next() (byte, []byte, error) {
	if m.pos > 0 {
		m.b.consume(m.pos)
		m.pos = 0
	}
	for {
		if m.b.n >= headerLen {
			size := int(int32(binary.BigEndian.Uint32(m.b.buf[1:headerLen])))
			if size < 4 {
				return 0, nil, fmt.Errorf("invalid length %d in message of type %q from the database", size, m.b.buf[0])
			}
			total := 1 + size
			if m.b.n >= total {
				m.pos = total
				return m.b.buf[0], m.b.buf[headerLen:total], nil
			}
			m.b.grow(total)
		}
		if m.b.buf != nil && m.b.n == len(m.b.buf) {
			m.b.grow(2 * len(m.b.buf))
		}
		if err := m.rd.fill(&m.b); err != nil {
			return 0, nil, err
		}
	}
}

// buffered reports whether bytes after the last returned message are
// already in the buffer.
func (m *msgReader) buffered() bool { return m.b.n > m.pos }

// release consumes the last message and returns the buffer to the pool.
// Callers only release at a message boundary with nothing buffered.
func (m *msgReader) release() {
	m.b.consume(m.pos)
	m.pos = 0
	m.b.release(m.rd.pool)
}
