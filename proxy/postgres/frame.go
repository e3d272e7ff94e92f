package postgres

import (
	"encoding/binary"
	"fmt"
)

// headerLen is the size of a message header after startup: a type byte and
// an int32 length that counts itself but not the type byte.
const headerLen = 5

// frameState tracks message boundaries in a byte stream that is forwarded
// in arbitrary chunks. Only the relay goroutine of one direction uses it.
type frameState struct {
	// rem is how many body bytes of a streamed message are still to come.
	rem int
}

// atBoundary reports whether the stream is between two messages.
func (fs *frameState) atBoundary() bool { return fs.rem == 0 }

// visitor is told about each message header the scanner meets. For message
// types marked in the want set, body holds the whole message body;
// otherwise body is nil and only bodyLen is known. Returning stop leaves
// the message at the current position unforwarded.
type visitor interface {
	visit(typ byte, bodyLen int, body []byte) (stop bool, err error)
}

// lengthError reports a message whose length field is impossible or over the limit.
type lengthError struct {
	typ     byte
	bodyLen int64
	max     int
}

func (e *lengthError) Error() string {
	if e.bodyLen < 0 {
		return fmt.Sprintf("invalid length %d in message of type %q", e.bodyLen+4, e.typ)
	}
	return fmt.Sprintf("message of type %q is %d bytes long, more than the limit of %d", e.typ, e.bodyLen, e.max)
}

// scanFrames walks the message headers in p, which continues the stream
// where the previous call stopped. It returns fwd, the length of the
// prefix of p that may be forwarded now. When more input is needed before
// the message at p[fwd:] can be handled, need is the number of bytes that
// message requires in total (a whole header, or a whole wanted message) and
// the caller must keep p[fwd:] and read more. stop is the visitor's stop.
//
// Bodies of messages not in want are never inspected: they stream through
// without being buffered, whatever their size. maxBody (0: unlimited)
// bounds every message's body length.
func scanFrames(fs *frameState, p []byte, maxBody int, want *[256]bool, v visitor) (fwd, need int, stop bool, err error) {
	pos := 0
	for pos < len(p) {
		if fs.rem > 0 {
			k := min(fs.rem, len(p)-pos)
			pos += k
			fs.rem -= k
			continue
		}
		if len(p)-pos < headerLen {
			return pos, headerLen, false, nil
		}
		typ := p[pos]
		bodyLen := int64(int32(binary.BigEndian.Uint32(p[pos+1:pos+headerLen]))) - 4
		if bodyLen < 0 || (maxBody > 0 && bodyLen > int64(maxBody)) {
			return pos, 0, false, &lengthError{typ: typ, bodyLen: bodyLen, max: maxBody}
		}
		n := int(bodyLen)
		if want[typ] {
			if len(p)-pos < headerLen+n {
				return pos, headerLen + n, false, nil
			}
			if stop, err := v.visit(typ, n, p[pos+headerLen:pos+headerLen+n]); stop || err != nil {
				return pos, 0, stop, err
			}
			pos += headerLen + n
			continue
		}
		if stop, err := v.visit(typ, n, nil); stop || err != nil {
			return pos, 0, stop, err
		}
		pos += headerLen
		fs.rem = n
	}
	return pos, 0, false, nil
}

// wantSet builds a want set for scanFrames.
func wantSet(types ...byte) *[256]bool {
	var w [256]bool
	for _, t := range types {
		w[t] = true
	}
	return &w
}

// scanForward runs scanFrames over p and hands the bytes to forward to
// emit, in order. Messages the visitor skips (errSkip, only wanted types,
// which are whole in p) are left out; before a message for which it
// returns errInject, the bytes in *inject are emitted, and the message is
// visited again. At a message it holds (errHold) scanning stops: hold is
// set and consumed is the message's offset. want is asked again after
// every stop, as the visitor may change what it needs. emit returns false
// when forwarding failed; scanForward then returns at once with ok false.
func scanForward(fs *frameState, p []byte, maxBody int, want func() *[256]bool, v visitor, inject *[]byte,
	emit func([]byte) bool) (consumed, need int, stop, hold, ok bool, err error) {
	start := 0
	for {
		fwd, need, stop, err := scanFrames(fs, p[start:], maxBody, want(), v)
		if fwd > 0 && !emit(p[start:start+fwd]) {
			return start, 0, false, false, false, nil
		}
		start += fwd
		switch err {
		case errSkip:
			start += 1 + int(binary.BigEndian.Uint32(p[start+1:start+headerLen]))
			continue
		case errInject:
			if !emit(*inject) {
				return start, 0, false, false, false, nil
			}
			continue
		case errHold:
			return start, 0, false, true, true, nil
		}
		return start, need, stop, false, true, err
	}
}
