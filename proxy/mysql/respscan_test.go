package mysql

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// Packets are built by hand here, byte for byte as the protocol
// documentation lays them out
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_response_packets.html,
// page_protocol_com_query_response_text_resultset.html,
// page_protocol_com_stmt_prepare.html), not with the helpers under test.

// wire accumulates server frames with consecutive sequence numbers.
type wire struct {
	b   []byte
	seq byte
}

// pkt appends one packet, split into frames of at most 2^24-1 bytes (a
// payload of exactly that size is followed by an empty frame).
func (w *wire) pkt(p ...byte) *wire {
	for {
		n := min(len(p), 1<<24-1)
		w.b = append(w.b, byte(n), byte(n>>8), byte(n>>16), w.seq)
		w.b = append(w.b, p[:n]...)
		w.seq++
		p = p[n:]
		if n < 1<<24-1 {
			return w
		}
	}
}

func le16(v uint16) []byte { return []byte{byte(v), byte(v >> 8)} }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// okP is an OK packet: 0x00, affected rows and last insert id (here
// one-byte length-encoded integers), status, warnings.
func okP(status uint16) []byte { return cat([]byte{0x00, 0x00, 0x00}, le16(status), le16(0)) }

// okEOFP is the OK packet that replaces EOF under DEPRECATE_EOF: header
// 0xfe.
func okEOFP(status uint16) []byte { return cat([]byte{0xfe, 0x00, 0x00}, le16(status), le16(0)) }

// eofP is an EOF packet: 0xfe, warnings, status.
func eofP(status uint16) []byte { return cat([]byte{0xfe}, le16(0), le16(status)) }

// errP is an ERR packet: 0xff, code, '#', SQLSTATE, message.
func errP(code uint16, msg string) []byte {
	return cat([]byte{0xff}, le16(code), []byte("#42000"+msg))
}

// colDefP is a Protocol::ColumnDefinition41 for a column name.
func colDefP(name string) []byte {
	s := func(v string) []byte { return append([]byte{byte(len(v))}, v...) }
	return cat(s("def"), s("db"), s("t"), s("t"), s(name), s(name),
		[]byte{0x0c, 0x21, 0x00, 0x00, 0x01, 0x00, 0x00, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00})
}

// textRowP is a text result set row; nil is NULL (0xfb).
func textRowP(vals ...[]byte) []byte {
	var b []byte
	for _, v := range vals {
		switch {
		case v == nil:
			b = append(b, 0xfb)
		case len(v) < 251:
			b = append(b, byte(len(v)))
		default:
			b = append(b, 0xfc, byte(len(v)), byte(len(v)>>8))
		}
		b = append(b, v...)
	}
	return b
}

// binRowP is a binary row of one INT column: 0x00, NULL bitmap, value.
func binRowP(v uint32) []byte {
	return []byte{0x00, 0x00, byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

// prepOKP is COM_STMT_PREPARE_OK: 0x00, statement id, columns, params,
// filler, warnings (MariaDB: 12 bytes; MySQL 8 adds metadata_follows).
func prepOKP(id uint32, cols, params uint16) []byte {
	return cat([]byte{0x00}, binary.LittleEndian.AppendUint32(nil, id), le16(cols), le16(params), []byte{0x00}, le16(0))
}

// outcome is what a response left in the scanner.
type outcome struct {
	status    uint16
	sawStatus bool
	ok        bool
	errCode   uint16
	infile    bool
	cursorOpn bool
	lastRow   bool
	prepID    uint32
	prepCols  uint16
	prepPars  uint16
	lastSeq   byte
}

func outcomeOf(r *respScanner) outcome {
	return outcome{r.status, r.sawStatus, r.ok, r.errCode, r.infile, r.cursorOpn, r.lastRow,
		r.prepID, r.prepCols, r.prepPars, r.lastSeq}
}

// feed runs r over stream delivered chunk bytes at a time, as the relay
// does: it passes what scan lets through and buffers the rest. It returns
// the bytes passed, whether the response ended and scan's error, and
// checks scan's contract on the way.
func feed(t testing.TB, r *respScanner, stream []byte, chunk int) (out []byte, done bool, err error) {
	t.Helper()
	return feedInPlace(t, r, bytes.Clone(stream), chunk)
}

// feedInPlace is feed on b itself, which scan may rewrite.
func feedInPlace(t testing.TB, r *respScanner, b []byte, chunk int) (out []byte, done bool, err error) {
	t.Helper()
	pos, avail := 0, 0 // b[pos:avail] is what the relay holds
	for {
		if avail > pos {
			fwd, need, d, e := r.scan(b[pos:avail])
			if fwd < 0 || fwd > avail-pos || need < 0 || need > 4+peekLen {
				t.Fatalf("scan(%d bytes) = fwd %d, need %d", avail-pos, fwd, need)
			}
			pos += fwd
			if e != nil {
				return b[:pos], false, e
			}
			if d {
				if !r.atBoundary() {
					t.Fatal("done but not at a packet boundary")
				}
				return b[:pos], true, nil
			}
			if avail > pos && (need == 0 || need <= avail-pos) {
				t.Fatalf("scan stopped with %d bytes left and need %d", avail-pos, need)
			}
		}
		if avail == len(b) {
			return b[:pos], false, nil
		}
		avail = min(avail+chunk, len(b))
	}
}

type respCase struct {
	name    string
	kind    respKind
	depr    bool // DEPRECATE_EOF
	cursor  bool
	pkts    [][]byte
	want    outcome
	wantErr string
}

func runRespCase(t *testing.T, tc respCase) {
	t.Helper()
	w := &wire{seq: 1}
	for _, p := range tc.pkts {
		w.pkt(p...)
	}
	stream := w.b
	for _, chunk := range []int{1, 2, 5, 11, len(stream) + 8} {
		var r respScanner
		r.start(tc.kind, tc.depr)
		r.cursor = tc.cursor
		// Trailing bytes of something else must be left alone.
		out, done, err := feed(t, &r, append(bytes.Clone(stream), "JUNK!"...), chunk)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("%s (chunk %d): err = %v, want %q", tc.name, chunk, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !done {
			t.Fatalf("%s (chunk %d): done %v, err %v", tc.name, chunk, done, err)
		}
		if !bytes.Equal(out, stream) {
			t.Fatalf("%s (chunk %d): passed %d bytes of %d, or altered them", tc.name, chunk, len(out), len(stream))
		}
		want := tc.want
		want.lastSeq = w.seq - 1
		if got := outcomeOf(&r); got != want {
			t.Fatalf("%s (chunk %d):\n got %+v\nwant %+v", tc.name, chunk, got, want)
		}
	}
}

const (
	stAC = statusAutocommit
	stIT = statusInTrans
	stMR = statusMoreResults
	stCE = statusCursorExists
	stLR = statusLastRowSent
)

func TestRespScan(t *testing.T) {
	col2 := [][]byte{colDefP("a"), colDefP("b")}
	row := textRowP([]byte("1"), nil)
	long := textRowP(bytes.Repeat([]byte("x"), 300), []byte{})
	// resultSet is a text result set of two columns and rows, ended by
	// EOF or, under DEPRECATE_EOF, OK with the 0xfe header.
	resultSet := func(depr bool, end uint16, rows ...[]byte) [][]byte {
		p := [][]byte{{0x02}}
		p = append(p, col2...)
		if !depr {
			p = append(p, eofP(end&^stMR))
		}
		p = append(p, rows...)
		if depr {
			return append(p, okEOFP(end))
		}
		return append(p, eofP(end))
	}
	pk := func(ps ...[]byte) [][]byte { return ps }
	join := func(pss ...[][]byte) [][]byte {
		var out [][]byte
		for _, ps := range pss {
			out = append(out, ps...)
		}
		return out
	}
	var cases []respCase
	for _, depr := range []bool{false, true} {
		end := eofP
		if depr {
			end = okEOFP
		}
		cases = append(cases,
			// One-packet responses.
			respCase{name: "single OK", kind: respSingle, depr: depr, pkts: pk(okP(stAC)),
				want: outcome{status: stAC, sawStatus: true, ok: true}},
			respCase{name: "single OK wide", kind: respSingle, depr: depr,
				pkts: pk(cat([]byte{0x00, 0xfc, 0x10, 0x27, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8}, le16(stIT|stAC), le16(3), []byte("info"))),
				want: outcome{status: stIT | stAC, sawStatus: true, ok: true}},
			respCase{name: "single ERR", kind: respSingle, depr: depr, pkts: pk(errP(1064, "syntax")),
				want: outcome{errCode: 1064}},
			respCase{name: "single EOF", kind: respSingle, depr: depr, pkts: pk(end(stIT)),
				want: outcome{status: stIT, sawStatus: true, ok: true}},
			respCase{name: "statistics", kind: respSingle, depr: depr, pkts: pk([]byte("Uptime: 10  Threads: 1")),
				want: outcome{ok: true}},

			// COM_QUERY.
			respCase{name: "query OK", kind: respQuery, depr: depr, pkts: pk(okP(stIT)),
				want: outcome{status: stIT, sawStatus: true, ok: true}},
			respCase{name: "query ERR", kind: respQuery, depr: depr, pkts: pk(errP(1146, "no table")),
				want: outcome{errCode: 1146}},
			respCase{name: "multi OK", kind: respQuery, depr: depr, pkts: pk(okP(stAC|stMR), okP(stAC|stMR), okP(stIT)),
				want: outcome{status: stIT, sawStatus: true, ok: true}},
			respCase{name: "multi OK then ERR", kind: respQuery, depr: depr, pkts: pk(okP(stAC|stMR), errP(1054, "x")),
				want: outcome{status: stAC | stMR, sawStatus: true, errCode: 1054}},
			respCase{name: "result set", kind: respQuery, depr: depr, pkts: resultSet(depr, stAC, row, long, row),
				want: outcome{status: stAC, sawStatus: true, ok: true}},
			respCase{name: "empty result set", kind: respQuery, depr: depr, pkts: resultSet(depr, stIT),
				want: outcome{status: stIT, sawStatus: true, ok: true}},
			respCase{name: "result sets and OK", kind: respQuery, depr: depr,
				pkts: join(resultSet(depr, stIT|stMR, row), pk(okP(stIT|stMR)), resultSet(depr, stIT|stMR), pk(okP(stIT))),
				want: outcome{status: stIT, sawStatus: true, ok: true}},
			respCase{name: "ERR in rows", kind: respQuery, depr: depr,
				pkts: join(resultSet(depr, 0, row)[:len(resultSet(depr, 0, row))-1], pk(errP(1317, "interrupted"))),
				want: outcome{sawStatus: !depr, errCode: 1317}},
			respCase{name: "ERR in column definitions", kind: respQuery, depr: depr,
				pkts: pk([]byte{0x02}, colDefP("a"), errP(1105, "x")), want: outcome{errCode: 1105}},
			respCase{name: "LOCAL INFILE", kind: respQuery, depr: depr, pkts: pk([]byte("\xfb/tmp/f.csv")),
				want: outcome{infile: true}},
			respCase{name: "251 columns", kind: respQuery, depr: depr,
				pkts: join(pk([]byte{0xfc, 251, 0}), repeatPkt(colDefP("c"), 251), endIf(!depr, eofP(0)), pk(end(stAC))),
				want: outcome{status: stAC, sawStatus: true, ok: true}},

			// COM_STMT_EXECUTE.
			respCase{name: "execute OK", kind: respExecute, depr: depr, pkts: pk(okP(stAC)),
				want: outcome{status: stAC, sawStatus: true, ok: true}},
			respCase{name: "binary rows", kind: respExecute, depr: depr,
				pkts: join(pk([]byte{0x01}, colDefP("a")), endIf(!depr, eofP(stAC)), pk(binRowP(1), binRowP(0xfe), end(stAC))),
				want: outcome{status: stAC, sawStatus: true, ok: true}},
			respCase{name: "CALL", kind: respExecute, depr: depr,
				pkts: join(pk([]byte{0x01}, colDefP("a")), endIf(!depr, eofP(stAC)), pk(binRowP(1), end(stAC|stMR), okP(stAC))),
				want: outcome{status: stAC, sawStatus: true, ok: true}},
			respCase{name: "no cursor asked", kind: respExecute, depr: depr,
				pkts: join(pk([]byte{0x01}, colDefP("a")), endIf(!depr, eofP(stCE)), pk(binRowP(1), end(stAC))),
				want: outcome{status: stAC, sawStatus: true, ok: true}},
			respCase{name: "cursor not opened", kind: respExecute, depr: depr, cursor: true,
				pkts: join(pk([]byte{0x01}, colDefP("a")), endIf(!depr, eofP(0)), pk(binRowP(1), end(stAC))),
				want: outcome{status: stAC, sawStatus: true, ok: true}},
			respCase{name: "execute LOCAL INFILE", kind: respExecute, depr: depr, pkts: pk([]byte("\xfbf")),
				wantErr: "unexpected LOCAL INFILE request"},

			// COM_STMT_FETCH.
			respCase{name: "fetch", kind: respFetch, depr: depr, pkts: pk(binRowP(1), binRowP(2), end(stCE|stIT)),
				want: outcome{status: stCE | stIT, sawStatus: true, ok: true}},
			respCase{name: "fetch last", kind: respFetch, depr: depr, pkts: pk(binRowP(1), end(stCE|stLR)),
				want: outcome{status: stCE | stLR, sawStatus: true, ok: true, lastRow: true}},
			respCase{name: "fetch ERR", kind: respFetch, depr: depr, pkts: pk(errP(1243, "unknown")),
				want: outcome{errCode: 1243}},

			// COM_FIELD_LIST.
			respCase{name: "field list", kind: respFieldList, depr: depr, pkts: pk(colDefP("a"), colDefP("b"), end(stAC)),
				want: outcome{status: stAC, sawStatus: true, ok: true}},

			// COM_STMT_PREPARE.
			respCase{name: "prepare", kind: respPrepare, depr: depr,
				pkts: join(pk(prepOKP(7, 1, 2), colDefP("?"), colDefP("?")), endIf(!depr, eofP(stAC)), pk(colDefP("a")), endIf(!depr, eofP(stAC))),
				want: outcome{ok: true, prepID: 7, prepCols: 1, prepPars: 2}},
			respCase{name: "prepare no params", kind: respPrepare, depr: depr,
				pkts: join(pk(prepOKP(8, 2, 0), colDefP("a"), colDefP("b")), endIf(!depr, eofP(stAC))),
				want: outcome{ok: true, prepID: 8, prepCols: 2}},
			respCase{name: "prepare no columns", kind: respPrepare, depr: depr,
				pkts: join(pk(prepOKP(9, 0, 1), colDefP("?")), endIf(!depr, eofP(stAC))),
				want: outcome{ok: true, prepID: 9, prepPars: 1}},
			respCase{name: "prepare nothing", kind: respPrepare, depr: depr, pkts: pk(prepOKP(0xfffffffe, 0, 0)),
				want: outcome{ok: true, prepID: 0xfffffffe}},
			respCase{name: "prepare MySQL 8", kind: respPrepare, depr: depr, pkts: pk(append(prepOKP(3, 0, 0), 1)),
				want: outcome{ok: true, prepID: 3}},
			respCase{name: "prepare ERR", kind: respPrepare, depr: depr, pkts: pk(errP(1064, "syntax")),
				want: outcome{errCode: 1064}},
			respCase{name: "prepare short", kind: respPrepare, depr: depr, pkts: pk(prepOKP(1, 0, 0)[:11]),
				wantErr: "malformed PREPARE_OK"},

			// Malformed responses.
			respCase{name: "empty packet", kind: respQuery, depr: depr, pkts: pk([]byte{}), wantErr: "empty packet"},
			respCase{name: "zero columns", kind: respQuery, depr: depr, pkts: pk([]byte{0xfc, 0, 0}), wantErr: "malformed column count"},
			respCase{name: "short column count", kind: respQuery, depr: depr, pkts: pk([]byte{0xfe, 1, 2}), wantErr: "malformed column count"},
			respCase{name: "short OK", kind: respQuery, depr: depr, pkts: pk([]byte{0x00, 0x00, 0x00, 0x02}), wantErr: "malformed OK"},
			respCase{name: "OK with NULL", kind: respExecute, depr: depr, pkts: pk([]byte{0x00, 0xfb, 0x00, 0x02, 0x00}), wantErr: "malformed OK"},
		)
	}
	cases = append(cases,
		// Without DEPRECATE_EOF, the column definitions end with EOF.
		respCase{name: "missing EOF", kind: respQuery, pkts: pk([]byte{0x01}, colDefP("a"), row), wantErr: "missing EOF"},
		respCase{name: "short EOF", kind: respQuery, pkts: pk([]byte{0x01}, colDefP("a"), []byte{0xfe, 0, 0}), wantErr: "missing EOF"},
		respCase{name: "short end", kind: respQuery, pkts: pk([]byte{0x01}, colDefP("a"), eofP(0), []byte{0xfe, 0}), wantErr: "malformed end"},
		respCase{name: "short OK-EOF", kind: respQuery, depr: true, pkts: pk([]byte{0x01}, colDefP("a"), []byte{0xfe, 0, 0, 2}), wantErr: "malformed end"},
		// A cursor opened: the columns, then EOF (or OK) with
		// CURSOR_EXISTS, and no rows.
		respCase{name: "cursor", kind: respExecute, cursor: true,
			pkts: pk([]byte{0x01}, colDefP("a"), eofP(stCE|stAC)),
			want: outcome{status: stCE | stAC, sawStatus: true, ok: true, cursorOpn: true}},
		respCase{name: "cursor DEPRECATE_EOF", kind: respExecute, depr: true, cursor: true,
			pkts: pk([]byte{0x01}, colDefP("a"), okEOFP(stCE|stAC|stMR)),
			want: outcome{status: stCE | stAC | stMR, sawStatus: true, ok: true, cursorOpn: true}},
		// Without DEPRECATE_EOF, a row of 9 bytes or more starting with
		// 0xfe is no EOF. (Under DEPRECATE_EOF such a row is at least 2^24
		// bytes long: TestRespScanLargePackets.)
		respCase{name: "0xfe row", kind: respFieldList,
			pkts: pk(append([]byte{0xfe}, make([]byte, 8)...), eofP(stAC)),
			want: outcome{status: stAC, sawStatus: true, ok: true}},
	)
	for _, tc := range cases {
		runRespCase(t, tc)
	}
}

func repeatPkt(p []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = p
	}
	return out
}

func endIf(cond bool, p []byte) [][]byte {
	if cond {
		return [][]byte{p}
	}
	return nil
}

// TestRespScanNeed checks what scan asks to be buffered: a header, then
// the header and the first bytes of the payload.
func TestRespScanNeed(t *testing.T) {
	w := &wire{seq: 1}
	w.pkt(okP(stAC)...) // 4 + 7 bytes
	var r respScanner
	r.start(respQuery, false)
	for i := 1; i < len(w.b); i++ {
		fwd, need, done, err := r.scan(bytes.Clone(w.b[:i]))
		wantNeed := 4
		if i >= 4 {
			wantNeed = 11
		}
		if fwd != 0 || need != wantNeed || done || err != nil || !r.atBoundary() {
			t.Fatalf("scan(%d bytes) = %d, %d, %v, %v", i, fwd, need, done, err)
		}
	}
	// A long row needs only its first peekLen bytes to be passed on.
	w = &wire{seq: 1}
	w.pkt([]byte{0x01}...).pkt(colDefP("a")...).pkt(eofP(0)...)
	head := len(w.b)
	w.pkt(textRowP(bytes.Repeat([]byte("y"), 200))...)
	r.start(respQuery, false)
	fwd, need, done, err := r.scan(bytes.Clone(w.b[:head+4+peekLen-1]))
	if fwd != head || need != 4+peekLen || done || err != nil {
		t.Fatalf("scan before a row = %d, %d, %v, %v", fwd, need, done, err)
	}
	fwd, need, done, err = r.scan(bytes.Clone(w.b[head : head+4+peekLen+10]))
	if fwd != 4+peekLen+10 || need != 0 || done || err != nil || r.atBoundary() || r.rem != 201-peekLen-10 {
		t.Fatalf("scan of a row's start = %d, %d, %v, %v (rem %d)", fwd, need, done, err, r.rem)
	}
}

// TestRespScanRewrites checks the sequence numbers and PREPARE_OK's
// statement id the scanner rewrites in place.
func TestRespScanRewrites(t *testing.T) {
	w := &wire{seq: 3}
	w.pkt(prepOKP(0x01020304, 1, 1)...).pkt(colDefP("?")...).pkt(eofP(0)...).pkt(colDefP("a")...).pkt(eofP(0)...)
	var r respScanner
	r.start(respPrepare, false)
	r.seqDelta = 2
	r.rewritePrep, r.prepClientID = true, 0x0a0b0c0d
	buf := bytes.Clone(w.b)
	fwd, _, done, err := r.scan(buf)
	if fwd != len(buf) || !done || err != nil {
		t.Fatalf("scan = %d, %v, %v", fwd, done, err)
	}
	if r.prepID != 0x01020304 || r.lastSeq != 5 {
		t.Fatalf("prepID %#x, lastSeq %d", r.prepID, r.lastSeq)
	}
	want := &wire{seq: 1}
	want.pkt(prepOKP(0x0a0b0c0d, 1, 1)...).pkt(colDefP("?")...).pkt(eofP(0)...).pkt(colDefP("a")...).pkt(eofP(0)...)
	if !bytes.Equal(buf, want.b) {
		t.Fatalf("rewritten:\n%x\nwant\n%x", buf, want.b)
	}
}

// TestRespScanLocalInfile follows a LOCAL INFILE request, the client's
// file (not seen by the scanner) and the server's answer.
func TestRespScanLocalInfile(t *testing.T) {
	for _, depr := range []bool{false, true} {
		var r respScanner
		r.start(respQuery, depr)
		w := &wire{seq: 1}
		w.pkt(okP(stMR)...).pkt([]byte("\xfbdata.csv")...)
		out, done, err := feed(t, &r, w.b, 3)
		if !done || err != nil || !r.infile || r.ok || len(out) != len(w.b) {
			t.Fatalf("request: done %v, err %v, %+v", done, err, outcomeOf(&r))
		}
		r.resume()
		w = &wire{seq: 4}
		w.pkt(okP(stAC | stMR)...).pkt(okP(stAC)...)
		if _, done, err := feed(t, &r, w.b, 3); !done || err != nil || r.infile || !r.ok || r.status != stAC {
			t.Fatalf("after the file: done %v, err %v, %+v", done, err, outcomeOf(&r))
		}
		// A failed load.
		r.start(respQuery, depr)
		w = &wire{seq: 1}
		w.pkt([]byte("\xfbx")...)
		feed(t, &r, w.b, 100)
		r.resume()
		w = &wire{seq: 4}
		w.pkt(errP(1148, "not allowed")...)
		if _, done, err := feed(t, &r, w.b, 100); !done || err != nil || r.ok || r.errCode != 1148 {
			t.Fatalf("failed load: done %v, err %v, %+v", done, err, outcomeOf(&r))
		}
	}
}

// sparsePkt is a packet of n payload bytes that starts with head; the
// rest is zero.
type sparsePkt struct {
	n    int
	head []byte
}

// layout frames packets in one buffer without copying large payloads,
// starting at sequence number 1, and returns it with the number of frames.
func layout(pkts ...sparsePkt) ([]byte, int) {
	total := 0
	for _, p := range pkts {
		total += p.n + 4*(p.n/maxFrame+1)
	}
	b := make([]byte, total)
	pos, frames := 0, 0
	for _, p := range pkts {
		copy(b[pos+4:], p.head)
		for rest := p.n; ; {
			k := min(rest, maxFrame)
			frames++
			b[pos], b[pos+1], b[pos+2], b[pos+3] = byte(k), byte(k>>8), byte(k>>16), byte(frames)
			pos += 4 + k
			rest -= k
			if k < maxFrame {
				break
			}
		}
	}
	return b, frames
}

func small(p []byte) sparsePkt { return sparsePkt{len(p), p} }

// TestRespScanLargePackets covers packets of 2^24-1 bytes and more: the
// frames that continue them are passed without being read as packets.
func TestRespScanLargePackets(t *testing.T) {
	// A text row that is one lenenc string of 2^24 bytes starts with 0xfe
	// and fills a whole first frame: no terminator, even under
	// DEPRECATE_EOF.
	big := sparsePkt{9 + 1<<24, []byte{0xfe, 0, 0, 0, 1, 0, 0, 0, 0}}
	// A row of exactly 2^24-1 bytes is followed by an empty frame.
	exact := sparsePkt{1<<24 - 1, []byte{0xfd, 0xfb, 0xff, 0xff}} // lenenc length 2^24-5
	for _, depr := range []bool{false, true} {
		pkts := []sparsePkt{small([]byte{0x01}), small(colDefP("a"))}
		if !depr {
			pkts = append(pkts, small(eofP(0)))
		}
		pkts = append(pkts, big, exact, small(textRowP([]byte("z"))))
		if depr {
			pkts = append(pkts, small(okEOFP(stIT)))
		} else {
			pkts = append(pkts, small(eofP(stIT)))
		}
		b, frames := layout(pkts...)
		if want := 1 + 1 + b2i(!depr) + 2 + 2 + 1 + 1; frames != want {
			t.Fatalf("built %d frames, want %d", frames, want)
		}
		for _, chunk := range []int{3 << 20, len(b)} {
			var r respScanner
			r.start(respQuery, depr)
			out, done, err := feedInPlace(t, &r, b, chunk) // no sequence number changes
			if !done || err != nil || len(out) != len(b) || !r.ok || r.status != stIT || r.lastSeq != byte(frames) {
				t.Fatalf("DEPRECATE_EOF %v chunk %d: done %v err %v passed %d of %d, %+v",
					depr, chunk, done, err, len(out), len(b), outcomeOf(&r))
			}
		}
	}
	// A statistics string of exactly 2^24-1 bytes ends the response only
	// with its empty continuation frame.
	b, _ := layout(exact)
	var r respScanner
	r.start(respSingle, false)
	if out, done, err := feedInPlace(t, &r, b[:len(b)-4], 8<<20); done || err != nil || len(out) != len(b)-4 {
		t.Fatalf("before the continuation: done %v err %v passed %d", done, err, len(out))
	}
	if _, _, done, err := r.scan(b[len(b)-4:]); !done || err != nil || r.lastSeq != 2 {
		t.Fatalf("continuation: done %v err %v lastSeq %d", done, err, r.lastSeq)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// framePrefix returns the longest prefix of b made of whole frames.
func framePrefix(b []byte) []byte {
	pos := 0
	for len(b)-pos >= 4 {
		n := frameLen(b[pos:])
		if len(b)-pos-4 < n {
			break
		}
		pos += 4 + n
	}
	return b[:pos]
}

// packetWise runs a fresh scanner over whole single-frame packets the way
// exchange does, calling packet with each complete payload.
func packetWise(kind respKind, depr, cursor bool, b []byte) (end int, done bool, err error, o outcome) {
	var r respScanner
	r.start(kind, depr)
	r.cursor = cursor
	pos := 0
	for len(b)-pos >= 4 {
		n := frameLen(b[pos:])
		p := b[pos+4 : pos+4+n]
		if n == 0 {
			return pos, false, errMalformed, outcomeOf(&r)
		}
		d, e := r.packet(p, n)
		if e != nil {
			return pos, false, e, outcomeOf(&r)
		}
		r.lastSeq = b[pos+3]
		pos += 4 + n
		if d {
			return pos, true, nil, outcomeOf(&r)
		}
	}
	return pos, false, nil, outcomeOf(&r)
}

func FuzzRespScan(f *testing.F) {
	add := func(kind respKind, flags byte, pkts ...[]byte) {
		w := &wire{seq: 1}
		for _, p := range pkts {
			w.pkt(p...)
		}
		f.Add(byte(kind), flags, byte(3), w.b)
	}
	add(respSingle, 0, okP(stAC))
	add(respQuery, 0, []byte{0x01}, colDefP("a"), eofP(0), textRowP([]byte("x")), eofP(stAC))
	add(respQuery, 1, []byte{0x01}, colDefP("a"), textRowP([]byte("x")), okEOFP(stAC|stMR), okP(0))
	add(respQuery, 0, okP(stMR), []byte("\xfbf"))
	add(respExecute, 2, []byte{0x01}, colDefP("a"), eofP(stCE))
	add(respFetch, 1, binRowP(1), okEOFP(stLR))
	add(respPrepare, 0, prepOKP(1, 1, 1), colDefP("?"), eofP(0), colDefP("a"), eofP(0))
	add(respPrepare, 1, prepOKP(1, 2, 0), colDefP("a"), colDefP("b"))
	add(respFieldList, 0, colDefP("a"), eofP(0))
	add(respQuery, 0, errP(1, "x"))
	f.Fuzz(func(t *testing.T, kindB, flags, chunkB byte, data []byte) {
		kind := respKind(kindB % 6)
		depr, cursor := flags&1 != 0, flags&2 != 0
		seqDelta := flags >> 6
		run := func(chunk int) (out []byte, done bool, err error, o outcome) {
			var r respScanner
			r.start(kind, depr)
			r.cursor, r.seqDelta = cursor, seqDelta
			r.rewritePrep, r.prepClientID = flags&4 != 0, 0xdeadbeef
			out, done, err = feed(t, &r, data, chunk)
			return out, done, err, outcomeOf(&r)
		}
		out1, done1, err1, o1 := run(len(data) + 1)
		outN, doneN, errN, oN := run(1 + int(chunkB)%13)
		// Delivery in pieces changes nothing.
		if !bytes.Equal(out1, outN) || done1 != doneN || (err1 == nil) != (errN == nil) || o1 != oN {
			t.Fatalf("chunked scan differs:\n whole %d bytes %v %v %+v\n chunk %d bytes %v %v %+v",
				len(out1), done1, err1, o1, len(outN), doneN, errN, oN)
		}
		// The pass-through alters only sequence numbers and PREPARE_OK's id.
		if seqDelta == 0 && flags&4 == 0 && !bytes.Equal(out1, data[:len(out1)]) {
			t.Fatal("scan altered the bytes it passed")
		}
		// Over whole frames, scanning frames and visiting whole packets as
		// exchange does agree. (No frame here reaches 2^24-1 bytes.)
		if seqDelta != 0 || flags&4 != 0 {
			return
		}
		whole := framePrefix(data)
		outW, doneW, errW, oW := func() ([]byte, bool, error, outcome) {
			var r respScanner
			r.start(kind, depr)
			r.cursor = cursor
			out, done, err := feed(t, &r, whole, len(whole)+1)
			return out, done, err, outcomeOf(&r)
		}()
		end, doneP, errP, oP := packetWise(kind, depr, cursor, whole)
		if doneW != doneP || (errW == nil) != (errP == nil) || oW != oP || (doneW && len(outW) != end) {
			t.Fatalf("frame scan and packet visit differ:\n scan %d %v %v %+v\n pkts %d %v %v %+v",
				len(outW), doneW, errW, oW, end, doneP, errP, oP)
		}
	})
}
