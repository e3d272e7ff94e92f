package mysql

import (
	"bytes"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/credswap/credswap/proxy"
)

// Values of upstream_auth for protocol mysql (docs/security.md, "The
// upstream").
const (
	// UpstreamAuthScramble lets a login answer with scrambles only
	// (mysql_native_password, caching_sha2_password's fast path,
	// client_ed25519), from which the server cannot read the password,
	// and send the password itself only RSA-encrypted to the pinned
	// server key. The default unless upstream TLS verifies the server.
	UpstreamAuthScramble = "scramble"
	// UpstreamAuthAny lets the client library answer whatever the server
	// asks: mysql_clear_password, and full authentication in cleartext
	// over TLS or encrypted to whatever RSA key the server sends. The
	// default with upstream_tls verify-full.
	UpstreamAuthAny = "any"
)

// Authentication methods (plugin names) a guarded login may use.
const (
	pluginNative      = "mysql_native_password"
	pluginCachingSHA2 = "caching_sha2_password"
	pluginSHA256      = "sha256_password"
	pluginEd25519     = "client_ed25519"
	pluginClear       = "mysql_clear_password"
	pluginOld         = "mysql_old_password"
)

// caching_sha2_password's answers after the scramble
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html).
const (
	cachingSHA2FastOK   = 3
	cachingSHA2FullAuth = 4
)

// LoginGuardOptions configures a LoginGuard.
type LoginGuardOptions struct {
	// TLS secures connections to the database; nil sends plaintext.
	TLS *tls.Config
	// Auth is UpstreamAuthScramble (also when empty) or UpstreamAuthAny.
	Auth string
	// ServerKey is the database's RSA public key
	// (upstream_rsa_public_key_file): with UpstreamAuthScramble, the
	// password is encrypted to this key when the server asks for full
	// authentication, and to no other. Nil refuses full authentication.
	ServerKey *rsa.PublicKey
}

// LoginGuard keeps the backend password from whoever answers on the
// upstream address in place of the database, for every MySQL login of a
// backend whatever client library makes it (go-mysql's for sessions and
// KILL, go-sql-driver's for rotations). Neither library can be told to
// refuse a method: both send the cleartext password when the server
// switches to mysql_clear_password (go-sql-driver only if allowed), over
// TLS whenever full authentication is asked for, and otherwise encrypt it
// to any RSA key the server sends. So with UpstreamAuthScramble the
// library logs in over a connection from Wrap, which reads the server's
// side of the login and breaks it off before the library sees a request
// it must not answer; over TLS that connection makes the TLS handshake
// itself, so that the library works in plaintext above it and the guard
// reads the exchange. A LoginGuard is immutable and safe for concurrent
// use; a nil *LoginGuard guards plaintext logins with no pinned key.
type LoginGuard struct {
	tls *tls.Config
	any bool
	key *rsa.PublicKey
}

// NewLoginGuard returns a LoginGuard for opts.
func NewLoginGuard(opts LoginGuardOptions) (*LoginGuard, error) {
	switch opts.Auth {
	case "", UpstreamAuthScramble, UpstreamAuthAny:
	default:
		return nil, fmt.Errorf("unknown upstream_auth %q (want scramble or any)", opts.Auth)
	}
	return &LoginGuard{tls: opts.TLS, any: opts.Auth == UpstreamAuthAny, key: opts.ServerKey}, nil
}

// LoadServerKey reads an RSA public key in PEM, as MySQL writes it
// (public_key.pem in the data directory, or SHOW STATUS LIKE
// 'Caching_sha2_password_rsa_public_key').
func LoadServerKey(path string) (*rsa.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := parseServerKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// parseServerKey reads the first PEM block of data as an RSA public key
// (PKIX "PUBLIC KEY" or PKCS#1 "RSA PUBLIC KEY").
func parseServerKey(data []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type == "RSA PUBLIC KEY" {
		return x509.ParsePKCS1PublicKey(block.Bytes)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("not an RSA public key")
	}
	return key, nil
}

// LibraryTLS returns the TLS configuration to give the client library for
// connections from Wrap: the upstream's with UpstreamAuthAny, else nil,
// because the guarded connection makes the TLS handshake itself.
func (g *LoginGuard) LibraryTLS() *tls.Config {
	if g == nil || !g.any {
		return nil
	}
	return g.tls
}

// Wrap returns the connection a client library logs in over, given nc,
// freshly dialed to the database: nc itself with UpstreamAuthAny, else a
// guarded connection that owns nc. The guarded connection passes
// everything through unchanged once the server has accepted or refused
// the login.
func (g *LoginGuard) Wrap(nc net.Conn) net.Conn {
	if g != nil && g.any {
		return nc
	}
	gc := &guardConn{Conn: nc}
	if g != nil {
		gc.tls, gc.key = g.tls, g.key
	}
	return gc
}

// Refusal returns the error with which c, a connection from Wrap, broke off
// a login, or nil. Client libraries keep only the text of a connection's
// errors; this is the error itself: for a request upstream_auth does not
// answer it wraps proxy.ErrUpstreamAuthRefused and proxy.ErrPermanent; a
// TLS failure or a server that does not speak the protocol is neither.
func Refusal(c net.Conn) error {
	if gc, ok := c.(*guardConn); ok {
		return gc.refusal()
	}
	return nil
}

// unwrapGuard returns the connection under c, if c came from Wrap and its
// login is over; the guarded connection buffers nothing then.
func unwrapGuard(c net.Conn) net.Conn {
	if gc, ok := c.(*guardConn); ok && gc.state == guardDone && len(gc.in) == 0 && len(gc.out) == 0 {
		return gc.Conn
	}
	return c
}

// guardState is where a guarded login is.
type guardState int

const (
	guardGreeting guardState = iota // waiting for the server's greeting
	guardResponse                   // waiting for the library's handshake response
	guardAuth                       // the server's authentication requests
	guardDone                       // the server sent OK or ERR: pass everything through
)

// guardConn is a connection a client library logs in over under
// UpstreamAuthScramble. Until the login is over it reads the server's
// packets whole, checks each before the library gets it, and rewrites the
// sequence numbers when it has inserted its own SSLRequest. It is used by
// the client library's goroutine only, except refusal.
type guardConn struct {
	net.Conn // the database: the dialed connection, then its TLS client
	tls      *tls.Config
	key      *rsa.PublicKey

	state guardState
	// shift is added to the library's sequence numbers and taken from the
	// server's: 1 after the guard sent an SSLRequest the library did not.
	shift  byte
	plugin string // the authentication method in use
	in     []byte // a server packet checked and not yet fully read
	out    []byte // library bytes short of a whole packet

	mu  sync.Mutex
	err error // the refusal, once the login was broken off
}

func (c *guardConn) refusal() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// refuse breaks the login off at an authentication request upstream_auth
// does not answer.
func (c *guardConn) refuse(format string, args ...any) error {
	return c.fail(fmt.Errorf("%w: %w: "+format, append([]any{proxy.ErrPermanent, proxy.ErrUpstreamAuthRefused}, args...)...))
}

// fail records err as the reason the login was broken off and closes the
// connection, so that the server gets nothing more.
func (c *guardConn) fail(err error) error {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.Conn.Close()
	return err
}

// Read delivers the server's packets to the library, each after checking it.
func (c *guardConn) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		if c.state == guardDone {
			return c.Conn.Read(p)
		}
		if err := c.refusal(); err != nil {
			return 0, err
		}
		pkt, err := c.readPacket()
		if err != nil {
			return 0, err
		}
		if err := c.check(pkt[4:]); err != nil {
			return 0, err
		}
		pkt[3] -= c.shift
		c.in = pkt
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	return n, nil
}

// readPacket reads one whole packet of the connection phase.
func (c *guardConn) readPacket() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
		return nil, err
	}
	n := frameLen(hdr[:])
	if n == 0 || n > maxHandshakePacket {
		return nil, fmt.Errorf("the database sent a login packet of %d bytes", n)
	}
	pkt := make([]byte, 4+n)
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(c.Conn, pkt[4:]); err != nil {
		return nil, err
	}
	return pkt, nil
}

// check decides whether the library may see payload, the server's next
// packet, and advances the state.
func (c *guardConn) check(payload []byte) error {
	switch c.state {
	case guardGreeting:
		if payload[0] == 0xff {
			c.state = guardDone // the server refuses the connection itself
			return nil
		}
		caps, plugin, ok := parseGreetingAuth(payload)
		if !ok {
			return c.fail(errors.New("the database's greeting is not a MySQL handshake v10"))
		}
		if c.tls != nil && caps&capSSL == 0 {
			return c.fail(errors.New("the database does not offer TLS, which upstream_tls requires"))
		}
		if err := c.usePlugin(plugin); err != nil {
			return err
		}
		c.state = guardResponse
		return nil
	case guardResponse:
		return c.fail(errors.New("the database spoke before the handshake response"))
	}
	// guardAuth: OK, ERR, an authentication switch, or more data for the
	// method in use.
	switch payload[0] {
	case 0x00, 0xff:
		c.state = guardDone
		return nil
	case 0xfe:
		if len(payload) == 1 {
			return c.usePlugin(pluginOld) // the pre-4.1 switch request
		}
		name, _, _ := bytes.Cut(payload[1:], []byte{0})
		return c.usePlugin(string(name))
	case 0x01:
		data := payload[1:]
		switch {
		case c.plugin == pluginCachingSHA2 && len(data) == 1 && data[0] == cachingSHA2FastOK:
			return nil
		case c.plugin == pluginCachingSHA2 && len(data) == 1 && data[0] == cachingSHA2FullAuth:
			if c.key == nil {
				return c.refuse("the database asked for caching_sha2_password full authentication, which sends the password " +
					"in cleartext over TLS or encrypted to an RSA key the database sends, so whoever answers on the upstream address " +
					"could read it; pin the server's key with upstream_rsa_public_key_file, or verify the server with upstream_tls.mode verify-full")
			}
			return nil // the library asks for the key next, checked below
		case (c.plugin == pluginCachingSHA2 || c.plugin == pluginSHA256) && len(data) > 1:
			return c.checkServerKey(data)
		}
		return c.refuse("the database sent unexpected data for %s", c.plugin)
	}
	return c.refuse("the database sent an unexpected login packet (0x%02x)", payload[0])
}

// usePlugin accepts the authentication method the server names, or
// refuses it.
func (c *guardConn) usePlugin(name string) error {
	switch name {
	case "", pluginNative, pluginCachingSHA2, pluginEd25519, pluginSHA256:
		// Scrambles and a signature are answers the server cannot read the
		// password from; sha256_password's password goes out only after
		// the key check.
		if name == "" {
			name = pluginNative
		}
		c.plugin = name
		return nil
	case pluginClear:
		return c.refuse("the database asked for mysql_clear_password (the password in cleartext), which upstream_auth scramble " +
			"does not answer; verify the server with upstream_tls.mode verify-full, or set upstream_auth any if whatever answers " +
			"on the upstream address may have the password")
	}
	return c.refuse("the database asked for authentication method %q, which upstream_auth scramble does not answer", name)
}

// checkServerKey lets the library encrypt the password to the key the
// server sent only if it is the pinned one.
func (c *guardConn) checkServerKey(data []byte) error {
	if c.key == nil {
		return c.refuse("the database sent an RSA key to encrypt the password to (%s), and no upstream_rsa_public_key_file says "+
			"which key is the database's", c.plugin)
	}
	key, err := parseServerKey(data)
	if err != nil {
		return c.refuse("the database's RSA public key cannot be read: %v", err)
	}
	if !key.Equal(c.key) {
		return c.refuse("the database sent an RSA public key that is not the one in upstream_rsa_public_key_file")
	}
	return nil
}

// Write forwards the library's packets, upgrading the connection to TLS
// before the handshake response when the guard does TLS.
func (c *guardConn) Write(p []byte) (int, error) {
	if c.state == guardDone && len(c.out) == 0 {
		return c.Conn.Write(p)
	}
	if err := c.refusal(); err != nil {
		return 0, err
	}
	c.out = append(c.out, p...)
	for len(c.out) >= 4 && len(c.out) >= 4+frameLen(c.out) {
		n := 4 + frameLen(c.out)
		if err := c.send(c.out[:n]); err != nil {
			return 0, err
		}
		c.out = c.out[n:]
	}
	if len(c.out) == 0 {
		c.out = nil
	}
	return len(p), nil
}

// send writes one whole packet of the library's.
func (c *guardConn) send(pkt []byte) error {
	switch c.state {
	case guardGreeting:
		return c.fail(errors.New("the client library spoke before the database's greeting"))
	case guardResponse:
		if c.tls != nil {
			if err := c.startTLS(pkt); err != nil {
				return err
			}
		}
		c.state = guardAuth
	}
	if c.state != guardDone {
		pkt[3] += c.shift
	}
	_, err := c.Conn.Write(pkt)
	return err
}

// startTLS sends an SSLRequest made of the library's handshake response
// (its first 32 bytes of payload: capabilities, packet size, collation,
// filler) and switches the connection to TLS; the response then goes out
// with CLIENT_SSL set and the next sequence number
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_ssl_request.html).
func (c *guardConn) startTLS(resp []byte) error {
	const sslRequestLen = 32
	if len(resp) < 4+sslRequestLen {
		return c.fail(errors.New("the client library's handshake response is too short"))
	}
	caps := binary.LittleEndian.Uint32(resp[4:]) | capSSL
	binary.LittleEndian.PutUint32(resp[4:], caps)
	req := make([]byte, 4+sslRequestLen)
	copy(req[4:], resp[4:4+sslRequestLen])
	req[0] = sslRequestLen
	req[3] = resp[3]
	if _, err := c.Conn.Write(req); err != nil {
		return c.fail(err)
	}
	tc := tls.Client(c.Conn, c.tls.Clone())
	if err := tc.Handshake(); err != nil {
		return c.fail(err) // go-mysql would keep only the text
	}
	c.Conn = tc
	c.shift = 1
	return nil
}

// parseGreetingAuth reads a server's initial handshake (v10) for its
// capabilities and the authentication method it starts with
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_v10.html).
func parseGreetingAuth(p []byte) (caps uint32, plugin string, ok bool) {
	if len(p) < 1 || p[0] != 10 {
		return 0, "", false
	}
	end := bytes.IndexByte(p[1:], 0)
	if end < 0 {
		return 0, "", false
	}
	i := 1 + end + 1 // after the version's NUL
	// connection id 4, scramble part 1 8, filler 1, capabilities (low) 2
	if len(p) < i+15 {
		return 0, "", false
	}
	caps = uint32(binary.LittleEndian.Uint16(p[i+13:]))
	i += 15
	if len(p) == i {
		return caps, "", true // a pre-4.1 greeting ends here
	}
	// collation 1, status 2, capabilities (high) 2, scramble length 1, reserved 10
	if len(p) < i+16 {
		return 0, "", false
	}
	caps |= uint32(binary.LittleEndian.Uint16(p[i+3:])) << 16
	scrambleLen := int(p[i+5])
	i += 16
	if caps&capSecureConnection != 0 {
		i += max(13, scrambleLen-8)
	}
	if caps&capPluginAuth == 0 {
		return caps, "", true
	}
	if len(p) < i {
		return 0, "", false
	}
	name, _, _ := bytes.Cut(p[i:], []byte{0})
	return caps, string(name), true
}
