package postgres

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup-phase limits, as PostgreSQL's own (src/include/libpq/pqcomm.h).
const (
	maxStartupPacket = 10000
	maxAuthMessage   = 10000
)

// readStartupPacket reads exactly one length-prefixed startup-phase packet
// (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) and returns
// its body, which starts with the protocol code. It never reads past the
// packet, so nothing sent after an SSLRequest can be mistaken for data
// inside TLS (CVE-2021-23222).
func readStartupPacket(r io.Reader, first []byte) ([]byte, error) {
	var hdr [4]byte
	n := copy(hdr[:], first)
	if _, err := io.ReadFull(r, hdr[n:]); err != nil {
		return nil, err
	}
	size := int(int32(binary.BigEndian.Uint32(hdr[:])))
	if size < 8 || size > maxStartupPacket {
		return nil, fmt.Errorf("invalid startup packet length %d", size)
	}
	body := make([]byte, size-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body, nil
}

// readTyped reads one typed message during authentication and checks its
// type. The body is freshly allocated.
func readTyped(r io.Reader, want byte) ([]byte, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != want {
		return nil, fmt.Errorf("expected message type %q, got %q", want, hdr[0])
	}
	size := int(int32(binary.BigEndian.Uint32(hdr[1:])))
	if size < 4 || size-4 > maxAuthMessage {
		return nil, fmt.Errorf("invalid length %d for message type %q", size, want)
	}
	body := make([]byte, size-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body, nil
}

// appendMsg encodes m after dst; encode errors only happen for messages the
// proxy built wrongly, so they panic (recovered per connection).
func appendMsg(dst []byte, m pgproto3.BackendMessage) []byte {
	out, err := m.Encode(dst)
	if err != nil {
		panic(fmt.Sprintf("encoding %T: %v", m, err))
	}
	return out
}

// appendFrontendMsg is appendMsg for messages the proxy sends to the database.
func appendFrontendMsg(dst []byte, m pgproto3.FrontendMessage) []byte {
	out, err := m.Encode(dst)
	if err != nil {
		panic(fmt.Sprintf("encoding %T: %v", m, err))
	}
	return out
}
