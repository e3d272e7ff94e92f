package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// setup creates a database, a backend user with every privilege on it and
// a proxy whose credential is that user.
func setup(t *testing.T, opts ...proxytest.Option) (p *proxytest.Proxy, db, user string) {
	t.Helper()
	m := testenv.MariaDBServer(t)
	db = m.CreateDatabase(t)
	user, password := m.CreateUser(t, "be")
	m.Grant(t, user, db)
	p = proxytest.StartMySQL(t, m, user, password, opts...)
	return p, db, user
}

// nativeAuth makes the local login use mysql_native_password. Clients
// built on libmariadb (the mariadb CLI, sysbench) cannot do
// caching_sha2_password's full authentication over plaintext TCP: they
// send the password unencrypted instead of asking for the RSA key.
func nativeAuth(c *config.Config) { c.Backends[0].Clients[0].Auth = "mysql_native_password" }

// twoUsers creates a database and two users with the same rights on it,
// for alternating-users rotations.
func twoUsers(t *testing.T, m *testenv.MariaDB) (db, userA, passA, userB, passB string) {
	t.Helper()
	db = m.CreateDatabase(t)
	userA, passA = m.CreateUser(t, "ua")
	userB, passB = m.CreateUser(t, "ub")
	m.Grant(t, userA, db)
	m.Grant(t, userB, db)
	return db, userA, passA, userB, passB
}

// open returns a database/sql pool through the proxy, closed at cleanup.
func open(t *testing.T, p *proxytest.Proxy, db, params string) *sql.DB {
	t.Helper()
	sdb, err := sql.Open("mysql", p.DSN(db, params))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })
	return sdb
}

// conn returns one connection through the proxy, closed at cleanup.
func conn(t *testing.T, p *proxytest.Proxy, db, params string) *sql.Conn {
	t.Helper()
	sdb := open(t, p, db, params)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := sdb.Conn(ctx)
	if err != nil {
		t.Fatalf("connecting through the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// queryString runs a query returning one string.
func queryString(t *testing.T, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, query string, args ...any) string {
	t.Helper()
	var s sql.NullString
	if err := q.QueryRowContext(context.Background(), query, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	if !s.Valid {
		return "NULL"
	}
	return s.String
}

// cli runs the mariadb command-line client through the proxy with stdin
// and extra arguments, returning its combined output.
func cli(t *testing.T, p *proxytest.Proxy, db, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := p.Maria.Command(ctx, append(append(p.MariaDBArgs(db), "--batch", "--skip-column-names"), args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func itoa(n int) string { return fmt.Sprint(n) }
