//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	benchDB   = "bench"
	benchUser = "bench"

	pgStartTimeout = 2 * time.Minute
	initTimeout    = 15 * time.Minute // pgbench -i at the default scale 10 takes seconds
	dialTimeout    = 5 * time.Second
	readyTimeout   = 30 * time.Second
	pollInterval   = 50 * time.Millisecond
)

// login is a user and password for a TCP login.
type login struct {
	User, Password string
}

// libpqEnv is the complete libpq environment pgbench runs with: TCP to addr without TLS.
func libpqEnv(addr string, l login) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{
		"PGHOST=" + host,
		"PGPORT=" + port,
		"PGUSER=" + l.User,
		"PGPASSWORD=" + l.Password,
		"PGDATABASE=" + benchDB,
		"PGSSLMODE=disable",
	}
}

// setupDatabase creates the role and database "bench" on pg, the role with a random password
// (stored as scram-sha-256: the server's password_encryption), and loads it with
// `pgbench -i -s scale` over TCP as that role. It returns the role's login.
func setupDatabase(ctx context.Context, pg *testenv.Postgres, scale int) (login, error) {
	password, err := randomHex(16)
	if err != nil {
		return login{}, err
	}
	cfg, err := pg.ConnConfig(pg.SuperUser, pg.SuperPassword, "postgres")
	if err != nil {
		return login{}, err
	}
	connCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(connCtx, cfg)
	if err != nil {
		return login{}, fmt.Errorf("connect to the test server as %s: %w", pg.SuperUser, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	role := pgx.Identifier{benchUser}.Sanitize()
	// Utility statements take no parameters; the password is hex and kept out of error messages.
	if _, err := conn.Exec(connCtx, "CREATE ROLE "+role+" LOGIN PASSWORD '"+password+"'"); err != nil {
		return login{}, fmt.Errorf("create role %s: %w", benchUser, err)
	}
	if _, err := conn.Exec(connCtx, "CREATE DATABASE "+pgx.Identifier{benchDB}.Sanitize()+" OWNER "+role); err != nil {
		return login{}, fmt.Errorf("create database %s: %w", benchDB, err)
	}
	var stored string
	if err := conn.QueryRow(connCtx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", benchUser).Scan(&stored); err != nil {
		return login{}, fmt.Errorf("read the password verifier of %s: %w", benchUser, err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$") {
		return login{}, fmt.Errorf("role %s: password not stored as scram-sha-256", benchUser)
	}

	l := login{User: benchUser, Password: password}
	initCtx, cancelInit := context.WithTimeout(ctx, initTimeout)
	defer cancelInit()
	args := []string{"-i", "-q", "-s", strconv.Itoa(scale)}
	out, err := testenv.Command(initCtx, pg.Bin("pgbench"), libpqEnv(pg.Addr(), l), args...).CombinedOutput()
	if err != nil {
		return login{}, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), err, indent(lastLines(string(out), 10)))
	}
	return l, nil
}

// pgConnConfig builds a pgconn configuration for a TCP login from its arguments alone: settings
// that ParseConfig takes from PG* variables or a passfile are overridden and the password is set
// in the struct, not in the connection string.
func pgConnConfig(addr string, l login, database string) (*pgconn.Config, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable connect_timeout=%d",
		host, port, l.User, database, int(dialTimeout/time.Second)))
	if err != nil {
		return nil, fmt.Errorf("connection config: %w", err)
	}
	cfg.Password = l.Password
	cfg.TLSConfig = nil
	cfg.Fallbacks = nil
	cfg.RuntimeParams = map[string]string{"application_name": "credswap-bench"}
	cfg.ValidateConnect, cfg.AfterConnect = nil, nil
	return cfg, nil
}

// waitLogin logs in to addr until it works, proc exits, readyTimeout passes or ctx ends.
func waitLogin(ctx context.Context, proc *process, addr string, l login) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cfg, err := pgConnConfig(addr, l, benchDB)
	if err != nil {
		return err
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, dialTimeout)
		conn, err := pgconn.ConnectConfig(attemptCtx, cfg)
		cancelAttempt()
		if err == nil {
			_ = conn.Close(ctx) // the login worked; a failed goodbye does not make it unready
			return nil
		}
		select {
		case <-proc.done:
			return fmt.Errorf("%s exited during start (%v); log:\n%s", proc.name, proc.waitErr, indent(proc.logTail()))
		case <-ctx.Done():
			return fmt.Errorf("%s: no login on %s within %v: %w (last attempt: %v); log:\n%s",
				proc.name, addr, readyTimeout, context.Cause(ctx), err, indent(proc.logTail()))
		case <-tick.C:
		}
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// randomHex returns n random bytes in lowercase hex.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}
