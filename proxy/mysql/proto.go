package mysql

import (
	"encoding/binary"
	"errors"
)

// Wire constants of the MySQL client/server protocol
// (https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html),
// named as in the MySQL sources. Only what the relay reads is here.

// Command bytes (first payload byte of a client command).
const (
	comSleep            = 0x00
	comQuit             = 0x01
	comInitDB           = 0x02
	comQuery            = 0x03
	comFieldList        = 0x04
	comCreateDB         = 0x05
	comDropDB           = 0x06
	comRefresh          = 0x07
	comShutdown         = 0x08
	comStatistics       = 0x09
	comProcessInfo      = 0x0a
	comProcessKill      = 0x0c
	comDebug            = 0x0d
	comPing             = 0x0e
	comChangeUser       = 0x11
	comBinlogDump       = 0x12
	comRegisterSlave    = 0x15
	comStmtPrepare      = 0x16
	comStmtExecute      = 0x17
	comStmtSendLongData = 0x18
	comStmtClose        = 0x19
	comStmtReset        = 0x1a
	comSetOption        = 0x1b
	comStmtFetch        = 0x1c
	comBinlogDumpGTID   = 0x1e
	comResetConnection  = 0x1f
)

// Capability flags.
const (
	capLongPassword      uint32 = 1 << 0
	capFoundRows         uint32 = 1 << 1
	capLongFlag          uint32 = 1 << 2
	capConnectWithDB     uint32 = 1 << 3
	capCompress          uint32 = 1 << 5
	capLocalFiles        uint32 = 1 << 7
	capIgnoreSpace       uint32 = 1 << 8
	capProtocol41        uint32 = 1 << 9
	capInteractive       uint32 = 1 << 10
	capSSL               uint32 = 1 << 11
	capTransactions      uint32 = 1 << 13
	capSecureConnection  uint32 = 1 << 15
	capMultiStatements   uint32 = 1 << 16
	capMultiResults      uint32 = 1 << 17
	capPSMultiResults    uint32 = 1 << 18
	capPluginAuth        uint32 = 1 << 19
	capConnectAttrs      uint32 = 1 << 20
	capPluginAuthLenenc  uint32 = 1 << 21
	capSessionTrack      uint32 = 1 << 23
	capDeprecateEOF      uint32 = 1 << 24
	capOptionalMetadata  uint32 = 1 << 25
	capQueryAttributes   uint32 = 1 << 27
	capRememberOptions   uint32 = 1 << 31
	capMultiFactorAuth   uint32 = 1 << 28
	capSSLVerifyServer   uint32 = 1 << 30
	capCapabilityExtends uint32 = 1 << 29
)

// mirrored are the capabilities that change what goes over the wire or how
// statements behave. Each is negotiated identically on both legs of a
// session: the client's flags intersected with what the proxy advertised.
const mirrored = capFoundRows | capIgnoreSpace | capLocalFiles | capMultiStatements | capMultiResults |
	capPSMultiResults | capSessionTrack | capDeprecateEOF | capQueryAttributes

// proxyCaps is everything the proxy's greeting may advertise; the greeting
// advertises the part the backend supports (QUERY_ATTRIBUTES exists only on
// MySQL 8) plus SSL and LOCAL_FILES as configured. COMPRESS, the MariaDB
// extended capabilities (LONG_PASSWORD marks a MySQL-style greeting) and
// optional result set metadata are never offered.
const proxyCaps = capLongPassword | capFoundRows | capLongFlag | capConnectWithDB | capIgnoreSpace |
	capProtocol41 | capTransactions | capSecureConnection | capMultiStatements | capMultiResults |
	capPSMultiResults | capPluginAuth | capConnectAttrs | capPluginAuthLenenc | capSessionTrack |
	capDeprecateEOF | capQueryAttributes

// Server status flags of OK and EOF packets.
const (
	statusInTrans         uint16 = 0x0001
	statusAutocommit      uint16 = 0x0002
	statusMoreResults     uint16 = 0x0008
	statusCursorExists    uint16 = 0x0040
	statusLastRowSent     uint16 = 0x0080
	statusInTransReadonly uint16 = 0x2000
)

// First payload bytes of server packets.
const (
	hdrOK         = 0x00
	hdrMoreData   = 0x01
	hdrLocalInfil = 0xfb
	hdrEOF        = 0xfe
	hdrERR        = 0xff
)

// maxFrame is the largest payload of one frame; a payload of exactly this
// length is continued by the next frame.
const maxFrame = 1<<24 - 1

// cursorReadOnly is the flag of COM_STMT_EXECUTE asking for a cursor.
const cursorReadOnly = 0x01

// paramCountAvailable is the COM_STMT_EXECUTE flag (MySQL 8 with
// QUERY_ATTRIBUTES) announcing an explicit parameter count.
const paramCountAvailable = 0x08

// mariaDBLastStatement is the statement id MariaDB reads as "the statement
// prepared last"; it is never remapped.
const mariaDBLastStatement = 0xffffffff

// frameLen returns the payload length announced by a 4-byte frame header.
func frameLen(h []byte) int { return int(h[0]) | int(h[1])<<8 | int(h[2])<<16 }

// putFrameHeader writes a frame header for a payload of n bytes.
func putFrameHeader(h []byte, n int, seq byte) {
	h[0], h[1], h[2], h[3] = byte(n), byte(n>>8), byte(n>>16), seq
}

// appendPacket appends payload as one logical packet starting at sequence
// number seq, split into frames as the protocol requires, and returns the
// sequence number following it.
func appendPacket(dst []byte, seq byte, payload []byte) ([]byte, byte) {
	for {
		n := min(len(payload), maxFrame)
		var h [4]byte
		putFrameHeader(h[:], n, seq)
		dst = append(dst, h[:]...)
		dst = append(dst, payload[:n]...)
		seq++
		payload = payload[n:]
		if n < maxFrame {
			return dst, seq
		}
	}
}

// lenenc reads a length-encoded integer. ok is false when b is too short
// or starts with 0xfb (NULL) or 0xff.
func lenenc(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	switch c := b[0]; {
	case c < 0xfb:
		return uint64(c), 1, true
	case c == 0xfc:
		if len(b) < 3 {
			return 0, 0, false
		}
		return uint64(binary.LittleEndian.Uint16(b[1:])), 3, true
	case c == 0xfd:
		if len(b) < 4 {
			return 0, 0, false
		}
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, 4, true
	case c == 0xfe:
		if len(b) < 9 {
			return 0, 0, false
		}
		return binary.LittleEndian.Uint64(b[1:]), 9, true
	}
	return 0, 0, false
}

// appendLenenc appends v as a length-encoded integer.
func appendLenenc(b []byte, v uint64) []byte {
	switch {
	case v < 0xfb:
		return append(b, byte(v))
	case v <= 0xffff:
		return append(b, 0xfc, byte(v), byte(v>>8))
	case v <= 0xffffff:
		return append(b, 0xfd, byte(v), byte(v>>8), byte(v>>16))
	}
	b = append(b, 0xfe)
	return binary.LittleEndian.AppendUint64(b, v)
}

// lenencString reads a length-encoded string; null reports 0xfb (NULL).
func lenencString(b []byte) (s []byte, n int, null bool, err error) {
	if len(b) > 0 && b[0] == 0xfb {
		return nil, 1, true, nil
	}
	l, k, ok := lenenc(b)
	if !ok || uint64(len(b)-k) < l {
		return nil, 0, false, errMalformed
	}
	return b[k : k+int(l)], k + int(l), false, nil
}

var errMalformed = errors.New("malformed packet")

// okStatus returns the status flags of an OK packet (header 0x00, or 0xfe
// when it replaces EOF under DEPRECATE_EOF): header, affected rows and last
// insert id (length-encoded), then the status.
func okStatus(p []byte) (uint16, bool) {
	if len(p) < 1 {
		return 0, false
	}
	pos := 1
	for range 2 {
		_, n, ok := lenenc(p[pos:])
		if !ok {
			return 0, false
		}
		pos += n
	}
	if len(p) < pos+2 {
		return 0, false
	}
	return binary.LittleEndian.Uint16(p[pos:]), true
}

// eofStatus returns the status flags of an EOF packet: 0xfe, warnings (2),
// status (2).
func eofStatus(p []byte) (uint16, bool) {
	if len(p) < 5 {
		return 0, false
	}
	return binary.LittleEndian.Uint16(p[3:]), true
}

// terminatorStatus reads the status of a packet that ends a result set or
// a column list: an EOF packet, or with DEPRECATE_EOF an OK packet with the
// 0xfe header.
func terminatorStatus(p []byte, deprecateEOF bool) (uint16, bool) {
	if deprecateEOF {
		return okStatus(p)
	}
	return eofStatus(p)
}

// isTerminator reports whether a packet of length n starting with p ends a
// result set: 0xfe and shorter than a frame (a row starting with 0xfe is a
// length-encoded string of at least 2^24 bytes, hence longer), and without
// DEPRECATE_EOF shorter than 9 bytes.
func isTerminator(p []byte, n int, deprecateEOF bool) bool {
	if len(p) == 0 || p[0] != hdrEOF || n >= maxFrame {
		return false
	}
	return deprecateEOF || n < 9
}

// appendOK appends an OK packet (one frame) with sequence number seq.
func appendOK(dst []byte, seq byte, status uint16, caps uint32) []byte {
	p := [12]byte{0, 0, 0, 0, hdrOK, 0, 0, byte(status), byte(status >> 8), 0, 0}
	n := 7
	if caps&capSessionTrack != 0 {
		n++ // empty info string, length-encoded
	}
	putFrameHeader(p[:], n, seq)
	return append(dst, p[:4+n]...)
}

// appendErr appends an ERR packet (one frame) with sequence number seq.
func appendErr(dst []byte, seq byte, e *myError) []byte {
	payload := make([]byte, 0, 9+len(e.Message))
	payload = append(payload, hdrERR, byte(e.Code), byte(e.Code>>8), '#')
	state := e.State
	if len(state) != 5 {
		state = "HY000"
	}
	payload = append(payload, state...)
	payload = append(payload, e.Message...)
	if len(payload) > maxFrame-1 {
		payload = payload[:maxFrame-1]
	}
	dst, _ = appendPacket(dst, seq, payload)
	return dst
}

// parseErr reads an ERR packet's payload.
func parseErr(p []byte) *myError {
	e := &myError{Code: 0xffff, State: "HY000"}
	if len(p) < 3 || p[0] != hdrERR {
		e.Message = "malformed error packet"
		return e
	}
	e.Code = binary.LittleEndian.Uint16(p[1:])
	rest := p[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		e.State = string(rest[1:6])
		rest = rest[6:]
	}
	e.Message = string(rest)
	return e
}
