package mysql

import (
	"encoding/binary"
	"fmt"
)

// respKind says how the response to a command is shaped
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_command_phase.html).
type respKind uint8

const (
	// respSingle is one packet: OK, ERR, EOF, or COM_STATISTICS' string.
	respSingle respKind = iota
	// respQuery is COM_QUERY's: OK, ERR, a LOCAL INFILE request or a text
	// result set, repeated while the status says MORE_RESULTS.
	respQuery
	// respExecute is COM_STMT_EXECUTE's: OK, ERR or a binary result set
	// (or only its columns when a cursor was opened), repeated while the
	// status says MORE_RESULTS.
	respExecute
	// respFetch is COM_STMT_FETCH's: rows, then EOF or ERR.
	respFetch
	// respPrepare is COM_STMT_PREPARE's: PREPARE_OK with the parameter and
	// column definitions, or ERR.
	respPrepare
	// respFieldList is COM_FIELD_LIST's: column definitions, then EOF or ERR.
	respFieldList
)

type phase uint8

const (
	phFirst phase = iota
	phColDefs
	phColEOF
	phRows
	phPrepParams
	phPrepParamsEOF
	phPrepCols
	phPrepColsEOF
)

// peekLen is how much of a packet's payload the scanner looks at: enough
// for the status of an OK packet (header, two length-encoded integers of
// at most 9 bytes each, status) and for PREPARE_OK.
const peekLen = 24

// respScanner follows the frames of one response from the server. It
// decodes only packet headers: the first bytes of each packet (status
// flags of OK and EOF, column counts, PREPARE_OK) and lengths. Rows and
// column definitions pass through unread.
//
// It is used by one goroutine at a time.
type respScanner struct {
	kind         respKind
	deprecateEOF bool
	// cursor is set when COM_STMT_EXECUTE asked for a cursor.
	cursor bool
	// seqDelta is subtracted from every frame's sequence number, when the
	// proxy re-framed the command into more frames than the client sent.
	seqDelta byte
	// rewritePrep, when set, replaces the statement id of PREPARE_OK with
	// prepClientID.
	rewritePrep  bool
	prepClientID uint32

	rem      int  // payload bytes of the current frame not yet passed
	cont     bool // the next frame continues the current packet
	finished bool // the packet being passed ends the response

	phase phase
	count uint64

	// Outcome.
	status    uint16 // status flags of the latest OK or EOF
	sawStatus bool
	ok        bool // the response ended with OK or EOF, not ERR
	errCode   uint16
	infile    bool // the server asked for a LOCAL INFILE
	cursorOpn bool // a cursor was opened
	lastRow   bool // a fetch reached the cursor's last row
	prepID    uint32
	prepCols  uint16
	prepPars  uint16
	// lastSeq is the sequence number of the last frame passed (after
	// seqDelta).
	lastSeq byte
}

// start prepares the scanner for a response of kind k.
func (r *respScanner) start(k respKind, deprecateEOF bool) {
	*r = respScanner{kind: k, deprecateEOF: deprecateEOF}
	if k == respFetch || k == respFieldList {
		r.phase = phRows
	}
}

// resume continues after the client sent a LOCAL INFILE's content: the
// server answers with OK or ERR (OK possibly with MORE_RESULTS).
func (r *respScanner) resume() {
	r.infile, r.finished = false, false
	r.phase = phFirst
}

// atBoundary reports whether the scanner stopped between packets.
func (r *respScanner) atBoundary() bool { return r.rem == 0 && !r.cont }

// scan walks buf, the unconsumed bytes from the server, and returns how
// many can be passed on (fwd), how many bytes must be buffered from the
// start of what remains before it can go on (need, 0 if any more will do),
// and whether the response is complete after fwd bytes. It may rewrite
// bytes within buf[:fwd] (sequence numbers, PREPARE_OK's id).
func (r *respScanner) scan(buf []byte) (fwd, need int, done bool, err error) {
	pos := 0
	for {
		if r.rem > 0 {
			k := min(r.rem, len(buf)-pos)
			pos += k
			r.rem -= k
			if r.rem > 0 {
				return pos, 0, false, nil
			}
		}
		if r.finished && !r.cont {
			return pos, 0, true, nil
		}
		if len(buf)-pos < 4 {
			return pos, 4, false, nil
		}
		h := buf[pos : pos+4]
		n := frameLen(h)
		if r.cont {
			r.cont = n == maxFrame
			r.frameSeq(h)
			pos += 4
			r.rem = n
			continue
		}
		peek := min(n, peekLen)
		if len(buf)-pos < 4+peek {
			return pos, 4 + peek, false, nil
		}
		if n == 0 {
			return pos, 0, false, fmt.Errorf("empty packet from the server in %s", r.where())
		}
		fin, err := r.packet(buf[pos+4:pos+4+peek], n)
		if err != nil {
			return pos, 0, false, err
		}
		r.frameSeq(h)
		r.finished = fin
		r.cont = n == maxFrame
		pos += 4
		r.rem = n
	}
}

func (r *respScanner) frameSeq(h []byte) {
	h[3] -= r.seqDelta
	r.lastSeq = h[3]
}

func (r *respScanner) where() string {
	return fmt.Sprintf("response kind %d phase %d", r.kind, r.phase)
}

func (r *respScanner) setStatus(st uint16) {
	r.status, r.sawStatus = st, true
}

// packet visits the start of a packet of n bytes whose first bytes are p
// and reports whether it ends the response.
func (r *respScanner) packet(p []byte, n int) (bool, error) {
	switch r.kind {
	case respSingle:
		switch p[0] {
		case hdrOK:
			if st, ok := okStatus(p); ok {
				r.setStatus(st)
			}
			r.ok = true
		case hdrEOF:
			if st, ok := terminatorStatus(p, r.deprecateEOF); ok && n < maxFrame {
				r.setStatus(st)
			}
			r.ok = true
		case hdrERR:
			r.fail(p)
		default:
			r.ok = true // COM_STATISTICS: a string
		}
		return true, nil
	case respPrepare:
		return r.prepare(p, n)
	}
	switch r.phase {
	case phFirst:
		switch p[0] {
		case hdrOK:
			st, ok := okStatus(p)
			if !ok {
				return false, fmt.Errorf("malformed OK packet in %s", r.where())
			}
			r.setStatus(st)
			if st&statusMoreResults != 0 {
				return false, nil
			}
			r.ok = true
			return true, nil
		case hdrERR:
			r.fail(p)
			return true, nil
		case hdrLocalInfil:
			if r.kind != respQuery {
				return false, fmt.Errorf("unexpected LOCAL INFILE request in %s", r.where())
			}
			r.infile = true
			return true, nil
		}
		cnt, _, ok := lenenc(p)
		if !ok || cnt == 0 {
			return false, fmt.Errorf("malformed column count in %s", r.where())
		}
		r.count, r.phase = cnt, phColDefs
		return false, nil
	case phColDefs:
		if p[0] == hdrERR {
			r.fail(p)
			return true, nil
		}
		r.count--
		if r.count == 0 {
			r.phase = phRows
			if !r.deprecateEOF {
				r.phase = phColEOF
			}
		}
		return false, nil
	case phColEOF:
		if p[0] == hdrERR {
			r.fail(p)
			return true, nil
		}
		st, ok := eofStatus(p)
		if p[0] != hdrEOF || !ok {
			return false, fmt.Errorf("missing EOF after column definitions in %s", r.where())
		}
		r.setStatus(st)
		if r.kind == respExecute && r.cursor && st&statusCursorExists != 0 {
			r.cursorOpn, r.ok = true, true
			return true, nil
		}
		r.phase = phRows
		return false, nil
	case phRows:
		if p[0] == hdrERR {
			r.fail(p)
			return true, nil
		}
		if !isTerminator(p, n, r.deprecateEOF) {
			return false, nil // a row, or a column definition of COM_FIELD_LIST
		}
		st, ok := terminatorStatus(p, r.deprecateEOF)
		if !ok {
			return false, fmt.Errorf("malformed end of result set in %s", r.where())
		}
		r.setStatus(st)
		switch r.kind {
		case respExecute:
			if r.cursor && st&statusCursorExists != 0 {
				r.cursorOpn = true
			}
		case respFetch:
			r.lastRow = st&statusLastRowSent != 0
		}
		if st&statusMoreResults != 0 && (r.kind == respQuery || r.kind == respExecute) && !r.cursorOpn {
			r.phase = phFirst
			return false, nil
		}
		r.ok = true
		return true, nil
	}
	return false, fmt.Errorf("unexpected packet in %s", r.where())
}

// prepare visits the packets of a COM_STMT_PREPARE response.
func (r *respScanner) prepare(p []byte, n int) (bool, error) {
	switch r.phase {
	case phFirst:
		if p[0] == hdrERR {
			r.fail(p)
			return true, nil
		}
		if p[0] != hdrOK || n < 12 || len(p) < 12 {
			return false, fmt.Errorf("malformed PREPARE_OK in %s", r.where())
		}
		r.prepID = binary.LittleEndian.Uint32(p[1:])
		r.prepCols = binary.LittleEndian.Uint16(p[5:])
		r.prepPars = binary.LittleEndian.Uint16(p[7:])
		if r.rewritePrep {
			binary.LittleEndian.PutUint32(p[1:], r.prepClientID)
		}
		r.ok = true
		if r.prepPars > 0 {
			r.count, r.phase = uint64(r.prepPars), phPrepParams
			return false, nil
		}
		return r.prepColumns(), nil
	case phPrepParams:
		if r.count--; r.count == 0 {
			if !r.deprecateEOF {
				r.phase = phPrepParamsEOF
				return false, nil
			}
			return r.prepColumns(), nil
		}
		return false, nil
	case phPrepParamsEOF:
		return r.prepColumns(), nil
	case phPrepCols:
		if r.count--; r.count == 0 {
			if !r.deprecateEOF {
				r.phase = phPrepColsEOF
				return false, nil
			}
			return true, nil
		}
		return false, nil
	case phPrepColsEOF:
		return true, nil
	}
	return false, fmt.Errorf("unexpected packet in %s", r.where())
}

// prepColumns moves on to the column definitions of PREPARE_OK and
// reports whether there are none (the response is complete).
func (r *respScanner) prepColumns() bool {
	if r.prepCols == 0 {
		return true
	}
	r.count, r.phase = uint64(r.prepCols), phPrepCols
	return false
}

func (r *respScanner) fail(p []byte) {
	r.ok = false
	if len(p) >= 3 {
		r.errCode = binary.LittleEndian.Uint16(p[1:])
	}
}
