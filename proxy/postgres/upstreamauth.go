package postgres

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/credswap/credswap/proxy"
)

// Values of upstream_auth: which of the database's authentication requests
// a login answers (docs/security.md, "The upstream").
const (
	// UpstreamAuthSCRAM answers SCRAM-SHA-256 only: the password never
	// leaves the proxy, and the server must prove that it knows the
	// password's verifier before the login succeeds. The default unless
	// upstream TLS verifies the server.
	UpstreamAuthSCRAM = "scram-sha-256"
	// UpstreamAuthMD5 also answers md5, for servers that still store md5
	// hashes: the answer is a salted hash an eavesdropper or impostor can
	// attack offline, and the server proves nothing.
	UpstreamAuthMD5 = "md5"
	// UpstreamAuthAny answers whatever the server asks, the cleartext
	// password included, and accepts a server that asks for nothing. The
	// default with upstream_tls verify-full.
	UpstreamAuthAny = "any"
)

// requireAuth maps an upstream_auth value to pgconn's require_auth (libpq's
// semantics: a login fails when the server asks for a method not listed,
// and when it asks for none).
func requireAuth(policy string) (string, error) {
	switch policy {
	case "", UpstreamAuthSCRAM:
		return "scram-sha-256", nil
	case UpstreamAuthMD5:
		return "scram-sha-256,md5", nil
	case UpstreamAuthAny:
		return "", nil
	}
	return "", fmt.Errorf("unknown upstream_auth %q (want scram-sha-256, md5 or any)", policy)
}

// authRequest is the authentication the server asked for first in a login,
// from its Authentication* message
// (https://www.postgresql.org/docs/current/protocol-message-formats.html).
type authRequest int32

const (
	reqNotSeen   authRequest = -1 // nothing yet
	reqNone      authRequest = 0  // AuthenticationOk without a request (trust)
	reqCleartext authRequest = 3
	reqMD5       authRequest = 5
	reqGSS       authRequest = 7
	reqSSPI      authRequest = 9
	reqSASL      authRequest = 10
)

// String names the request for logs.
func (a authRequest) String() string {
	switch a {
	case reqNone:
		return "no authentication (the login was accepted without a password)"
	case reqCleartext:
		return "the password in cleartext"
	case reqMD5:
		return "md5"
	case reqGSS:
		return "GSSAPI"
	case reqSSPI:
		return "SSPI"
	case reqSASL:
		return "SCRAM-SHA-256"
	}
	return fmt.Sprintf("authentication type %d", int32(a))
}

// allowedBy reports whether policy lets a login answer a.
func (a authRequest) allowedBy(policy string) bool {
	switch policy {
	case UpstreamAuthAny:
		return true
	case UpstreamAuthMD5:
		return a == reqSASL || a == reqMD5
	}
	return a == reqSASL
}

// authWatch wraps a backend connection during login and notes the first
// authentication request the server sends. pgconn enforces upstream_auth
// itself (Config.RequireAuth) but reports a refusal as untyped text; the
// dialer reads the request here to tell a refusal from other failures.
// It only looks at the bytes: everything is passed on as read, and once
// the server has accepted or refused the login it stops looking, so
// after Hijack the connection underneath can be used directly. Read is
// called by one goroutine at a time; asked may be read by another.
type authWatch struct {
	net.Conn
	asked atomic.Int32 // an authRequest; reqNotSeen until the first one

	// The parser's position, used by Read only.
	hdr     [9]byte // type, length and, for 'R', the authentication type
	hdrLen  int     // bytes of hdr filled
	hdrWant int     // bytes of hdr the current message has (5, or 9 for 'R')
	skip    int     // body bytes of the current message still to pass over
	done    bool    // AuthenticationOk or ErrorResponse seen
}

func newAuthWatch(c net.Conn) *authWatch {
	w := &authWatch{Conn: c, hdrWant: 5}
	w.asked.Store(int32(reqNotSeen))
	return w
}

// Read reads from the connection and notes what the server asked for.
func (w *authWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if !w.done {
		w.feed(p[:n])
	}
	return n, err
}

// request returns what the server asked for first.
func (w *authWatch) request() authRequest { return authRequest(w.asked.Load()) }

// feed advances the parser over b, a piece of the server's byte stream.
func (w *authWatch) feed(b []byte) {
	for len(b) > 0 && !w.done {
		if w.skip > 0 {
			n := min(w.skip, len(b))
			w.skip -= n
			b = b[n:]
			continue
		}
		n := copy(w.hdr[w.hdrLen:w.hdrWant], b)
		w.hdrLen += n
		b = b[n:]
		if w.hdrLen == 5 && w.hdr[0] == 'R' {
			w.hdrWant = 9
		}
		if w.hdrLen < w.hdrWant {
			continue
		}
		length := int(binary.BigEndian.Uint32(w.hdr[1:5]))
		w.skip = max(length-(w.hdrWant-1), 0)
		switch w.hdr[0] {
		case 'R':
			a := authRequest(binary.BigEndian.Uint32(w.hdr[5:9]))
			switch a {
			case reqNone:
				w.asked.CompareAndSwap(int32(reqNotSeen), int32(reqNone))
				w.done = true
			case reqCleartext, reqMD5, reqGSS, reqSSPI, reqSASL:
				w.asked.CompareAndSwap(int32(reqNotSeen), int32(a))
			}
		case 'E':
			w.done = true
		}
		w.hdrLen, w.hdrWant = 0, 5
	}
}

// refusal returns the error for a login that failed with err after the
// server asked for something policy does not allow, or nil if the server
// asked for nothing refused (err has another cause).
func (w *authWatch) refusal(policy string, err error) error {
	a := w.request()
	if a == reqNotSeen || a.allowedBy(policy) {
		return nil
	}
	if policy == "" {
		policy = UpstreamAuthSCRAM
	}
	hint := "set upstream_tls.mode verify-full, or upstream_auth any if whatever answers on the upstream address may have the password"
	if policy == UpstreamAuthSCRAM && a == reqMD5 {
		hint = "store the user's password as SCRAM-SHA-256 (password_encryption = scram-sha-256, then set it again), or allow md5 with upstream_auth md5"
	}
	return fmt.Errorf("%w: %w: the database asked for %s, which upstream_auth %s does not answer (%s): %w",
		proxy.ErrPermanent, proxy.ErrUpstreamAuthRefused, a, policy, hint, err)
}
