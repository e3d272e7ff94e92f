package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	connectTimeout = 10 * time.Second
	cleanupTimeout = 30 * time.Second
	maxIdentLen    = 63 // NAMEDATALEN-1
)

// connConfig builds a pgx configuration from the arguments alone: every setting that ParseConfig
// could take from PG* variables, a passfile or a service file is overridden, and the password is
// set in the struct rather than in a connection string. host is an IP or name for TCP, or a
// socket directory; tlsConfig nil means no TLS.
func connConfig(host string, port int, user, password, database string, tlsConfig *tls.Config) (*pgx.ConnConfig, error) {
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=%d"+
		" target_session_attrs=any min_protocol_version=3.0 max_protocol_version=3.0 channel_binding=prefer",
		quoteDSN(host), port, quoteDSN(user), quoteDSN(database), int(connectTimeout/time.Second))
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("testenv: connection config: %w", err)
	}
	c := &cfg.Config
	c.Password = password
	c.TLSConfig = tlsConfig
	c.Fallbacks = nil
	c.SSLNegotiation = ""
	c.SSLCertMode = "allow"
	c.RuntimeParams = map[string]string{"application_name": "credswap-testenv"}
	c.KerberosSrvName, c.KerberosSpn = "", ""
	c.RequireAuth = ""
	c.ValidateConnect, c.AfterConnect = nil, nil
	return cfg, nil
}

// quoteDSN quotes s as a keyword/value connection string value.
func quoteDSN(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// ConnConfig returns a pgx configuration for user over TCP to database, without TLS. Nothing is
// taken from the environment. Set TLSConfig (for example from CA.ClientTLSConfig("localhost")) to
// connect with TLS.
func (p *Postgres) ConnConfig(user, password, database string) (*pgx.ConnConfig, error) {
	return connConfig(p.Host, p.Port, user, password, database, nil)
}

// superConfig is the superuser over the unix socket, where pg_hba trusts local connections.
func (p *Postgres) superConfig(database string) (*pgx.ConnConfig, error) {
	return connConfig(p.SocketDir, p.Port, p.SuperUser, "", database, nil)
}

// Connect returns a pgx connection as the superuser (over the unix socket) to database, closed at
// cleanup.
func (p *Postgres) Connect(t testing.TB, database string) *pgx.Conn {
	t.Helper()
	conn, err := p.connectSuper(t.Context(), database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

func (p *Postgres) connectSuper(ctx context.Context, database string) (*pgx.Conn, error) {
	cfg, err := p.superConfig(database)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("testenv: connect as %s to %q: %w", p.SuperUser, database, err)
	}
	return conn, nil
}

// Exec runs sql with args as the superuser in the database "postgres" and fails the test on
// error. Without args, sql may hold several statements.
func (p *Postgres) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	p.ExecIn(t, "postgres", sql, args...)
}

// ExecIn is [Postgres.Exec] in database.
func (p *Postgres) ExecIn(t testing.TB, database, sql string, args ...any) {
	t.Helper()
	if err := p.exec(t.Context(), database, strconv.Quote(sql), sql, args...); err != nil {
		t.Fatal(err)
	}
}

// exec runs sql as the superuser on a connection of its own, so callers may run in parallel.
// Errors name the statement by what, which must not contain secrets.
func (p *Postgres) exec(ctx context.Context, database, what, sql string, args ...any) error {
	conn, err := p.connectSuper(ctx, database)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("testenv: exec %s in %q: %w", what, database, err)
	}
	return nil
}

// CreateDatabase creates a database with a unique name, owned by the superuser and dropped
// (WITH (FORCE), so connections left open do not block it) at cleanup, and returns its name.
func (p *Postgres) CreateDatabase(t testing.TB) string {
	t.Helper()
	name, err := uniqueName("testdb")
	if err != nil {
		t.Fatal(err)
	}
	create := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if err := p.exec(t.Context(), "postgres", create, create); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		drop := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
		if err := p.exec(ctx, "postgres", drop, drop); err != nil {
			t.Error(err)
		}
	})
	return name
}

// CreateUser creates a LOGIN role whose unique name starts with prefix (lowercased) and returns
// its name and random password, stored as password_encryption says (scram-sha-256 unless the
// server's ExtraConfig changes it). At cleanup its sessions are terminated
// and the role dropped; if it still owns objects or holds privileges, these are dropped (DROP
// OWNED) in every database first.
func (p *Postgres) CreateUser(t testing.TB, prefix string) (user, password string) {
	t.Helper()
	user, err := uniqueName(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if password, err = randomHex(16); err != nil {
		t.Fatal(err)
	}
	// Utility statements take no parameters; the password is hex, quoted all the same, and kept
	// out of error messages.
	create := fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD ", pgx.Identifier{user}.Sanitize())
	if err := p.exec(t.Context(), "postgres", create+"'…'", create+quoteLiteral(password)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := p.dropRole(ctx, user); err != nil {
			t.Error(err)
		}
	})
	return user, password
}

// dropRole terminates the role's sessions and drops it, tolerating a role already gone.
func (p *Postgres) dropRole(ctx context.Context, role string) error {
	conn, err := p.connectSuper(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := terminateSessions(ctx, conn, role); err != nil {
		return err
	}
	drop := "DROP ROLE IF EXISTS " + pgx.Identifier{role}.Sanitize()
	_, err = conn.Exec(ctx, drop)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "2BP01" { // dependent_objects_still_exist
		if err := p.dropOwned(ctx, conn, role); err != nil {
			return err
		}
		_, err = conn.Exec(ctx, drop)
	}
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object: dropped concurrently
		err = nil
	}
	if err != nil {
		return fmt.Errorf("testenv: drop role %q: %w", role, err)
	}
	return nil
}

// terminateSessions ends every session of role and waits until they are gone, so they cannot
// race a DROP that follows.
func terminateSessions(ctx context.Context, conn *pgx.Conn, role string) error {
	for {
		var left int
		err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()`, role).Scan(&left)
		if err != nil {
			return fmt.Errorf("testenv: terminate sessions of %q: %w", role, err)
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testenv: terminate sessions of %q: %d left: %w", role, left, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dropOwned runs DROP OWNED BY role in every database that accepts connections.
func (p *Postgres) dropOwned(ctx context.Context, conn *pgx.Conn, role string) error {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn`)
	if err != nil {
		return fmt.Errorf("testenv: list databases: %w", err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("testenv: list databases: %w", err)
	}
	for _, db := range dbs {
		dropOwned := "DROP OWNED BY " + pgx.Identifier{role}.Sanitize()
		err := p.exec(ctx, db, dropOwned, dropOwned)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "3D000" || pgErr.Code == "42704") { // database or role gone meanwhile
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// uniqueName returns prefix (lowercased, trimmed to fit) + "_" + 12 random hex digits.
func uniqueName(prefix string) (string, error) {
	suffix, err := randomHex(6)
	if err != nil {
		return "", err
	}
	prefix = strings.ToLower(prefix)
	if n := maxIdentLen - len(suffix) - 1; len(prefix) > n {
		prefix = prefix[:n]
	}
	if prefix == "" {
		return "u" + suffix, nil
	}
	return prefix + "_" + suffix, nil
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings is on).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Command returns a command running a PostgreSQL client program (a path, such as
// p.Bin("psql"), or a name looked up on PATH) with a clean environment: PATH, HOME, LANG=C.UTF-8
// and env only. No PG* variable is inherited, so the caller sets PGHOST, PGPORT, PGUSER,
// PGPASSWORD, PGSSLMODE and the like explicitly. HOME is kept, so the user's ~/.psqlrc and
// ~/.pgpass still apply; pass -X to psql to skip the former.
func Command(ctx context.Context, bin string, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"LANG=C.UTF-8",
	}, env...)
	return cmd
}

// ClientEnv returns the libpq environment for user over TCP to database: PGHOST, PGPORT,
// PGUSER, PGPASSWORD, PGDATABASE and sslmode. For sslmode verify-ca or verify-full it also sets
// PGSSLROOTCERT to the server's CA and PGHOST to "localhost", the name in the certificate.
func (p *Postgres) ClientEnv(user, password, database, sslmode string) []string {
	host := p.Host
	env := []string{"PGSSLMODE=" + sslmode}
	if sslmode == "verify-ca" || sslmode == "verify-full" {
		host = "localhost"
		env = append(env, "PGSSLROOTCERT="+p.CA.CertFile)
	}
	return append(env,
		"PGHOST="+host,
		"PGPORT="+strconv.Itoa(p.Port),
		"PGUSER="+user,
		"PGPASSWORD="+password,
		"PGDATABASE="+database,
	)
}
