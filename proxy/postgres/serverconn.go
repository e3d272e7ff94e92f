package postgres

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// Dialer logs in to the upstream PostgreSQL with a given credential. It is
// immutable and safe for concurrent use.
type Dialer struct {
	host    string
	port    uint16
	tls     *tls.Config // nil: plaintext
	timeout time.Duration
	// verifyDB is the database test logins connect to.
	verifyDB string
	// auth is the upstream_auth policy, also set in base.RequireAuth.
	auth string
	base *pgconn.Config
}

// DialerOptions configures a Dialer.
type DialerOptions struct {
	// Upstream is host:port of the database.
	Upstream string
	// TLS secures connections; nil sends plaintext (upstream_tls: disable).
	TLS *tls.Config
	// Timeout bounds one login attempt (TCP, TLS and authentication).
	Timeout time.Duration
	// VerifyDatabase is the database a test login connects to.
	VerifyDatabase string
	// Auth is the upstream_auth policy: UpstreamAuthSCRAM (also when
	// empty), UpstreamAuthMD5 or UpstreamAuthAny. Every login of the
	// Dialer obeys it: sessions, test logins and administrative ones.
	Auth string
}

// NewDialer builds the base connection configuration once. Every setting is
// explicit: no PG* environment variable, passfile or service file, no
// sslmode fallback, no target_session_attrs check can change where or how
// the proxy connects, and pgconn answers only the authentication requests
// opts.Auth allows (require_auth).
func NewDialer(opts DialerOptions) (*Dialer, error) {
	reqAuth, err := requireAuth(opts.Auth)
	if err != nil {
		return nil, err
	}
	host, portStr, err := net.SplitHostPort(opts.Upstream)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", opts.Upstream, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("upstream port %q: %w", portStr, err)
	}
	// ParseConfig is the only constructor pgconn accepts; the string names
	// every connection key so that the environment cannot add any, and
	// the fields below overwrite whatever it derived.
	base, err := pgconn.ParseConfig("host=127.0.0.1 port=5432 user=credswap dbname=postgres password=unused sslmode=disable")
	if err != nil {
		return nil, fmt.Errorf("building connection config: %w", err)
	}
	base.Host = host
	base.Port = uint16(port)
	base.TLSConfig = opts.TLS
	base.Fallbacks = nil
	base.RuntimeParams = map[string]string{}
	base.ValidateConnect = nil
	base.AfterConnect = nil
	base.KerberosSrvName = ""
	base.KerberosSpn = ""
	base.SSLNegotiation = "postgres"
	base.MinProtocolVersion = "3.0"
	base.MaxProtocolVersion = "3.0"
	base.ConnectTimeout = opts.Timeout
	d := &net.Dialer{Timeout: opts.Timeout, KeepAlive: 30 * time.Second}
	base.DialFunc = d.DialContext
	base.OnNotice = nil
	base.OnNotification = nil
	base.RequireAuth = reqAuth
	if opts.VerifyDatabase == "" {
		opts.VerifyDatabase = "postgres"
	}
	if opts.Auth == "" {
		opts.Auth = UpstreamAuthSCRAM
	}
	return &Dialer{host: host, port: uint16(port), tls: opts.TLS, timeout: opts.Timeout, verifyDB: opts.VerifyDatabase,
		auth: opts.Auth, base: base}, nil
}

// connect logs in with cfg, a copy of d.base, and classifies a failure.
// The connection is watched for the server's authentication request while
// it logs in (see authWatch); the watcher stays in place as a pass-through.
func (d *Dialer) connect(ctx context.Context, cfg *pgconn.Config) (*pgconn.PgConn, error) {
	var watch *authWatch
	cfg.AfterNetConnect = func(_ context.Context, _ *pgconn.Config, c net.Conn) (net.Conn, error) {
		watch = newAuthWatch(c)
		return watch, nil
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		if watch != nil {
			if r := watch.refusal(d.auth, err); r != nil {
				return nil, r
			}
		}
		return nil, classifyDialError(err)
	}
	return pc, nil
}

// dial logs in with gen's credential to database with the given runtime
// parameters and takes over the raw connection.
func (d *Dialer) dial(ctx context.Context, gen *creds.Generation, database string, params map[string]string) (*serverConn, error) {
	cfg := d.base.Copy()
	cfg.User = gen.Cred.Username
	cfg.Password = gen.Cred.Password
	cfg.Database = database
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	if d.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
		defer cancel()
	}
	pc, err := d.connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pc.SyncConn(ctx); err != nil {
		pc.Close(context.Background())
		return nil, err
	}
	hc, err := pc.Hijack()
	if err != nil {
		pc.Close(context.Background())
		return nil, err
	}
	conn := hc.Conn
	if w, ok := conn.(*authWatch); ok {
		conn = w.Conn // it passes bytes through and buffers none
	}
	sc := &serverConn{
		conn:   conn,
		pid:    hc.PID,
		secret: hc.SecretKey,
		params: hc.ParameterStatuses,
		gen:    gen.N,
	}
	if sc.params == nil {
		sc.params = map[string]string{}
	}
	return sc, nil
}

// Connect logs in as c to database (the verify database if empty) and
// returns an ordinary pgconn connection, for administrative statements
// such as a rotation's ALTER ROLE. The caller closes it.
func (d *Dialer) Connect(ctx context.Context, c creds.Credential, database string) (*pgconn.PgConn, error) {
	if database == "" {
		database = d.verifyDB
	}
	cfg := d.base.Copy()
	cfg.User, cfg.Password, cfg.Database = c.Username, c.Password, database
	if d.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
		defer cancel()
	}
	return d.connect(ctx, cfg)
}

// Verify performs a test login with c to the verify database; it is the
// creds.VerifyFunc of the backend's Store.
func (d *Dialer) Verify(ctx context.Context, c creds.Credential) error {
	sc, err := d.dial(ctx, &creds.Generation{Cred: c}, d.verifyDB, nil)
	if err != nil {
		return err
	}
	sc.Close()
	return nil
}

// classifyDialError wraps authentication failures with creds.ErrRejected
// and errors a retry cannot fix with proxy.ErrPermanent. pgconn's messages
// name the user and database but never the password.
func classifyDialError(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err // network: retried
	}
	switch pgErr.Code {
	case "28P01", "28000":
		return fmt.Errorf("%w: %w", creds.ErrRejected, err)
	case "53300":
		return fmt.Errorf("%w: %w", proxy.ErrDatabaseFull, err) // retried
	case "53400", "57P01", "57P02", "57P03", "58000", "58030", "XX000":
		return err // too many connections, shutting down, starting up: retried
	}
	return fmt.Errorf("%w: %w", proxy.ErrPermanent, err)
}

// cancel sends a CancelRequest for the backend process pid to the upstream
// (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-CANCELING-REQUESTS).
func (d *Dialer) cancel(ctx context.Context, pid uint32, secret []byte) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "tcp", net.JoinHostPort(d.host, strconv.Itoa(int(d.port))))
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if d.tls != nil {
		if _, err := conn.Write(appendFrontendMsg(nil, &pgproto3.SSLRequest{})); err != nil {
			return err
		}
		var resp [1]byte
		if _, err := conn.Read(resp[:]); err != nil {
			return err
		}
		if resp[0] != 'S' {
			return errors.New("upstream refused TLS for the cancel request")
		}
		tc := tls.Client(conn, d.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		conn = tc
	}
	_, err = conn.Write(appendFrontendMsg(nil, &pgproto3.CancelRequest{ProcessID: pid, SecretKey: secret}))
	return err
}

// serverConn is one logged-in backend connection after Hijack. It is owned
// by exactly one holder at a time: a session (whose relay goroutines read
// and write it under the session's rules), the pool, or a switch in
// progress.
type serverConn struct {
	conn   net.Conn
	pid    uint32
	secret []byte
	// params are the ParameterStatus values the backend reported, kept
	// current by whichever goroutine reads the connection.
	params map[string]string
	gen    uint64
	key    string
	conns  *proxy.ConnCounter
	closed atomic.Bool
}

var _ proxy.PooledConn = (*serverConn)(nil)

// Generation implements proxy.PooledConn.
func (c *serverConn) Generation() uint64 { return c.gen }

// PoolKey implements proxy.PooledConn.
func (c *serverConn) PoolKey() string { return c.key }

// Healthy implements proxy.PooledConn: an idle backend connection must have
// nothing to read; data or EOF means the server closed or complained.
func (c *serverConn) Healthy() bool {
	if fc, ok := c.conn.(*fdConn); ok {
		return fc.peekHealthy()
	}
	return relaybuf.PeekIdle(c.conn)
}

// Close sends Terminate and closes the connection. Idempotent.
func (c *serverConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	c.conn.Write([]byte{'X', 0, 0, 0, 4})
	err := c.conn.Close()
	if c.conns != nil {
		c.conns.Closed(c.gen)
	}
	return err
}

// forLoop makes the connection's socket one a relay loop can own (an
// fdConn), or reports false if it cannot be (TLS).
func (c *serverConn) forLoop() bool {
	switch conn := c.conn.(type) {
	case *fdConn:
		return true
	case *net.TCPConn:
		fc, err := detachTCP(conn)
		if err != nil {
			return false
		}
		c.conn = fc
		return true
	}
	return false
}

// forGoroutines makes the connection's socket one whose blocked reads a
// deadline interrupts (a netpoller connection), as the goroutine relay
// needs to pause its backend reader.
func (c *serverConn) forGoroutines() error {
	fc, ok := c.conn.(*fdConn)
	if !ok {
		return nil
	}
	nc, err := fc.netConn()
	if err != nil {
		return err
	}
	c.conn = nc
	return nil
}

// write sends p in full.
func (c *serverConn) write(p []byte) error {
	_, err := c.conn.Write(p)
	return err
}
