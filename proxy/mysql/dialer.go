package mysql

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/pingcap/tidb/pkg/parser/charset"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// Collation ids the proxy falls back to.
const (
	collationUTF8MB4GeneralCI = 45  // utf8mb4_general_ci: MariaDB's utf8mb4 default
	collationUTF8MB40900AICI  = 255 // utf8mb4_0900_ai_ci: MySQL 8's default, unknown to MariaDB
)

// Dialer logs in to the upstream MySQL or MariaDB server with a given
// credential through go-mysql's client and takes over the raw connection.
// It is safe for concurrent use.
type Dialer struct {
	addr    string
	timeout time.Duration
	// guard polices every login (upstream_auth) and holds the upstream
	// TLS configuration; go-mysql gets its LibraryTLS.
	guard *LoginGuard
	// info is what the server announced in its latest greeting.
	info atomic.Pointer[serverInfo]
}

// DialerOptions configures a Dialer.
type DialerOptions struct {
	// Upstream is host:port of the database.
	Upstream string
	// TLS secures connections; nil sends plaintext (upstream_tls: disable).
	TLS *tls.Config
	// Timeout bounds one login attempt (TCP, TLS and authentication).
	Timeout time.Duration
	// Auth is the upstream_auth policy: UpstreamAuthScramble (also when
	// empty) or UpstreamAuthAny. Every login of the Dialer obeys it.
	Auth string
	// ServerKey is the database's pinned RSA public key
	// (upstream_rsa_public_key_file), or nil; see LoginGuardOptions.
	ServerKey *rsa.PublicKey
}

// NewDialer returns a Dialer for opts.Upstream.
func NewDialer(opts DialerOptions) (*Dialer, error) {
	if _, _, err := net.SplitHostPort(opts.Upstream); err != nil {
		return nil, fmt.Errorf("upstream %q: %w", opts.Upstream, err)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	guard, err := NewLoginGuard(LoginGuardOptions{TLS: opts.TLS, Auth: opts.Auth, ServerKey: opts.ServerKey})
	if err != nil {
		return nil, err
	}
	return &Dialer{addr: opts.Upstream, timeout: opts.Timeout, guard: guard}, nil
}

// LoginGuard returns the guard every login of d goes through, for other
// logins to the same database (a rotation's administrative connections).
func (d *Dialer) LoginGuard() *LoginGuard { return d.guard }

// loginError returns the error of a failed login over conn (nil if it was
// never dialed): the guard's refusal if it broke the login off, which
// go-mysql reports only as text, else err classified.
func loginError(conn net.Conn, err error) error {
	if conn != nil {
		if r := Refusal(conn); r != nil {
			return r
		}
	}
	return classifyDialError(err)
}

// serverInfo is what a server's initial handshake announced.
type serverInfo struct {
	version   string
	caps      uint32
	collation byte
	status    uint16
	mariaDB   bool
}

// parseGreeting reads a server's initial handshake payload.
func parseGreeting(p []byte) (*serverInfo, bool) {
	if len(p) < 1 || p[0] != 10 {
		return nil, false
	}
	end := bytes.IndexByte(p[1:], 0)
	if end < 0 {
		return nil, false
	}
	i := 1 + end
	if len(p) < i+21 {
		return nil, false
	}
	info := &serverInfo{version: string(p[1:i])}
	info.caps = uint32(binary.LittleEndian.Uint16(p[i+14:]))
	info.collation = p[i+16]
	info.status = binary.LittleEndian.Uint16(p[i+17:])
	info.caps |= uint32(binary.LittleEndian.Uint16(p[i+19:])) << 16
	info.mariaDB = strings.Contains(info.version, "MariaDB")
	return info, true
}

// serverInfo returns what the latest greeting announced, or nil before the
// first login.
func (d *Dialer) serverInfo() *serverInfo { return d.info.Load() }

// dialParams are the session properties a backend connection mirrors.
type dialParams struct {
	database string
	// collation is the client's collation id from its handshake.
	collation byte
	// caps are the client's negotiated capabilities; only the mirrored
	// flags are used.
	caps  uint32
	attrs map[string]string
}

// sniffConn records the server's greeting, the first packet it sends,
// while go-mysql's client reads it. go-mysql does not expose the server's
// capability flags.
type sniffConn struct {
	net.Conn
	mu       sync.Mutex
	greeting []byte // the first packet, header included, once complete
	pending  []byte
	full     bool
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if !c.full && n > 0 {
		c.pending = append(c.pending, p[:n]...)
		if len(c.pending) >= 4 && len(c.pending) >= 4+frameLen(c.pending) {
			c.greeting = c.pending[:4+frameLen(c.pending)]
			c.full = true
		} else if len(c.pending) > maxHandshakePacket {
			c.full = true
		}
	}
	c.mu.Unlock()
	return n, err
}

func (c *sniffConn) info() *serverInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.greeting == nil {
		return nil
	}
	info, _ := parseGreeting(c.greeting[4:])
	return info
}

// collationName returns the collation a backend connection should use for
// a client that announced id: the same, except that MariaDB gets
// utf8mb4_general_ci for MySQL 8's default 255, which it does not know and
// would silently replace with latin1.
func collationName(id byte, mariaDB bool) string {
	if id == 0 || (id == collationUTF8MB40900AICI && mariaDB) {
		id = collationUTF8MB4GeneralCI
	}
	c, err := charset.GetCollationByID(int(id))
	if err != nil {
		c, _ = charset.GetCollationByID(collationUTF8MB4GeneralCI)
	}
	return c.Name
}

// dial logs in with gen's credential and returns the raw connection.
func (d *Dialer) dial(ctx context.Context, gen *creds.Generation, p dialParams) (*serverConn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	prev := d.info.Load()
	mariaDB := prev == nil || prev.mariaDB
	want := p.caps & mirrored
	var (
		sniff   *sniffConn
		guarded net.Conn
	)
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Timeout: d.timeout, KeepAlive: 30 * time.Second}
		nc, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		nc.SetDeadline(deadline)
		guarded = d.guard.Wrap(nc)
		sniff = &sniffConn{Conn: guarded}
		return sniff, nil
	}
	configure := func(c *client.Conn) error {
		if t := d.guard.LibraryTLS(); t != nil {
			c.SetTLSConfig(t.Clone())
		}
		if err := c.SetCollation(collationName(p.collation, mariaDB)); err != nil {
			return err
		}
		for _, f := range []uint32{capFoundRows, capIgnoreSpace, capMultiStatements, capMultiResults,
			capPSMultiResults, capLocalFiles, capSessionTrack} {
			if want&f != 0 {
				if err := c.SetCapability(f); err != nil {
					return err
				}
			} else {
				c.UnsetCapability(f)
			}
		}
		// go-mysql's client asks for these two by default.
		for _, f := range []uint32{capDeprecateEOF, capQueryAttributes} {
			if want&f == 0 {
				c.UnsetCapability(f)
			}
		}
		c.UnsetCapability(capCompress)
		if len(p.attrs) > 0 {
			c.SetAttributes(p.attrs)
		}
		return nil
	}
	c, err := client.ConnectWithDialer(ctx, "tcp", d.addr, gen.Cred.Username, gen.Cred.Password, p.database, dialer, configure)
	if err != nil {
		if sniff != nil {
			sniff.Close()
		}
		return nil, loginError(guarded, err)
	}
	info := sniff.info()
	if info == nil {
		c.Close()
		return nil, errors.New("could not read the server's greeting")
	}
	d.info.Store(info)
	if missing := want & (capDeprecateEOF | capQueryAttributes) &^ info.caps; missing != 0 {
		c.Close()
		return nil, fmt.Errorf("%w: the database server does not support capability %#x the client negotiated", proxy.ErrPermanent, missing)
	}
	raw := c.Conn.Conn
	if raw == sniff {
		raw = unwrapGuard(sniff.Conn)
	}
	raw.SetDeadline(time.Time{})
	sc := &serverConn{
		conn:    raw,
		thread:  c.GetConnectionID(),
		version: info.version,
		mariaDB: info.mariaDB,
		caps:    (want | capProtocol41 | capSecureConnection | capTransactions | capLongFlag | capPluginAuth) & info.caps,
		gen:     gen.N,
	}
	if c.IsAutoCommit() {
		sc.status = statusAutocommit
	}
	return sc, nil
}

// Connect logs in as cred (no default database) and returns go-mysql's
// client connection, for administrative statements such as KILL. The
// caller closes it.
func (d *Dialer) Connect(ctx context.Context, cred creds.Credential) (*client.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var raw net.Conn
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Timeout: d.timeout}
		nc, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		nc.SetDeadline(deadline)
		raw = d.guard.Wrap(nc)
		return raw, nil
	}
	configure := func(c *client.Conn) error {
		if t := d.guard.LibraryTLS(); t != nil {
			c.SetTLSConfig(t.Clone())
		}
		return c.SetCollation("utf8mb4_general_ci")
	}
	c, err := client.ConnectWithDialer(ctx, "tcp", d.addr, cred.Username, cred.Password, "", dialer, configure)
	if err != nil {
		if raw != nil {
			raw.Close()
		}
		return nil, loginError(raw, err)
	}
	return c, nil
}

// Verify performs a test login with cred; it is the creds.VerifyFunc of
// the backend's Store. It also learns the server's version and
// capabilities for the proxy's greeting.
func (d *Dialer) Verify(ctx context.Context, cred creds.Credential) error {
	sc, err := d.dial(ctx, &creds.Generation{Cred: cred}, dialParams{collation: collationUTF8MB4GeneralCI})
	if err != nil {
		return err
	}
	sc.Close()
	return nil
}

// kill runs KILL QUERY or KILL CONNECTION for a backend thread on a
// connection of its own, logged in as cred.
func (d *Dialer) kill(ctx context.Context, cred creds.Credential, thread uint32, query bool) error {
	c, err := d.Connect(ctx, cred)
	if err != nil {
		return err
	}
	defer c.Close()
	what := "CONNECTION"
	if query {
		what = "QUERY"
	}
	_, err = c.Execute(fmt.Sprintf("KILL %s %d", what, thread))
	return err
}

// classifyDialError wraps authentication failures with creds.ErrRejected
// and errors a retry cannot fix with proxy.ErrPermanent. go-mysql's
// messages name the user and host but never the password.
func classifyDialError(err error) error {
	var myErr *gomysql.MyError
	if !errors.As(err, &myErr) {
		return err // network: retried
	}
	switch myErr.Code {
	case erAccessDenied, erPasswordExpired, erMustChangePassword, erAccountLockedMySQL, erAccountLockedMaria:
		return fmt.Errorf("%w: %w", creds.ErrRejected, err)
	case erDBAccessDenied, erBadDB:
		return fmt.Errorf("%w: %w", proxy.ErrPermanent, err)
	case erConCount, erTooManyUserConns:
		return fmt.Errorf("%w: %w", proxy.ErrDatabaseFull, err) // retried
	}
	return err // too many connections, shutting down, host blocked: retried
}

// serverConn is one logged-in backend connection. It is owned by exactly
// one holder at a time: a session (whose goroutine reads and writes it),
// the pool, or a switch in progress.
type serverConn struct {
	conn    net.Conn
	thread  uint32 // the server's connection id (CONNECTION_ID())
	version string
	mariaDB bool
	// caps are the capabilities negotiated on this connection.
	caps   uint32
	status uint16 // status flags after login
	gen    uint64
	key    string
	conns  *proxy.ConnCounter
	closed atomic.Bool
	// rd reads the connection for the relay; made on first use.
	rd *relaybuf.Reader
	// wrc is the RawConn writes go through (nil for TLS); set on first
	// write, with wrcSet.
	wrc    syscall.RawConn
	wrcSet bool
}

// reader returns the connection's reader for the relay.
func (c *serverConn) reader(pool *relaybuf.Pool) *relaybuf.Reader {
	if c.rd == nil {
		rd := relaybuf.NewReader(c.conn, pool)
		c.rd = &rd
	}
	return c.rd
}

var _ proxy.PooledConn = (*serverConn)(nil)

// Generation implements proxy.PooledConn.
func (c *serverConn) Generation() uint64 { return c.gen }

// PoolKey implements proxy.PooledConn.
func (c *serverConn) PoolKey() string { return c.key }

// Healthy implements proxy.PooledConn: an idle backend connection must
// have nothing to read; data or EOF means the server closed it or sent an
// error (a killed connection, wait_timeout).
func (c *serverConn) Healthy() bool {
	return relaybuf.PeekIdle(c.conn)
}

// Close sends COM_QUIT and closes the connection. Idempotent.
func (c *serverConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	c.conn.Write([]byte{1, 0, 0, 0, comQuit})
	err := c.conn.Close()
	if c.conns != nil {
		c.conns.Closed(c.gen)
	}
	return err
}

// write sends p in full (see writeAll).
func (c *serverConn) write(p []byte) error {
	if !c.wrcSet {
		c.wrc, c.wrcSet = relaybuf.RawConn(c.conn), true
	}
	return relaybuf.WriteAll(c.conn, c.wrc, p)
}
