package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

type recVisitor struct {
	types  []byte
	bodies map[int][]byte
	stopAt byte
}

func (r *recVisitor) visit(typ byte, n int, body []byte) (bool, error) {
	if typ == r.stopAt {
		return true, nil
	}
	if body != nil {
		if r.bodies == nil {
			r.bodies = map[int][]byte{}
		}
		r.bodies[len(r.types)] = append([]byte(nil), body...)
	}
	r.types = append(r.types, typ)
	return false, nil
}

func msg(typ byte, body string) []byte {
	return appendRaw(nil, typ, []byte(body))
}

// feed runs the scanner over stream split into chunks of size step, the
// way the relay does: forward fwd bytes, keep the rest, read more.
func feed(t *testing.T, stream []byte, step, maxBody int, want *[256]bool, v visitor) ([]byte, error) {
	t.Helper()
	var fs frameState
	var buf, out []byte
	for off := 0; off < len(stream) || len(buf) > 0; {
		if off < len(stream) {
			end := min(off+step, len(stream))
			buf = append(buf, stream[off:end]...)
			off = end
		}
		fwd, need, stop, err := scanFrames(&fs, buf, maxBody, want, v)
		out = append(out, buf[:fwd]...)
		buf = buf[fwd:]
		if err != nil || stop {
			return out, err
		}
		if off >= len(stream) && len(buf) > 0 && need > 0 {
			return out, errors.New("truncated")
		}
	}
	return out, nil
}

func TestScanFramesChunking(t *testing.T) {
	var stream []byte
	stream = append(stream, msg('P', "stmt\x00SELECT 1\x00\x00\x00")...)
	stream = append(stream, msg('B', "\x00stmt\x00"+string(bytes.Repeat([]byte{'x'}, 1000)))...)
	stream = append(stream, msg('E', "\x00\x00\x00\x00\x00")...)
	stream = append(stream, msg('S', "")...)
	stream = append(stream, msg('Q', "SET app.x = 1")...)
	for _, step := range []int{1, 2, 3, 5, 7, 64, 4096} {
		v := &recVisitor{}
		out, err := feed(t, stream, step, 0, wantSet('Q', 'P'), v)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if !bytes.Equal(out, stream) {
			t.Fatalf("step %d: forwarded %d of %d bytes", step, len(out), len(stream))
		}
		if string(v.types) != "PBESQ" {
			t.Fatalf("step %d: types %q", step, v.types)
		}
		if string(v.bodies[4]) != "SET app.x = 1" || v.bodies[1] != nil {
			t.Fatalf("step %d: bodies %v", step, v.bodies)
		}
	}
}

func TestScanFramesLimitsAndStop(t *testing.T) {
	big := msg('B', string(make([]byte, 2000)))
	_, err := feed(t, big, 100, 1000, wantSet(), &recVisitor{})
	var le *lengthError
	if !errors.As(err, &le) || le.bodyLen != 2000 {
		t.Fatalf("oversized: %v", err)
	}
	bad := []byte{'Q', 0, 0, 0, 2}
	if _, err := feed(t, bad, 5, 0, wantSet('Q'), &recVisitor{}); !errors.As(err, &le) {
		t.Fatalf("negative length: %v", err)
	}
	stream := append(msg('Q', "SELECT 1"), msg('X', "")...)
	v := &recVisitor{stopAt: 'X'}
	out, err := feed(t, stream, 3, 0, wantSet('Q'), v)
	if err != nil || !bytes.Equal(out, msg('Q', "SELECT 1")) {
		t.Fatalf("stop before Terminate: %q %v", out, err)
	}
}

func FuzzScanFrames(f *testing.F) {
	f.Add(append(msg('Q', "select 1"), msg('S', "")...), 3)
	f.Add([]byte{'P', 0, 0, 0, 4, 'X'}, 1)
	f.Add([]byte{'D', 0xff, 0xff, 0xff, 0xff}, 2)
	f.Fuzz(func(t *testing.T, stream []byte, step int) {
		if step <= 0 || step > 1<<16 {
			step = 1
		}
		v := &recVisitor{}
		out, err := feed(t, stream, step, 1<<20, wantSet('Q', 'P', 'Z'), v)
		if !bytes.HasPrefix(stream, out) {
			t.Fatalf("forwarded bytes are not a prefix of the input")
		}
		// Every forwarded message starts with a whole header; only a
		// streamed (unwanted) message may be forwarded in part.
		want := wantSet('Q', 'P', 'Z')
		for pos := 0; pos < len(out); {
			if len(out)-pos < 5 {
				t.Fatalf("partial header forwarded at %d", pos)
			}
			end := pos + 1 + int(binary.BigEndian.Uint32(out[pos+1:]))
			if end > len(out) && want[out[pos]] {
				t.Fatalf("wanted message %q forwarded in part", out[pos])
			}
			pos = end
		}
		_ = err
	})
}
