package testenv_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestPGStarts(t *testing.T) {
	t.Parallel()
	pg := testenv.PG(t)
	if again := testenv.PG(t); again != pg {
		t.Fatal("PG returned a different server on the second call")
	}
	conn := pg.Connect(t, "postgres")
	for setting, want := range map[string]string{
		"ssl":                 "on",
		"password_encryption": "scram-sha-256",
		"listen_addresses":    "127.0.0.1",
		"max_connections":     "300",
		"fsync":               "off",
		"server_encoding":     "UTF8",
		"TimeZone":            "UTC",
	} {
		if got := queryString(t, conn, "SELECT current_setting($1)", setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got := queryString(t, conn, "SELECT current_user"); got != pg.SuperUser {
		t.Errorf("current_user = %q, want %q", got, pg.SuperUser)
	}
	if !strings.HasPrefix(pg.Addr(), "127.0.0.1:") || pg.Port == 0 {
		t.Errorf("Addr() = %q", pg.Addr())
	}
}

func TestUserOverTCPWithSCRAM(t *testing.T) {
	t.Parallel()
	pg := testenv.PG(t)
	db := pg.CreateDatabase(t)
	user, password := pg.CreateUser(t, "App")
	if !strings.HasPrefix(user, "app_") || strings.ToLower(user) != user {
		t.Errorf("user %q: want lowercase with prefix app_", user)
	}

	super := pg.Connect(t, "postgres")
	if got := queryString(t, super, "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = $1", user); got != "SCRAM-SHA-256$" {
		t.Errorf("stored password starts with %q, want a SCRAM verifier", got)
	}

	cfg, err := pg.ConnConfig(user, password, db)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect as %s over TCP: %v", user, err)
	}
	defer conn.Close(context.Background())
	if got := queryString(t, conn, "SELECT current_user || '@' || current_database()"); got != user+"@"+db {
		t.Errorf("session is %q, want %s@%s", got, user, db)
	}

	cfg.Password = "wrong"
	_, err = pgx.ConnectConfig(t.Context(), cfg)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("wrong password: err = %v, want SQLSTATE 28P01", err)
	}
}

func TestTLSVerifyFull(t *testing.T) {
	t.Parallel()
	pg := testenv.PG(t)
	user, password := pg.CreateUser(t, "tls")

	// The path a user of libpq-style settings takes: sslmode=verify-full against "localhost".
	cfg, err := pgx.ParseConfig("host=localhost port=" + strconv.Itoa(pg.Port) +
		" dbname=postgres sslmode=verify-full sslrootcert=" + pg.CA.CertFile + " user=" + user)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = password
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("verify-full: %v", err)
	}
	defer conn.Close(context.Background())
	if got := queryString(t, conn, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); got != "true" {
		t.Errorf("pg_stat_ssl.ssl = %s, want true", got)
	}

	// A client that trusts another CA must refuse the server.
	other := testenv.TestCA(t)
	cfg2, err := pg.ConnConfig(user, password, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	cfg2.TLSConfig = other.ClientTLSConfig("localhost")
	_, err = pgx.ConnectConfig(t.Context(), cfg2)
	var unknownAuthority x509.UnknownAuthorityError
	if !errors.As(err, &unknownAuthority) {
		t.Fatalf("connect trusting another CA: err = %v, want x509.UnknownAuthorityError", err)
	}

	// And one that trusts the server's CA succeeds through ClientTLSConfig as well.
	cfg2.TLSConfig = pg.CA.ClientTLSConfig("localhost")
	conn2, err := pgx.ConnectConfig(t.Context(), cfg2)
	if err != nil {
		t.Fatalf("connect with ClientTLSConfig: %v", err)
	}
	conn2.Close(context.Background())
}

func TestCleanup(t *testing.T) {
	t.Parallel()
	pg := testenv.PG(t)
	var dbs, users []string
	var openConns []*pgx.Conn

	t.Run("create", func(t *testing.T) {
		// db1 before the user: the user is dropped first, while it still owns a table in db1.
		db1 := pg.CreateDatabase(t)
		user, password := pg.CreateUser(t, "owner")
		db2 := pg.CreateDatabase(t)
		dbs, users = []string{db1, db2}, []string{user}
		pg.ExecIn(t, db1, "GRANT CREATE ON SCHEMA public TO "+pgx.Identifier{user}.Sanitize())
		pg.ExecIn(t, db2, "GRANT CREATE ON SCHEMA public TO "+pgx.Identifier{user}.Sanitize())
		for _, db := range dbs {
			cfg, err := pg.ConnConfig(user, password, db)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := pgx.ConnectConfig(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(t.Context(), "CREATE TABLE owned (id int)"); err != nil {
				t.Fatal(err)
			}
			// Left open on purpose: cleanup must not wait for it.
			openConns = append(openConns, conn)
		}
	})
	for _, c := range openConns {
		c.Close(context.Background())
	}

	conn := pg.Connect(t, "postgres")
	for _, db := range dbs {
		if got := queryString(t, conn, "SELECT count(*)::text FROM pg_database WHERE datname = $1", db); got != "0" {
			t.Errorf("database %s still exists", db)
		}
	}
	for _, u := range users {
		if got := queryString(t, conn, "SELECT count(*)::text FROM pg_roles WHERE rolname = $1", u); got != "0" {
			t.Errorf("role %s still exists", u)
		}
	}
}

// Not parallel: it sets PG* variables in the process environment, which Command must not pass on.
func TestCommandPsql(t *testing.T) {
	pg := testenv.PG(t)
	db := pg.CreateDatabase(t)
	user, password := pg.CreateUser(t, "psql")
	t.Setenv("PGHOST", "/nonexistent")
	t.Setenv("PGPORT", "1")
	t.Setenv("PGUSER", "nobody")

	for _, sslmode := range []string{"disable", "verify-full"} {
		t.Run(sslmode, func(t *testing.T) {
			cmd := testenv.Command(t.Context(), pg.Bin("psql"), pg.ClientEnv(user, password, db, sslmode),
				"-X", "-At", "-c", "SELECT 1, current_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())")
			if slices.Contains(cmd.Env, "PGHOST=/nonexistent") {
				t.Fatalf("Command inherited PGHOST: %q", cmd.Env)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			wantSSL := map[string]string{"disable": "f", "verify-full": "t"}[sslmode]
			if got, want := strings.TrimSpace(string(out)), "1|"+user+"|"+wantSSL; got != want {
				t.Errorf("psql printed %q, want %q", got, want)
			}
		})
	}
}

func TestRequireBinary(t *testing.T) {
	t.Parallel()
	pg := testenv.PG(t)
	if got := testenv.RequireBinary(t, "pgbench"); got == "" {
		t.Fatal("RequireBinary(pgbench) returned empty path")
	}
	if _, err := os.Stat(pg.Bin("pgbench")); err != nil {
		t.Errorf("Bin(pgbench): %v", err)
	}
}

func TestSecondServerSideBySide(t *testing.T) {
	t.Parallel()
	pg := testenv.PG(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	other, err := testenv.StartPostgres(ctx, testenv.PostgresOptions{ExtraConfig: []string{"work_mem = '7MB'"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Stop() }) // in case of an early failure; Stop is idempotent
	if other.Port == pg.Port || other.DataDir == pg.DataDir || other.SuperPassword == pg.SuperPassword {
		t.Fatalf("second server shares port, dir or password with the first: %+v vs %+v", other, pg)
	}

	cfg, err := other.ConnConfig(other.SuperUser, other.SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, conn, "SHOW work_mem"); got != "7MB" {
		t.Errorf("work_mem = %q, want 7MB from ExtraConfig", got)
	}
	conn.Close(ctx)
	// The shared server still answers.
	if got := queryString(t, pg.Connect(t, "postgres"), "SELECT 'ok'"); got != "ok" {
		t.Errorf("shared server: %q", got)
	}

	if err := other.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := other.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(other.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data dir after Stop: %v, want it gone", err)
	}
	if _, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		t.Error("server still accepts connections after Stop")
	}
}

func TestCAIssue(t *testing.T) {
	t.Parallel()
	ca := testenv.TestCA(t)
	dir := t.TempDir()
	certFile, keyFile, err := ca.Issue(dir, "db.example", "10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key mode %v, want 0600", perm)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"db.example", "10.1.2.3"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, DNSName: "other.example"}); err == nil {
		t.Error("certificate verified for a host it was not issued for")
	}
	caPEM, err := os.ReadFile(ca.CertFile)
	if err != nil || !bytes.Equal(caPEM, ca.CertPEM) {
		t.Errorf("CertFile does not hold CertPEM (err %v)", err)
	}
	// A second leaf in the same dir gets its own files.
	certFile2, _, err := ca.Issue(dir, "db.example")
	if err != nil || certFile2 == certFile {
		t.Errorf("second Issue: %q, %v", certFile2, err)
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	port, err := testenv.FreePort()
	if err != nil || port <= 0 || port > 65535 {
		t.Fatalf("FreePort() = %d, %v", port, err)
	}
}

func TestStartFailureReportsLog(t *testing.T) {
	t.Parallel()
	testenv.PG(t) // skips or fails like the others when PostgreSQL is missing
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p, err := testenv.StartPostgres(ctx, testenv.PostgresOptions{ExtraConfig: []string{"credswap_no_such_setting = 1"}})
	if err == nil {
		p.Stop()
		t.Fatal("StartPostgres succeeded with an invalid setting")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "credswap_no_such_setting") {
		t.Errorf("error does not carry the server log: %v", err)
	}
}
