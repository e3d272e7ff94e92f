package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// tlsRegistered guards go-sql-driver's process-wide TLS config registry.
var tlsRegistered sync.Mutex

// registerTLS registers a go-sql-driver TLS config trusting ca for
// "localhost" and returns its name.
func registerTLS(t *testing.T, ca *testenv.CA) string {
	t.Helper()
	name := "credswap-" + proxytest.Random(4)
	tlsRegistered.Lock()
	defer tlsRegistered.Unlock()
	if err := mysql.RegisterTLSConfig(name, ca.ClientTLSConfig("localhost")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mysql.DeregisterTLSConfig(name) })
	return name
}

// withUsers adds local users: sha2a, sha2b, sha2c, sha2d
// (caching_sha2_password, each fresh in go-mysql's cache) and nat
// (mysql_native_password); the password is the name plus "-secret".
func withUsers(c *config.Config) {
	b := &c.Backends[0]
	for _, u := range []string{"sha2a", "sha2b", "sha2c", "sha2d"} {
		b.Clients = append(b.Clients, config.Client{User: u, Password: u + "-secret", Auth: "caching_sha2_password"})
	}
	b.Clients = append(b.Clients, config.Client{User: "nat", Password: "nat-secret", Auth: "mysql_native_password"})
}

// withTLS gives the proxy a certificate for localhost from ca.
func withTLS(t *testing.T, ca *testenv.CA, required bool) proxytest.Option {
	cert, key, err := ca.Issue(t.TempDir(), "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) {
		c.Backends[0].ClientTLS = config.ClientTLS{CertFile: cert, KeyFile: key, Required: required}
	}
}

// dsnAs is a go-sql-driver DSN for user/password through p.
func dsnAs(p *proxytest.Proxy, user, password, db, params string) string {
	q := *p
	q.ClientUser, q.ClientPassword = user, password
	return q.DSN(db, params)
}

func pingAs(dsn string) (string, error) {
	sdb, err := sql.Open("mysql", dsn)
	if err != nil {
		return "", err
	}
	defer sdb.Close()
	var who string
	err = sdb.QueryRow("SELECT CURRENT_USER()").Scan(&who)
	return who, err
}

// cliAs runs the mariadb CLI through p as user with extra arguments. The
// CLI of MariaDB 10.11 on Debian uses TLS whenever the server offers it:
// --skip-ssl keeps it on plaintext.
func cliAs(t *testing.T, p *proxytest.Proxy, user, password string, args ...string) (string, error) {
	t.Helper()
	q := *p
	q.ClientUser, q.ClientPassword = user, password
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := p.Maria.Command(ctx, append(append(q.MariaDBArgs(""), "--batch", "--skip-column-names", "-e", "SELECT CURRENT_USER()"), args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestClientAuth logs in with caching_sha2_password (full authentication
// over RSA and over TLS, then the fast path) and mysql_native_password,
// from go-sql-driver and the mariadb CLI, and with wrong passwords.
func TestClientAuth(t *testing.T) {
	ca := testenv.TestCA(t)
	p, db, user := setup(t, withUsers)
	want := user + "@%"
	check := func(name, dsn string) {
		t.Helper()
		who, err := pingAs(dsn)
		if err != nil || who != want {
			t.Fatalf("%s: %q %v", name, who, err)
		}
	}
	// Full authentication over plaintext: go-sql-driver asks for the
	// proxy's RSA key and sends the password encrypted.
	check("caching_sha2 full over RSA", dsnAs(p, "sha2a", "sha2a-secret", db, ""))
	check("caching_sha2 fast (go-sql-driver)", dsnAs(p, "sha2a", "sha2a-secret", db, ""))
	// The mariadb CLI (libmariadb) cannot do the full exchange with a
	// server that offers no TLS: it sends the password in clear, which the
	// proxy refuses with a clear message. So its getting in as sha2a
	// proves the fast path.
	if out, err := cliAs(t, p, "sha2a", "sha2a-secret"); err != nil || out != want {
		t.Fatalf("mariadb CLI, caching_sha2 fast path: %v %q", err, out)
	}
	out, err := cliAs(t, p, "sha2b", "sha2b-secret")
	if e := testenv.ParseMariaDBError([]byte(out)); err == nil || e == nil || e.Code != 1045 || !strings.Contains(e.Message, "mysql_native_password") {
		t.Fatalf("mariadb CLI, caching_sha2 full authentication without TLS: %v %q", err, out)
	}
	// mysql_native_password, from both clients.
	check("native", dsnAs(p, "nat", "nat-secret", db, ""))
	if out, err := cliAs(t, p, "nat", "nat-secret"); err != nil || out != want {
		t.Fatalf("mariadb CLI, native: %v %q", err, out)
	}
	// Wrong password and unknown user: 1045 alike.
	for _, c := range []struct{ user, password string }{{"sha2a", "wrong"}, {"nat", "wrong"}, {"nobody", "x"}} {
		_, err := pingAs(dsnAs(p, c.user, c.password, db, ""))
		var myErr *mysql.MySQLError
		if !errors.As(err, &myErr) || myErr.Number != 1045 || !strings.Contains(myErr.Message, "Access denied") {
			t.Fatalf("%s with a wrong password: want 1045, got %v", c.user, err)
		}
	}
	if m := scrape(t, p); !strings.Contains(m, `credswap_client_auth_failures_total{backend="my"} 4`) {
		t.Errorf("client auth failures:\n%s", grepLines(m, "auth_failures"))
	}

	// With TLS offered: full authentication over TLS from both clients,
	// and libmariadb's RSA exchange on plaintext.
	pt := proxytest.StartMySQL(t, p.Maria, p.Backend().Store.Current().Cred.Username, p.Backend().Store.Current().Cred.Password,
		withUsers, withTLS(t, ca, false))
	tlsName := registerTLS(t, ca)
	check("caching_sha2 full over TLS", dsnAs(pt, "sha2a", "sha2a-secret", db, "tls="+tlsName))
	if out, err := cliAs(t, pt, "sha2b", "sha2b-secret", "-h", "localhost", "--ssl", "--ssl-ca="+ca.CertFile, "--ssl-verify-server-cert"); err != nil || out != want {
		t.Fatalf("mariadb CLI, caching_sha2 full over TLS: %v %q", err, out)
	}
	if out, err := cliAs(t, pt, "sha2c", "sha2c-secret", "--skip-ssl"); err != nil || out != want {
		t.Fatalf("mariadb CLI, caching_sha2 full over RSA: %v %q", err, out)
	}
	check("caching_sha2 fast after TLS", dsnAs(pt, "sha2b", "sha2b-secret", db, ""))
}

func TestTLSRequired(t *testing.T) {
	ca := testenv.TestCA(t)
	p, db, user := setup(t, withTLS(t, ca, true))
	tlsName := registerTLS(t, ca)
	_, err := pingAs(p.DSN(db, ""))
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 3159 || !strings.Contains(myErr.Message, "requires TLS") {
		t.Fatalf("plaintext to a TLS-only listener: want 3159 'requires TLS', got %v", err)
	}
	out, err := cliAs(t, p, "nat", "nat-secret", "--skip-ssl")
	if e := testenv.ParseMariaDBError([]byte(out)); err == nil || e == nil || e.Code != 3159 {
		t.Fatalf("mariadb CLI on plaintext: %v %q", err, out)
	}
	if who, err := pingAs(p.DSN(db, "tls="+tlsName)); err != nil || who != user+"@%" {
		t.Fatalf("TLS: %q %v", who, err)
	}
}

// TestBackendErrorsReachClient: a client of a proxy whose database cannot be
// reached gets an ERR after connect_timeout, not an OK and a dropped
// connection; one asking for a database that does not exist gets the
// database's own error at once.
func TestBackendErrorsReachClient(t *testing.T) {
	p, _, _ := setup(t, func(c *config.Config) { c.Backends[0].Limits.ConnectTimeout = config.Duration(time.Second) })
	start := time.Now()
	_, err := pingAs(p.DSN("no_such_db", ""))
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 1044 && myErr.Number != 1049 || time.Since(start) > 900*time.Millisecond {
		t.Fatalf("unknown database: %v after %s", err, time.Since(start))
	}

	dead, _ := testenv.FreePort()
	m := testenv.MariaDBServer(t)
	down := proxytest.StartMySQL(t, m, "nobody", "x", withUsers, func(c *config.Config) {
		c.Backends[0].Upstream = "127.0.0.1:" + itoa(dead)
		c.Backends[0].Limits.ConnectTimeout = config.Duration(time.Second)
	})
	_, err = pingAs(down.DSN("", ""))
	if !errors.As(err, &myErr) || myErr.Number != 1053 || string(myErr.SQLState[:]) != "08S01" ||
		!strings.Contains(myErr.Message, "database server") {
		t.Fatalf("database down: want ERR 1053 (08S01), got %v", err)
	}
	// Never a client library's own number (2003) as a server error, which
	// libmariadb reports as "2027 Received malformed packet".
	out, err := cliAs(t, down, "nat", "nat-secret")
	if e := testenv.ParseMariaDBError([]byte(out)); err == nil || e == nil || e.Code != 1053 {
		t.Fatalf("mariadb CLI, database down: %v %q", err, out)
	}
}
