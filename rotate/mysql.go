package rotate

import (
	"context"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/creds"
	myproxy "github.com/credswap/credswap/proxy/mysql"
)

// MySQL implements Database (and DualPassworder) for MySQL and MariaDB.
// Administrative statements run over a fresh connection per call with the
// backend's address, TLS settings and upstream_auth. The statements that
// set a password carry it (MySQL) or its mysql_native_password hash
// (MariaDB) as written: only upstream TLS keeps them from the network.
type MySQL struct {
	// Addr is host:port of the database.
	Addr string
	// Login polices every login (upstream_auth) and holds the upstream
	// TLS configuration: the backend dialer's LoginGuard. Nil logs in over
	// plaintext answering scrambles only.
	Login *myproxy.LoginGuard
	// Timeout bounds dialing and each statement (default 10s).
	Timeout time.Duration
}

// DualPassworder is a Database whose users can hold two passwords at once
// (MySQL ≥ 8.0.14 RETAIN CURRENT PASSWORD; MariaDB ≥ 10.4 authentication
// alternatives).
type DualPassworder interface {
	// AddPassword makes next valid for user alongside current.
	AddPassword(ctx context.Context, admin creds.Credential, user, current, next string) error
	// KeepOnly leaves password as user's only password.
	KeepOnly(ctx context.Context, admin creds.Credential, user, password string) error
}

var _ DualPassworder = MySQL{}

// db returns a pool of at most one connection logging in as c, and the
// dialer its connections come from.
func (m MySQL) db(c creds.Credential) (*sql.DB, *guardedDial, error) {
	gd := &guardedDial{guard: m.Login, timeout: m.timeout()}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd = c.Username, c.Password
	cfg.Net, cfg.Addr = "tcp", m.Addr
	cfg.TLS = m.Login.LibraryTLS()
	cfg.DialFunc = gd.dial
	// The driver would print connection errors to stderr, outside
	// credswap's log; they reach the caller as errors anyway.
	cfg.Logger = &mysql.NopLogger{}
	cfg.AllowNativePasswords = true
	cfg.Timeout = m.timeout()
	cfg.ReadTimeout, cfg.WriteTimeout = m.timeout(), m.timeout()
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	return db, gd, nil
}

// guardedDial dials go-sql-driver's connections through the LoginGuard
// and remembers the latest, whose refusal explains a failed login
// (go-sql-driver reports it as "invalid connection").
type guardedDial struct {
	guard   *myproxy.LoginGuard
	timeout time.Duration
	mu      sync.Mutex
	last    net.Conn
}

func (g *guardedDial) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: g.timeout, KeepAlive: 30 * time.Second}
	nc, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := g.guard.Wrap(nc)
	g.mu.Lock()
	g.last = c
	g.mu.Unlock()
	return c, nil
}

// explain returns the guard's refusal of the latest login instead of err,
// if there was one.
func (g *guardedDial) explain(err error) error {
	g.mu.Lock()
	c := g.last
	g.mu.Unlock()
	if c != nil {
		if r := myproxy.Refusal(c); r != nil {
			return r
		}
	}
	return err
}

func (m MySQL) timeout() time.Duration {
	if m.Timeout <= 0 {
		return 10 * time.Second
	}
	return m.Timeout
}

// server describes the database a statement is written for.
type server struct {
	mariadb bool
	version [3]int
}

// parseServerVersion reads VERSION(), such as "10.11.19-MariaDB-0+deb12u1"
// or "8.0.36".
func parseServerVersion(v string) server {
	s := server{mariadb: strings.Contains(strings.ToLower(v), "mariadb")}
	num := v
	if i := strings.IndexFunc(v, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
		num = v[:i]
	}
	for i, p := range strings.SplitN(num, ".", 3) {
		s.version[i], _ = strconv.Atoi(p)
	}
	return s
}

func (s server) atLeast(major, minor, patch int) bool {
	v := s.version
	if v[0] != major {
		return v[0] > major
	}
	if v[1] != minor {
		return v[1] > minor
	}
	return v[2] >= patch
}

// session holds an admin connection with the server's kind and version.
type mysqlSession struct {
	db  *sql.DB
	srv server
}

func (m MySQL) open(ctx context.Context, admin creds.Credential) (*mysqlSession, error) {
	db, gd, err := m.db(admin)
	if err != nil {
		return nil, err
	}
	var v string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting as %s: %w", admin.Username, gd.explain(classifyMySQLError(err)))
	}
	return &mysqlSession{db: db, srv: parseServerVersion(v)}, nil
}

// account returns 'user'@'host' for user, which must exist for exactly
// one host.
func (s *mysqlSession) account(ctx context.Context, user string) (string, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT Host FROM mysql.user WHERE User = ?", user)
	if err != nil {
		return "", fmt.Errorf("looking up %s: %w", user, err)
	}
	defer rows.Close()
	var hosts []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return "", err
		}
		hosts = append(hosts, h)
	}
	switch len(hosts) {
	case 0:
		return "", fmt.Errorf("user %s does not exist", user)
	case 1:
		return MySQLAccount(user, hosts[0]), nil
	}
	return "", fmt.Errorf("user %s exists for %d hosts; credswap rotates accounts that exist for one host", user, len(hosts))
}

// withAccount connects as admin and runs f with the 'user'@'host' of user.
func (m MySQL) withAccount(ctx context.Context, admin creds.Credential, user string, f func(s *mysqlSession, acct string) error) error {
	s, err := m.open(ctx, admin)
	if err != nil {
		return err
	}
	defer s.db.Close()
	acct, err := s.account(ctx, user)
	if err != nil {
		return err
	}
	return f(s, acct)
}

// CanLogin implements Database: the account is not locked.
func (m MySQL) CanLogin(ctx context.Context, admin creds.Credential, user string) (bool, error) {
	var create string
	err := m.withAccount(ctx, admin, user, func(s *mysqlSession, acct string) error {
		return s.db.QueryRowContext(ctx, "SHOW CREATE USER "+acct).Scan(&create)
	})
	if err != nil {
		return false, err
	}
	return !strings.Contains(strings.ToUpper(create), "ACCOUNT LOCK"), nil
}

// SetPassword implements Database.
func (m MySQL) SetPassword(ctx context.Context, admin creds.Credential, user, password string, login bool) error {
	return m.withAccount(ctx, admin, user, func(s *mysqlSession, acct string) error {
		_, err := s.db.ExecContext(ctx, setPasswordSQL(s.srv, acct, password, login))
		return err
	})
}

// Lock implements Database.
func (m MySQL) Lock(ctx context.Context, admin creds.Credential, user string, terminate bool) error {
	return m.withAccount(ctx, admin, user, func(s *mysqlSession, acct string) error {
		if _, err := s.db.ExecContext(ctx, "ALTER USER "+acct+" ACCOUNT LOCK"); err != nil {
			return err
		}
		if !terminate {
			return nil
		}
		rows, err := s.db.QueryContext(ctx, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()", user)
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if rows.Scan(&id) == nil {
				ids = append(ids, id)
			}
		}
		rows.Close()
		for _, id := range ids {
			s.db.ExecContext(ctx, "KILL "+strconv.FormatInt(id, 10)) // gone already is fine
		}
		return nil
	})
}

// Sessions implements Database from information_schema.PROCESSLIST (the
// admin needs the PROCESS privilege to see other users' sessions).
func (m MySQL) Sessions(ctx context.Context, admin creds.Credential, user string) ([]Holder, error) {
	s, err := m.open(ctx, admin)
	if err != nil {
		return nil, err
	}
	defer s.db.Close()
	rows, err := s.db.QueryContext(ctx, `SELECT SUBSTRING_INDEX(HOST, ':', 1), COUNT(*) FROM information_schema.PROCESSLIST
		WHERE USER = ? AND ID <> CONNECTION_ID() GROUP BY 1 ORDER BY 2 DESC, 1`, user)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Holder
	for rows.Next() {
		var h Holder
		if err := rows.Scan(&h.Client, &h.Sessions); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// Verify implements Database.
func (m MySQL) Verify(ctx context.Context, c creds.Credential) error {
	db, gd, err := m.db(c)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, m.timeout())
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		return gd.explain(classifyMySQLError(err))
	}
	return nil
}

// AddPassword implements DualPassworder.
func (m MySQL) AddPassword(ctx context.Context, admin creds.Credential, user, current, next string) error {
	return m.withAccount(ctx, admin, user, func(s *mysqlSession, acct string) error {
		stmt, err := dualPasswordSQL(s.srv, acct, current, next)
		if err != nil {
			return err
		}
		_, err = s.db.ExecContext(ctx, stmt)
		return err
	})
}

// KeepOnly implements DualPassworder.
func (m MySQL) KeepOnly(ctx context.Context, admin creds.Credential, user, password string) error {
	return m.withAccount(ctx, admin, user, func(s *mysqlSession, acct string) error {
		for _, stmt := range keepOnlySQL(s.srv, acct, password) {
			if _, err := s.db.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
}

// setPasswordSQL sets one password. MariaDB gets the mysql_native_password
// hash computed here, so the password appears in no server log; MySQL
// rewrites IDENTIFIED BY in its logs itself.
func setPasswordSQL(srv server, acct, password string, login bool) string {
	var stmt string
	if srv.mariadb {
		stmt = "ALTER USER " + acct + " IDENTIFIED VIA mysql_native_password USING " + QuoteMySQLString(nativeHash(password))
	} else {
		stmt = "ALTER USER " + acct + " IDENTIFIED BY " + QuoteMySQLString(password)
	}
	if login {
		stmt += " ACCOUNT UNLOCK"
	}
	return stmt
}

// dualPasswordSQL makes next valid alongside current (DESIGN, rotation
// strategies: dual-password).
func dualPasswordSQL(srv server, acct, current, next string) (string, error) {
	switch {
	case srv.mariadb && srv.atLeast(10, 4, 0):
		return "ALTER USER " + acct + " IDENTIFIED VIA mysql_native_password USING " + QuoteMySQLString(nativeHash(current)) +
			" OR mysql_native_password USING " + QuoteMySQLString(nativeHash(next)), nil
	case !srv.mariadb && srv.atLeast(8, 0, 14):
		return "ALTER USER " + acct + " IDENTIFIED BY " + QuoteMySQLString(next) + " RETAIN CURRENT PASSWORD", nil
	}
	return "", fmt.Errorf("dual passwords need MySQL 8.0.14 or MariaDB 10.4 or newer (server is %d.%d.%d)",
		srv.version[0], srv.version[1], srv.version[2])
}

// keepOnlySQL leaves password as the only one.
func keepOnlySQL(srv server, acct, password string) []string {
	if srv.mariadb {
		return []string{setPasswordSQL(srv, acct, password, false)}
	}
	// MySQL: make it the primary password (if it is not), then drop the
	// secondary one.
	return []string{
		"ALTER USER " + acct + " IDENTIFIED BY " + QuoteMySQLString(password),
		"ALTER USER " + acct + " DISCARD OLD PASSWORD",
	}
}

// nativeHash is the mysql_native_password hash: "*" + hex(SHA1(SHA1(pw))).
func nativeHash(password string) string {
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(h2[:]))
}

// MySQLAccount quotes an account as 'user'@'host' with [QuoteMySQLString],
// as every rotation statement names it.
func MySQLAccount(user, host string) string {
	return QuoteMySQLString(user) + "@" + QuoteMySQLString(host)
}

// QuoteMySQLString quotes s as a MySQL/MariaDB string literal for the
// default sql_mode (backslash escapes on): a backslash is doubled and a
// single quote becomes two. The rotation statements and the SQL printed by
// setup-users quote user, host and role names with it. Generated passwords
// never contain quotes or backslashes (see checkMySQLAlphabet), so
// NO_BACKSLASH_ESCAPES does not matter for them.
func QuoteMySQLString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

// checkMySQLAlphabet refuses password alphabets whose characters would
// depend on the server's sql_mode when quoted.
func checkMySQLAlphabet(alphabet string) error {
	if strings.ContainsAny(alphabet, "'\"\\`") {
		return errors.New("password.alphabet must not contain quotes or backslashes for MySQL and MariaDB")
	}
	return nil
}

// classifyMySQLError wraps access denied (1045) with creds.ErrRejected.
func classifyMySQLError(err error) error {
	var me *mysql.MySQLError
	if errors.As(err, &me) && (me.Number == 1045 || me.Number == 4151 /* account locked */ || me.Number == 3118) {
		return fmt.Errorf("%w: %w", creds.ErrRejected, err)
	}
	return err
}
