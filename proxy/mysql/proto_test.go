package mysql

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"
)

// Length-encoded integers
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_dt_integers.html):
// < 0xfb one byte; 0xfc + 2 bytes; 0xfd + 3 bytes; 0xfe + 8 bytes.
var lenencCases = []struct {
	v   uint64
	enc []byte
}{
	{0, []byte{0x00}},
	{1, []byte{0x01}},
	{250, []byte{0xfa}},
	{251, []byte{0xfc, 0xfb, 0x00}},
	{252, []byte{0xfc, 0xfc, 0x00}},
	{0xffff, []byte{0xfc, 0xff, 0xff}},
	{0x10000, []byte{0xfd, 0x00, 0x00, 0x01}},
	{0xabcdef, []byte{0xfd, 0xef, 0xcd, 0xab}},
	{0xffffff, []byte{0xfd, 0xff, 0xff, 0xff}},
	{0x1000000, []byte{0xfe, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00}},
	{0x0102030405060708, []byte{0xfe, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01}},
	{math.MaxUint64, []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
}

func TestLenenc(t *testing.T) {
	for _, tc := range lenencCases {
		if got := appendLenenc([]byte("x"), tc.v); !bytes.Equal(got, append([]byte("x"), tc.enc...)) {
			t.Errorf("appendLenenc(%d) = %x, want x%x", tc.v, got, tc.enc)
		}
		v, n, ok := lenenc(append(bytes.Clone(tc.enc), 0xaa, 0xbb))
		if v != tc.v || n != len(tc.enc) || !ok {
			t.Errorf("lenenc(%x) = %d, %d, %v", tc.enc, v, n, ok)
		}
		// Every proper prefix is too short.
		for i := 0; i < len(tc.enc); i++ {
			if v, n, ok := lenenc(tc.enc[:i]); ok || v != 0 || n != 0 {
				t.Errorf("lenenc(%x) = %d, %d, %v on a prefix", tc.enc[:i], v, n, ok)
			}
		}
	}
	// Non-canonical encodings are read as written.
	if v, n, ok := lenenc([]byte{0xfc, 0x01, 0x00}); v != 1 || n != 3 || !ok {
		t.Errorf("lenenc(fc0100) = %d, %d, %v", v, n, ok)
	}
	// 0xfb is NULL and 0xff is no integer (an ERR packet's header).
	for _, b := range [][]byte{{0xfb}, {0xff}, {0xfb, 0, 0, 0, 0, 0, 0, 0, 0}, {0xff, 0, 0, 0, 0, 0, 0, 0, 0}, nil, {}} {
		if v, n, ok := lenenc(b); ok || v != 0 || n != 0 {
			t.Errorf("lenenc(%x) = %d, %d, %v", b, v, n, ok)
		}
	}
}

func TestLenencString(t *testing.T) {
	long := strings.Repeat("z", 300)
	tests := []struct {
		in   []byte
		s    string
		n    int
		null bool
		err  bool
	}{
		{[]byte{0x00}, "", 1, false, false},
		{[]byte{0x00, 'x'}, "", 1, false, false},
		{[]byte("\x03abcde"), "abc", 4, false, false},
		{[]byte{0xfb, 'x'}, "", 1, true, false},
		{append([]byte{0xfc, 0x2c, 0x01}, long...), long, 303, false, false},
		{[]byte("\x03ab"), "", 0, false, true},
		{[]byte{0xfc, 0x2c}, "", 0, false, true},
		{[]byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'a'}, "", 0, false, true},
		{[]byte{0xff, 'a'}, "", 0, false, true},
		{nil, "", 0, false, true},
	}
	for _, tc := range tests {
		s, n, null, err := lenencString(tc.in)
		if string(s) != tc.s || n != tc.n || null != tc.null || (err != nil) != tc.err {
			t.Errorf("lenencString(%x) = %q, %d, %v, %v", tc.in, s, n, null, err)
		}
		if null && s != nil {
			t.Errorf("lenencString(%x): NULL with a value", tc.in)
		}
		if !tc.err && !tc.null && s == nil {
			t.Errorf("lenencString(%x): nil for an empty string", tc.in)
		}
	}
}

func TestFrameHeader(t *testing.T) {
	for _, tc := range []struct {
		n   int
		seq byte
		h   []byte
	}{
		{0, 0, []byte{0, 0, 0, 0}},
		{7, 1, []byte{7, 0, 0, 1}},
		{0x123456, 0xff, []byte{0x56, 0x34, 0x12, 0xff}},
		{maxFrame, 9, []byte{0xff, 0xff, 0xff, 9}},
	} {
		h := make([]byte, 4)
		putFrameHeader(h, tc.n, tc.seq)
		if !bytes.Equal(h, tc.h) {
			t.Errorf("putFrameHeader(%d, %d) = %x, want %x", tc.n, tc.seq, h, tc.h)
		}
		if got := frameLen(tc.h); got != tc.n {
			t.Errorf("frameLen(%x) = %d", tc.h, got)
		}
	}
}

// frames splits framed bytes into (length, seq) pairs and checks that
// the payloads, concatenated, are want.
func checkFrames(t *testing.T, b, want []byte) (lens []int, seqs []byte) {
	t.Helper()
	off := 0
	for len(b) > 0 {
		if len(b) < 4 {
			t.Fatalf("%d stray bytes", len(b))
		}
		n := frameLen(b)
		if len(b) < 4+n {
			t.Fatalf("frame of %d bytes cut at %d", n, len(b)-4)
		}
		lens, seqs = append(lens, n), append(seqs, b[3])
		if off+n > len(want) || !bytes.Equal(b[4:4+n], want[off:off+n]) {
			t.Fatalf("frame %d differs from the payload given", len(lens))
		}
		off += n
		b = b[4+n:]
	}
	if off != len(want) {
		t.Fatalf("frames carry %d bytes of %d", off, len(want))
	}
	return lens, seqs
}

func TestAppendPacket(t *testing.T) {
	big := make([]byte, maxFrame+1)
	// Marks around the frame boundary show the order is kept.
	for i, at := range []int{0, 1, maxFrame - 1, maxFrame} {
		big[at] = byte(i + 1)
	}
	tests := []struct {
		size    int
		seq     byte
		lens    []int
		seqs    []byte
		nextSeq byte
	}{
		{0, 0, []int{0}, []byte{0}, 1},
		{5, 3, []int{5}, []byte{3}, 4},
		// A payload of exactly 2^24-1 bytes ends with an empty frame.
		{maxFrame, 0, []int{maxFrame, 0}, []byte{0, 1}, 2},
		{maxFrame + 1, 255, []int{maxFrame, 1}, []byte{255, 0}, 1},
	}
	for _, tc := range tests {
		out, next := appendPacket([]byte("pre"), tc.seq, big[:tc.size])
		if !bytes.HasPrefix(out, []byte("pre")) {
			t.Fatalf("size %d: prefix lost", tc.size)
		}
		lens, seqs := checkFrames(t, out[3:], big[:tc.size])
		if !equalInts(lens, tc.lens) || !bytes.Equal(seqs, tc.seqs) || next != tc.nextSeq {
			t.Errorf("appendPacket(%d bytes, seq %d): frames %v seqs %v next %d, want %v %v %d",
				tc.size, tc.seq, lens, seqs, next, tc.lens, tc.seqs, tc.nextSeq)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStatusReaders(t *testing.T) {
	ok := func(aff, id []byte, st uint16) []byte {
		return cat([]byte{0x00}, aff, id, le16(st), le16(0))
	}
	tests := []struct {
		name string
		p    []byte
		st   uint16
		ok   bool
	}{
		{"plain", ok([]byte{0}, []byte{0}, 0x0003), 0x0003, true},
		{"wide", ok([]byte{0xfc, 1, 2}, []byte{0xfe, 1, 2, 3, 4, 5, 6, 7, 8}, 0x4002), 0x4002, true},
		{"3-byte", ok([]byte{0xfd, 1, 2, 3}, []byte{5}, 0x0008), 0x0008, true},
		{"no warnings", []byte{0x00, 0x00, 0x00, 0x22, 0x00}, 0x0022, true},
		{"short status", []byte{0x00, 0x00, 0x00, 0x22}, 0, false},
		{"short id", []byte{0x00, 0x00, 0xfc, 0x01}, 0, false},
		{"NULL", []byte{0x00, 0xfb, 0x00, 0x02, 0x00}, 0, false},
		{"header only", []byte{0x00}, 0, false},
		{"empty", nil, 0, false},
	}
	for _, tc := range tests {
		st, ok := okStatus(tc.p)
		if st != tc.st || ok != tc.ok {
			t.Errorf("okStatus(%s %x) = %#x, %v", tc.name, tc.p, st, ok)
		}
		// Under DEPRECATE_EOF the terminator is the same OK packet with
		// header 0xfe.
		if len(tc.p) > 0 {
			p := append([]byte{0xfe}, tc.p[1:]...)
			if st, ok := terminatorStatus(p, true); st != tc.st || ok != tc.ok {
				t.Errorf("terminatorStatus(%s %x, true) = %#x, %v", tc.name, p, st, ok)
			}
		}
	}
	for _, tc := range []struct {
		p  []byte
		st uint16
		ok bool
	}{
		{[]byte{0xfe, 0x01, 0x00, 0x02, 0x40}, 0x4002, true},
		{[]byte{0xfe, 0x00, 0x00, 0x08, 0x00, 0xaa}, 0x0008, true},
		{[]byte{0xfe, 0x00, 0x00, 0x08}, 0, false},
		{[]byte{0xfe}, 0, false},
	} {
		if st, ok := eofStatus(tc.p); st != tc.st || ok != tc.ok {
			t.Errorf("eofStatus(%x) = %#x, %v", tc.p, st, ok)
		}
		if st, ok := terminatorStatus(tc.p, false); st != tc.st || ok != tc.ok {
			t.Errorf("terminatorStatus(%x, false) = %#x, %v", tc.p, st, ok)
		}
	}
}

func TestIsTerminator(t *testing.T) {
	for _, tc := range []struct {
		p    []byte
		n    int
		depr bool
		want bool
	}{
		{[]byte{0xfe, 0, 0, 2, 0}, 5, false, true},
		{[]byte{0xfe, 0, 0, 2, 0}, 8, false, true},
		{[]byte{0xfe, 0, 0, 2, 0}, 9, false, false},
		{[]byte{0xfe, 0, 0, 2, 0}, 9, true, true},
		{[]byte{0xfe, 0, 0, 2, 0}, maxFrame - 1, true, true},
		{[]byte{0xfe, 0, 0, 0, 1}, maxFrame, true, false},
		{[]byte{0xfe}, maxFrame, false, false},
		{[]byte{0x00, 0, 0, 2, 0}, 7, true, false},
		{[]byte{0xff, 0, 0}, 3, false, false},
		{nil, 0, true, false},
	} {
		if got := isTerminator(tc.p, tc.n, tc.depr); got != tc.want {
			t.Errorf("isTerminator(%x, %d, %v) = %v", tc.p, tc.n, tc.depr, got)
		}
	}
}

func TestAppendOK(t *testing.T) {
	got := appendOK([]byte{0xaa}, 2, 0x4003, 0)
	want := []byte{0xaa, 7, 0, 0, 2, 0x00, 0x00, 0x00, 0x03, 0x40, 0x00, 0x00}
	if !bytes.Equal(got, want) {
		t.Errorf("appendOK = %x, want %x", got, want)
	}
	got = appendOK(nil, 1, statusAutocommit, capSessionTrack|capProtocol41)
	want = []byte{8, 0, 0, 1, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00}
	if !bytes.Equal(got, want) {
		t.Errorf("appendOK with SESSION_TRACK = %x, want %x", got, want)
	}
	if st, ok := okStatus(got[4:]); !ok || st != statusAutocommit {
		t.Errorf("okStatus(appendOK) = %#x, %v", st, ok)
	}
}

func TestErrPackets(t *testing.T) {
	got := appendErr(nil, 3, &myError{Code: 1045, State: "28000", Message: "Access denied"})
	want := cat([]byte{22, 0, 0, 3, 0xff, 0x15, 0x04, '#'}, []byte("28000Access denied"))
	if !bytes.Equal(got, want) {
		t.Errorf("appendErr = %x, want %x", got, want)
	}
	if e := parseErr(got[4:]); *e != (myError{Code: 1045, State: "28000", Message: "Access denied"}) {
		t.Errorf("parseErr = %+v", e)
	}
	// A state that is not 5 characters is replaced.
	got = appendErr(nil, 0, &myError{Code: 1, State: "bad", Message: "m"})
	if e := parseErr(got[4:]); *e != (myError{Code: 1, State: "HY000", Message: "m"}) {
		t.Errorf("parseErr(bad state) = %+v", e)
	}
	// A message too long for one frame is cut: the packet stays one frame.
	got = appendErr(nil, 0, &myError{Code: 2, State: "HY000", Message: strings.Repeat("m", maxFrame)})
	if n := frameLen(got); n != maxFrame-1 || len(got) != 4+n {
		t.Errorf("long ERR: frame of %d, %d bytes", n, len(got))
	}
	for _, tc := range []struct {
		p    []byte
		want myError
	}{
		{[]byte{0xff, 0x10, 0x04, 'n', 'o', ' ', '#'}, myError{Code: 1040, State: "HY000", Message: "no #"}},
		{[]byte{0xff, 0x10, 0x04, '#', '0', '8'}, myError{Code: 1040, State: "HY000", Message: "#08"}},
		{[]byte{0xff, 0x10, 0x04}, myError{Code: 1040, State: "HY000"}},
		{[]byte{0xff, 0x10}, myError{Code: 0xffff, State: "HY000", Message: "malformed error packet"}},
		{[]byte{0x00, 0x10, 0x04}, myError{Code: 0xffff, State: "HY000", Message: "malformed error packet"}},
	} {
		if e := parseErr(tc.p); *e != tc.want {
			t.Errorf("parseErr(%x) = %+v, want %+v", tc.p, *e, tc.want)
		}
	}
}

func FuzzLenenc(f *testing.F) {
	for _, tc := range lenencCases {
		f.Add(tc.enc)
	}
	f.Add([]byte{0xfb})
	f.Add([]byte{0xfc, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, ok := lenenc(b)
		if !ok {
			if v != 0 || n != 0 {
				t.Fatalf("lenenc(%x) failed with %d, %d", b, v, n)
			}
		} else {
			if n < 1 || n > len(b) || n != map[byte]int{0xfc: 3, 0xfd: 4, 0xfe: 9}[b[0]]+b2i(b[0] < 0xfb) {
				t.Fatalf("lenenc(%x) read %d bytes", b, n)
			}
			// Re-encoding gives the canonical form, which reads back the same.
			enc := appendLenenc(nil, v)
			if len(enc) > n {
				t.Fatalf("appendLenenc(%d) = %x, longer than %x", v, enc, b[:n])
			}
			if w, m, ok := lenenc(enc); w != v || m != len(enc) || !ok {
				t.Fatalf("round trip of %d: %d, %d, %v", v, w, m, ok)
			}
		}
		s, n2, null, err := lenencString(b)
		switch {
		case err != nil:
			if s != nil || n2 != 0 || null {
				t.Fatalf("lenencString(%x) failed with %q, %d, %v", b, s, n2, null)
			}
		case null:
			if b[0] != 0xfb || n2 != 1 || s != nil {
				t.Fatalf("lenencString(%x) NULL with %q, %d", b, s, n2)
			}
		default:
			if !ok || n2 != n+int(v) || n2 > len(b) || !bytes.Equal(s, b[n:n2]) {
				t.Fatalf("lenencString(%x) = %q, %d", b, s, n2)
			}
		}
		// Parsing an ERR packet never fails.
		if len(b) > 0 {
			e := parseErr(b)
			if e.State == "" || (len(b) >= 3 && b[0] == hdrERR && e.Code != binary.LittleEndian.Uint16(b[1:])) {
				t.Fatalf("parseErr(%x) = %+v", b, e)
			}
		}
	})
}
