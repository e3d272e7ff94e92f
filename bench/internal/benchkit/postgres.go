package benchkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/internal/testenv"
)

const (
	pgStartTimeout = 2 * time.Minute
	initTimeout    = 15 * time.Minute // pgbench -i at the default scale 10 takes seconds
)

// Login is a user and password for a TCP login.
type Login struct {
	User, Password string
}

// LibpqEnv is the complete libpq environment a PostgreSQL client program (pgbench) runs with:
// TCP to addr without TLS, logging in as l to database.
func LibpqEnv(addr string, l Login, database string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{
		"PGHOST=" + host,
		"PGPORT=" + port,
		"PGUSER=" + l.User,
		"PGPASSWORD=" + l.Password,
		"PGDATABASE=" + database,
		"PGSSLMODE=disable",
	}
}

// ConnString is the keyword/value connection string for a TCP login as user to database at
// addr without TLS, with the connect timeout in whole seconds. It holds no password: IsolateConfig
// sets it in the parsed configuration.
func ConnString(addr, user, database string, connectTimeout time.Duration) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable connect_timeout=%d",
		host, port, user, database, int(connectTimeout/time.Second)), nil
}

// IsolateConfig makes a configuration parsed from a ConnString depend on its arguments alone:
// it sets password in the struct and overrides what ParseConfig takes from PG* variables or a
// passfile (TLS, fallbacks, runtime parameters, which become application_name appName only,
// and the connect hooks).
func IsolateConfig(cfg *pgconn.Config, password, appName string) {
	cfg.Password = password
	cfg.TLSConfig = nil
	cfg.Fallbacks = nil
	cfg.RuntimeParams = map[string]string{"application_name": appName}
	cfg.ValidateConnect, cfg.AfterConnect = nil, nil
}

// PgConnConfig builds a pgconn configuration for a TCP login as l to database at addr from its
// arguments alone (see ConnString and IsolateConfig).
func PgConnConfig(addr string, l Login, database string, connectTimeout time.Duration, appName string) (*pgconn.Config, error) {
	connString, err := ConnString(addr, l.User, database, connectTimeout)
	if err != nil {
		return nil, err
	}
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("connection config: %w", err)
	}
	IsolateConfig(cfg, l.Password, appName)
	return cfg, nil
}

// StartPostgres starts a throwaway PostgreSQL server (see testenv.StartPostgres), giving it two
// minutes. If a program is missing, the error ends with "; " and hint, which tells how to
// install it.
func StartPostgres(ctx context.Context, opts testenv.PostgresOptions, hint string) (*testenv.Postgres, error) {
	ctx, cancel := context.WithTimeout(ctx, pgStartTimeout)
	defer cancel()
	pg, err := testenv.StartPostgres(ctx, opts)
	if err != nil {
		var missing *testenv.MissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("%w; %s", err, hint)
		}
		return nil, err
	}
	return pg, nil
}

// CheckSCRAM verifies, over a superuser's conn, that role's password is stored as
// scram-sha-256 (the server's password_encryption).
func CheckSCRAM(ctx context.Context, conn *pgx.Conn, role string) error {
	var stored string
	if err := conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&stored); err != nil {
		return fmt.Errorf("read the password verifier of %s: %w", role, err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$") {
		return fmt.Errorf("role %s: password not stored as scram-sha-256", role)
	}
	return nil
}

// InitPgbench loads the pgbench tables with `pgbench -i -q -s scale`, run as pgbenchBin with the
// libpq environment env (see LibpqEnv) and no other, within 15 minutes. An error carries the
// tail of pgbench's output.
func InitPgbench(ctx context.Context, pgbenchBin string, env []string, scale int) error {
	ctx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	args := []string{"-i", "-q", "-s", strconv.Itoa(scale)}
	out, err := testenv.Command(ctx, pgbenchBin, env, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), err, Indent(LastLines(string(out), 10)))
	}
	return nil
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// RandomHex returns n random bytes in lowercase hex.
func RandomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}
