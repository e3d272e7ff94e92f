package proxytest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// ImpostorKind is what an Impostor asks its clients for.
type ImpostorKind int

// The impostors. Each asks every client that connects for its password in
// one way, records what the client sends, then refuses the login.
const (
	// PGCleartext answers a PostgreSQL startup with
	// AuthenticationCleartextPassword.
	PGCleartext ImpostorKind = iota
	// PGMD5 answers with AuthenticationMD5Password.
	PGMD5
	// PGTrust accepts the login at once (AuthenticationOk, ReadyForQuery)
	// and records what the client sends next.
	PGTrust
	// MySQLClearSwitch greets with mysql_native_password, then switches
	// the client to mysql_clear_password.
	MySQLClearSwitch
	// MySQLFullAuth greets with caching_sha2_password, asks for full
	// authentication and hands out its own RSA key.
	MySQLFullAuth
	// MySQLSHA256 greets with sha256_password and hands out its own RSA
	// key.
	MySQLSHA256
)

// ImpostorOptions configures an Impostor.
type ImpostorOptions struct {
	Kind ImpostorKind
	// TLS, if set, is offered to clients (PostgreSQL SSLRequest, MySQL
	// CLIENT_SSL); nil refuses TLS.
	TLS *tls.Config
	// Key is the RSA key MySQL impostors hand out and decrypt with
	// (default: a new 2048-bit key).
	Key *rsa.PrivateKey
	// Accept, if set, makes a MySQL impostor accept a login whose
	// password, decrypted with Key, is Accept: the impostor then plays a
	// real server that holds the key.
	Accept string
}

// Impostor listens on a loopback port and answers like a database, as an
// attacker who took the database's address would: it speaks just enough of
// the protocol to ask for the password, and records every byte its
// clients send (inside TLS, and RSA-encrypted passwords decrypted), so a
// test can check that no password reached it. It stops when the test ends.
type Impostor struct {
	opts ImpostorOptions
	ln   net.Listener
	wg   sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]bool
	received bytes.Buffer
	asked    int
	closed   bool
}

// StartImpostor starts an Impostor of opts.Kind.
func StartImpostor(t testing.TB, opts ImpostorOptions) *Impostor {
	t.Helper()
	if opts.Key == nil && opts.Kind >= MySQLClearSwitch {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		opts.Key = key
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	im := &Impostor{opts: opts, ln: ln, conns: map[net.Conn]bool{}}
	im.wg.Add(1)
	go im.accept()
	t.Cleanup(im.stop)
	return im
}

// Addr is the impostor's host:port.
func (im *Impostor) Addr() string { return im.ln.Addr().String() }

// PublicKeyPEM is the RSA public key a MySQL impostor hands out, in PEM.
func (im *Impostor) PublicKeyPEM() []byte {
	der, _ := x509.MarshalPKIXPublicKey(&im.opts.Key.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Received returns everything clients sent, with TLS removed and
// RSA-encrypted passwords decrypted.
func (im *Impostor) Received() []byte {
	im.mu.Lock()
	defer im.mu.Unlock()
	return bytes.Clone(im.received.Bytes())
}

// Asked is how many times the impostor has asked a client for its
// password (PGTrust: accepted a login).
func (im *Impostor) Asked() int {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.asked
}

func (im *Impostor) stop() {
	im.mu.Lock()
	im.closed = true
	for c := range im.conns {
		c.Close()
	}
	im.mu.Unlock()
	im.ln.Close()
	im.wg.Wait()
}

func (im *Impostor) accept() {
	defer im.wg.Done()
	for {
		c, err := im.ln.Accept()
		if err != nil {
			return
		}
		im.mu.Lock()
		if im.closed {
			im.mu.Unlock()
			c.Close()
			return
		}
		im.conns[c] = true
		im.wg.Add(1)
		im.mu.Unlock()
		go func() {
			defer im.wg.Done()
			defer func() {
				im.mu.Lock()
				delete(im.conns, c)
				im.mu.Unlock()
				c.Close()
			}()
			c.SetDeadline(time.Now().Add(time.Minute))
			if im.opts.Kind >= MySQLClearSwitch {
				im.serveMySQL(c)
			} else {
				im.servePG(c)
			}
		}()
	}
}

// record keeps b as received.
func (im *Impostor) record(b []byte) {
	im.mu.Lock()
	im.received.Write(b)
	im.mu.Unlock()
}

func (im *Impostor) countAsk() {
	im.mu.Lock()
	im.asked++
	im.mu.Unlock()
}

// recorder records whatever is read through it.
type recorder struct {
	io.Reader
	im *Impostor
}

func (r recorder) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	r.im.record(p[:n])
	return n, err
}

// swapConn lets TLS replace the connection a recorder reads.
type swapConn struct {
	net.Conn
}

// servePG plays a PostgreSQL server
// (https://www.postgresql.org/docs/current/protocol-flow.html).
func (im *Impostor) servePG(c net.Conn) {
	conn := net.Conn(c)
	var body []byte
	for {
		var err error
		body, err = readPGStartup(recorder{conn, im})
		if err != nil {
			return
		}
		code := binary.BigEndian.Uint32(body)
		switch {
		case code == 80877103 && im.opts.TLS != nil: // SSLRequest
			conn.Write([]byte{'S'})
			tc := tls.Server(c, im.opts.TLS)
			if tc.Handshake() != nil {
				return
			}
			conn = tc
			continue
		case code == 80877103 || code == 80877104: // SSLRequest, GSSENCRequest
			conn.Write([]byte{'N'})
			continue
		}
		break
	}
	switch im.opts.Kind {
	case PGCleartext:
		im.countAsk()
		conn.Write(pgMsg('R', be32(3)))
	case PGMD5:
		im.countAsk()
		conn.Write(pgMsg('R', append(be32(5), 1, 2, 3, 4)))
	case PGTrust:
		im.countAsk()
		var out []byte
		out = append(out, pgMsg('R', be32(0))...)
		out = append(out, pgMsg('S', []byte("server_version\x0015.0\x00"))...)
		out = append(out, pgMsg('K', append(be32(1234), be32(5678)...))...)
		out = append(out, pgMsg('Z', []byte{'I'})...)
		conn.Write(out)
	}
	// Whatever comes next (a password, or a first query) is recorded;
	// then the login is refused.
	var hdr [5]byte
	r := recorder{conn, im}
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n > 1<<20 {
		return
	}
	if _, err := io.ReadFull(r, make([]byte, n-4)); err != nil {
		return
	}
	conn.Write(pgMsg('E', []byte("SFATAL\x00C28P01\x00Mpassword authentication failed\x00\x00")))
}

// readPGStartup reads a startup-phase message (length, then body) and
// returns its body.
func readPGStartup(r io.Reader) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(l[:]))
	if n < 8 || n > 10000 {
		return nil, errors.New("bad startup length")
	}
	body := make([]byte, n-4)
	_, err := io.ReadFull(r, body)
	return body, err
}

func pgMsg(typ byte, body []byte) []byte {
	return append(append([]byte{typ}, be32(uint32(len(body)+4))...), body...)
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// serveMySQL plays a MySQL server
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html).
func (im *Impostor) serveMySQL(c net.Conn) {
	conn := &swapConn{Conn: c}
	scramble := make([]byte, 20)
	rand.Read(scramble)
	for i := range scramble {
		scramble[i] = scramble[i]&0x7f | 1 // no NUL, as servers do
	}
	plugin := map[ImpostorKind]string{
		MySQLClearSwitch: "mysql_native_password",
		MySQLFullAuth:    "caching_sha2_password",
		MySQLSHA256:      "sha256_password",
	}[im.opts.Kind]
	const (
		capLongPassword, capLongFlag, capConnectWithDB = 1, 4, 8
		capProtocol41, capSSL, capTransactions         = 1 << 9, 1 << 11, 1 << 13
		capSecureConn, capMultiResults, capPluginAuth  = 1 << 15, 1 << 17, 1 << 19
		capConnectAttrs, capPluginAuthLenenc           = 1 << 20, 1 << 21
	)
	caps := uint32(capLongPassword | capLongFlag | capConnectWithDB | capProtocol41 | capTransactions |
		capSecureConn | capMultiResults | capPluginAuth | capConnectAttrs | capPluginAuthLenenc)
	if im.opts.TLS != nil {
		caps |= capSSL
	}
	g := []byte{10}
	g = append(g, "8.0.36-impostor\x00"...)
	g = binary.LittleEndian.AppendUint32(g, 7)
	g = append(g, scramble[:8]...)
	g = append(g, 0)
	g = binary.LittleEndian.AppendUint16(g, uint16(caps))
	g = append(g, 45)                          // utf8mb4_general_ci
	g = binary.LittleEndian.AppendUint16(g, 2) // autocommit
	g = binary.LittleEndian.AppendUint16(g, uint16(caps>>16))
	g = append(g, 21)
	g = append(g, make([]byte, 10)...)
	g = append(g, scramble[8:]...)
	g = append(g, 0)
	g = append(g, plugin...)
	g = append(g, 0)
	seq := byte(0)
	write := func(payload []byte) {
		hdr := []byte{byte(len(payload)), byte(len(payload) >> 8), byte(len(payload) >> 16), seq}
		seq++
		conn.Write(append(hdr, payload...))
	}
	read := func() ([]byte, bool) {
		var hdr [4]byte
		r := recorder{conn.Conn, im}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, false
		}
		p := make([]byte, int(hdr[0])|int(hdr[1])<<8|int(hdr[2])<<16)
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, false
		}
		seq = hdr[3] + 1
		return p, true
	}
	write(g)
	resp, ok := read()
	if !ok {
		return
	}
	if len(resp) == 32 && im.opts.TLS != nil && binary.LittleEndian.Uint32(resp)&capSSL != 0 {
		tc := tls.Server(c, im.opts.TLS)
		if tc.Handshake() != nil {
			return
		}
		conn.Conn = tc
		if resp, ok = read(); !ok {
			return
		}
	}
	refuse := func() { write(append([]byte{0xff, 0x15, 0x04}, "#28000Access denied"...)) }
	switch im.opts.Kind {
	case MySQLClearSwitch:
		im.countAsk()
		write(append(append([]byte{0xfe}, "mysql_clear_password\x00"...), append(scramble, 0)...))
		read() // the password, if the client sends it
		refuse()
		return
	case MySQLFullAuth:
		im.countAsk()
		write([]byte{0x01, 0x04})
	case MySQLSHA256:
		im.countAsk()
	}
	// Full authentication: the client asks for the key (caching_sha2
	// sends 0x02; sha256_password's answer in its handshake response is
	// 0x01), or sends the password in cleartext (over TLS).
	p := resp
	if im.opts.Kind == MySQLFullAuth {
		if p, ok = read(); !ok {
			return
		}
	} else if p = authResponse(resp); len(p) != 1 {
		refuse() // the password came in the handshake response, recorded
		return
	}
	if len(p) == 1 && (p[0] == 0x02 || p[0] == 0x01) {
		write(append([]byte{0x01}, im.PublicKeyPEM()...))
		if p, ok = read(); !ok {
			return
		}
		if plain, err := rsa.DecryptOAEP(sha1.New(), nil, im.opts.Key, p, nil); err == nil {
			for i := range plain {
				plain[i] ^= scramble[i%len(scramble)]
			}
			im.record(plain)
			p = plain
		}
	}
	if im.opts.Accept != "" && string(bytes.TrimSuffix(p, []byte{0})) == im.opts.Accept {
		write([]byte{0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00})
		io.Copy(io.Discard, recorder{conn.Conn, im}) // until the client quits
		return
	}
	refuse()
}

// authResponse returns the authentication data of a HandshakeResponse41
// (capabilities, max packet, collation, filler, user, then the data).
func authResponse(resp []byte) []byte {
	if len(resp) < 33 {
		return nil
	}
	caps := binary.LittleEndian.Uint32(resp)
	rest := resp[32:]
	i := bytes.IndexByte(rest, 0)
	if i < 0 {
		return nil
	}
	rest = rest[i+1:]
	if len(rest) == 0 {
		return nil
	}
	if caps&(1<<21) != 0 || caps&(1<<15) != 0 { // length-encoded (short lengths only) or length-prefixed
		n := int(rest[0])
		if n >= 0xfb || len(rest) < 1+n {
			return nil
		}
		return rest[1 : 1+n]
	}
	i = bytes.IndexByte(rest, 0)
	if i < 0 {
		return rest
	}
	return rest[:i]
}
