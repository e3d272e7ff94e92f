package postgres

import (
	"encoding/binary"
	"testing"
)

func beMsg(typ byte, body ...byte) []byte {
	out := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(body)+4))
	return append(out, body...)
}

func authMsg(code uint32, extra ...byte) []byte {
	return beMsg('R', append(binary.BigEndian.AppendUint32(nil, code), extra...)...)
}

func concatMsgs(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestAuthWatch: the watcher finds the first authentication request of a
// login however the server's bytes are split into reads, ignores what
// follows it, and stops at AuthenticationOk or an ErrorResponse.
func TestAuthWatch(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
		want   authRequest
	}{
		{"scram", concatMsgs(authMsg(10, []byte("SCRAM-SHA-256\x00\x00")...), authMsg(11, []byte("r=abc,s=xyz,i=4096")...),
			authMsg(12, []byte("v=sig")...), authMsg(0), beMsg('S', []byte("a\x00b\x00")...), beMsg('Z', 'I')), reqSASL},
		{"cleartext", authMsg(3), reqCleartext},
		{"md5", authMsg(5, 1, 2, 3, 4), reqMD5},
		{"trust", concatMsgs(authMsg(0), beMsg('K', make([]byte, 8)...), beMsg('Z', 'I')), reqNone},
		{"negotiate first", concatMsgs(beMsg('v', 0, 0, 0, 0, 0, 0, 0, 0), authMsg(3)), reqCleartext},
		{"error first", concatMsgs(beMsg('E', []byte("SFATAL\x00\x00")...), authMsg(3)), reqNotSeen},
		{"after ok", concatMsgs(authMsg(0), authMsg(3)), reqNone},
		{"gss", authMsg(7), reqGSS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for step := 1; step <= len(tt.stream); step++ {
				w := newAuthWatch(nil)
				for b := tt.stream; len(b) > 0; {
					n := min(step, len(b))
					w.feed(b[:n])
					b = b[n:]
				}
				if got := w.request(); got != tt.want {
					t.Fatalf("reads of %d bytes: request = %v, want %v", step, got, tt.want)
				}
			}
		})
	}
}

// TestAuthRequestAllowed: what each upstream_auth answers.
func TestAuthRequestAllowed(t *testing.T) {
	for _, tt := range []struct {
		policy  string
		allowed []authRequest
	}{
		{UpstreamAuthSCRAM, []authRequest{reqSASL}},
		{"", []authRequest{reqSASL}},
		{UpstreamAuthMD5, []authRequest{reqSASL, reqMD5}},
		{UpstreamAuthAny, []authRequest{reqSASL, reqMD5, reqCleartext, reqNone, reqGSS, reqSSPI}},
	} {
		for _, a := range []authRequest{reqNone, reqCleartext, reqMD5, reqGSS, reqSSPI, reqSASL} {
			want := false
			for _, b := range tt.allowed {
				want = want || a == b
			}
			if got := a.allowedBy(tt.policy); got != want {
				t.Errorf("%v allowed by %q = %v, want %v", a, tt.policy, got, want)
			}
		}
	}
}

func FuzzAuthWatch(f *testing.F) {
	f.Add(concatMsgs(authMsg(10, []byte("SCRAM-SHA-256\x00\x00")...), authMsg(0)), 3)
	f.Add(authMsg(3), 1)
	f.Fuzz(func(t *testing.T, stream []byte, step int) {
		if step < 1 {
			step = 1
		}
		w := newAuthWatch(nil)
		for b := stream; len(b) > 0; {
			n := min(step, len(b))
			w.feed(b[:n])
			b = b[n:]
		}
		w.request()
	})
}
