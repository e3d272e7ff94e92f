package postgres

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/credswap/credswap/proxy"
)

const (
	mechSCRAM     = "SCRAM-SHA-256"
	mechSCRAMPlus = "SCRAM-SHA-256-PLUS"
)

// authConn is the client connection during authentication.
type authConn struct {
	rw   io.ReadWriter
	user string
	// tls is set when the connection is encrypted; cbData is then the
	// tls-server-end-point channel binding of the proxy's certificate.
	tls    bool
	cbData []byte
}

// authFailed is the error of a failed exchange. Only a wrong password, an
// unknown user or an exchange the client got wrong is an authentication
// failure; a client that stopped answering timed out, and one that closed
// the connection left (psql does, to prompt for a password).
func authFailed(user string, cause error) *proxy.Error {
	switch {
	case isTimeout(cause):
		return proxy.Errorf(proxy.CodeHandshakeTimeout, cause, "canceling authentication due to timeout")
	case errors.Is(cause, io.EOF), errors.Is(cause, io.ErrUnexpectedEOF), errors.Is(cause, net.ErrClosed),
		errors.Is(cause, syscall.ECONNRESET), errors.Is(cause, syscall.EPIPE):
		return proxy.Errorf(proxy.CodeClientDisconnected, cause, "client closed the connection during authentication")
	}
	return proxy.Errorf(proxy.CodeClientAuthFailed, cause, "password authentication failed for user %q", user)
}

// authenticate runs the exchange for the method configured for the user.
// On success it returns the bytes to send right before AuthenticationOk
// (the SCRAM server-final message), so that both go out together once a
// backend connection exists.
//
// An unknown user runs the exchange of a configured user against a decoy
// (Users.decoy) and fails as a wrong password does, whatever it sends:
// the client sees the same messages, salt and iteration count at every
// attempt, and the same error. The decoy is made for every login, known
// user or not, so that both cost the same.
func authenticate(c *authConn, users *Users) ([]byte, *proxy.Error) {
	stand := users.decoy(c.user)
	user, known := users.Lookup(c.user)
	if known {
		return authenticateAs(c, user)
	}
	_, perr := authenticateAs(c, stand)
	if perr == nil {
		perr = authFailed(c.user, errors.New("decoy accepted a password"))
	}
	if perr.Code == proxy.CodeClientAuthFailed {
		perr.Err = fmt.Errorf("unknown user: %w", perr.Err)
	}
	return nil, perr
}

// authenticateAs runs the exchange of user's method.
func authenticateAs(c *authConn, user *User) ([]byte, *proxy.Error) {
	switch user.Method {
	case AuthMD5:
		if err := authMD5(c, user); err != nil {
			return nil, authFailed(c.user, err)
		}
		return nil, nil
	case AuthPassword:
		if !c.tls {
			return nil, proxy.Errorf(proxy.CodeTLSRequired, nil,
				"cleartext password authentication for user %q requires a TLS connection", c.user)
		}
		if err := authCleartext(c, user); err != nil {
			return nil, authFailed(c.user, err)
		}
		return nil, nil
	default:
		final, err := authSCRAM(c, user.scram)
		if err != nil {
			return nil, authFailed(c.user, err)
		}
		return final, nil
	}
}

// authSCRAM runs SCRAM-SHA-256 (RFC 7677), with channel binding
// (-PLUS, tls-server-end-point) offered over TLS.
func authSCRAM(c *authConn, sc *scram.StoredCredentials) ([]byte, error) {
	mechs := []string{mechSCRAM}
	if c.tls {
		mechs = []string{mechSCRAMPlus, mechSCRAM}
	}
	if _, err := c.rw.Write(appendMsg(nil, &pgproto3.AuthenticationSASL{AuthMechanisms: mechs})); err != nil {
		return nil, err
	}
	body, err := readTyped(c.rw, 'p')
	if err != nil {
		return nil, err
	}
	var first pgproto3.SASLInitialResponse
	if err := first.Decode(body); err != nil {
		return nil, err
	}
	// libpq and pgconn send an empty SCRAM user name; the user comes from
	// the StartupMessage, so the lookup ignores the name.
	server, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return *sc, nil })
	if err != nil {
		return nil, err
	}
	cb := scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: c.cbData}
	var conv *scram.ServerConversation
	switch {
	case first.AuthMechanism == mechSCRAMPlus && c.tls:
		conv = server.NewConversationWithChannelBindingRequired(cb)
	case first.AuthMechanism == mechSCRAM:
		if bytes.HasPrefix(first.Data, []byte("p")) {
			return nil, errors.New("channel binding requested with a mechanism that has none")
		}
		if c.tls {
			conv = server.NewConversationWithChannelBinding(cb) // rejects the "y" downgrade
		} else {
			conv = server.NewConversation()
		}
	default:
		return nil, fmt.Errorf("unsupported SASL mechanism %q", first.AuthMechanism)
	}
	resp, err := conv.Step(string(first.Data))
	if err != nil {
		return nil, err
	}
	if _, err := c.rw.Write(appendMsg(nil, &pgproto3.AuthenticationSASLContinue{Data: []byte(resp)})); err != nil {
		return nil, err
	}
	body, err = readTyped(c.rw, 'p')
	if err != nil {
		return nil, err
	}
	var next pgproto3.SASLResponse
	if err := next.Decode(body); err != nil {
		return nil, err
	}
	resp, err = conv.Step(string(next.Data))
	if err != nil {
		return nil, err
	}
	if !conv.Valid() {
		return nil, errors.New("SCRAM proof did not verify")
	}
	return appendMsg(nil, &pgproto3.AuthenticationSASLFinal{Data: []byte(resp)}), nil
}

// authMD5 runs the md5 challenge: the client sends
// "md5" + hex(md5(hex(md5(password || user)) || salt)).
func authMD5(c *authConn, u *User) error {
	var salt [4]byte
	rand.Read(salt[:])
	if _, err := c.rw.Write(appendMsg(nil, &pgproto3.AuthenticationMD5Password{Salt: salt})); err != nil {
		return err
	}
	body, err := readTyped(c.rw, 'p')
	if err != nil {
		return err
	}
	got, _, _ := bytes.Cut(body, []byte{0})
	sum := md5.Sum(append([]byte(u.md5), salt[:]...))
	want := "md5" + hex.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare(got, []byte(want)) != 1 {
		return errors.New("md5 response did not match")
	}
	return nil
}

// authCleartext asks for the password in clear (only ever over TLS).
func authCleartext(c *authConn, u *User) error {
	if _, err := c.rw.Write(appendMsg(nil, &pgproto3.AuthenticationCleartextPassword{})); err != nil {
		return err
	}
	body, err := readTyped(c.rw, 'p')
	if err != nil {
		return err
	}
	pw, _, _ := bytes.Cut(body, []byte{0})
	if !u.checkPassword(pw) {
		return errors.New("password did not match")
	}
	return nil
}

// serverEndPoint computes tls-server-end-point channel binding data (RFC
// 5929 §4.1) for the proxy's own certificate: its hash with the hash
// function of its signature, SHA-256 for MD5 and SHA-1. scram's
// NewTLSServerEndpointBinding hashes the peer's certificate, which on a
// server is the client's, so it cannot be used here.
func serverEndPoint(leaf *x509.Certificate) []byte {
	switch leaf.SignatureAlgorithm {
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
		h := sha512.Sum384(leaf.Raw)
		return h[:]
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
		h := sha512.Sum512(leaf.Raw)
		return h[:]
	default:
		h := sha256.Sum256(leaf.Raw)
		return h[:]
	}
}
