package postgres

import (
	"encoding/binary"
	"fmt"

	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// msgReader reads whole messages from a backend connection outside the
// relay: while capturing or replaying session state and while resetting a
// connection for the pool. It owns its buffer until release.
type msgReader struct {
	rd  relaybuf.Reader
	b   relaybuf.Buf
	pos int // length of the message returned last, consumed on the next call
}

// next returns the next message; body is valid until the following call.
func (m *msgReader) next() (byte, []byte, error) {
	if m.pos > 0 {
		m.b.Consume(m.pos)
		m.pos = 0
	}
	for {
		need := headerLen
		if m.b.N >= headerLen {
			size := int(int32(binary.BigEndian.Uint32(m.b.B[1:headerLen])))
			if size < 4 {
				return 0, nil, fmt.Errorf("invalid length %d in message of type %q from the database", size, m.b.B[0])
			}
			total := 1 + size
			if m.b.N >= total {
				m.pos = total
				return m.b.B[0], m.b.B[headerLen:total], nil
			}
			need = total
		}
		if m.b.B != nil && m.b.N == len(m.b.B) {
			m.b.Grow(relaybuf.NextSize(len(m.b.B), need)) // as the bytes arrive
		}
		if err := m.rd.Fill(&m.b); err != nil {
			return 0, nil, err
		}
	}
}

// buffered reports whether bytes after the last returned message are
// already in the buffer.
func (m *msgReader) buffered() bool { return m.b.N > m.pos }

// release consumes the last message and returns the buffer to the pool.
// Callers only release at a message boundary with nothing buffered.
func (m *msgReader) release() {
	m.b.Consume(m.pos)
	m.pos = 0
	m.b.Release(m.rd.Pool())
}
