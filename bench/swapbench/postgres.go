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

	"github.com/credswap/credswap/internal/testenv"
)

const (
	benchDB    = "bench"
	ownerRole  = "bench_owner" // NOLOGIN; owns the database and the pgbench tables
	clientUser = "bench"       // the local user clients log in to credswap with

	pgStartTimeout = 2 * time.Minute
	initTimeout    = 15 * time.Minute // pgbench -i at the default scale 10 takes seconds
	dialTimeout    = 10 * time.Second
	readyTimeout   = 30 * time.Second
	pollInterval   = 20 * time.Millisecond
)

// backendUsers are the two LOGIN roles a rotation alternates between.
var backendUsers = [2]string{"swap_a", "swap_b"}

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

// dbAdmin runs the superuser's statements: setting up and rotating the backend users. It holds
// one connection and is used by one goroutine.
type dbAdmin struct {
	conn *pgx.Conn
}

func connectAdmin(ctx context.Context, pg *testenv.Postgres) (*dbAdmin, error) {
	cfg, err := pg.ConnConfig(pg.SuperUser, pg.SuperPassword, "postgres")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the test server as %s: %w", pg.SuperUser, err)
	}
	return &dbAdmin{conn: conn}, nil
}

func (a *dbAdmin) close(ctx context.Context) { _ = a.conn.Close(ctx) }

// setupDatabase creates bench_owner (NOLOGIN), the database "bench" it owns, and the two LOGIN
// roles, members of bench_owner with `SET role = 'bench_owner'` as their default, so that
// objects either creates belong to bench_owner and both can use them. It loads the database
// with `pgbench -i -s scale` as the first role over TCP and returns that role's login.
func (a *dbAdmin) setupDatabase(ctx context.Context, pg *testenv.Postgres, scale int) (login, error) {
	ctx2, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	owner := pgx.Identifier{ownerRole}.Sanitize()
	stmts := []string{
		"CREATE ROLE " + owner + " NOLOGIN",
		"CREATE DATABASE " + pgx.Identifier{benchDB}.Sanitize() + " OWNER " + owner,
	}
	for _, u := range backendUsers {
		id := pgx.Identifier{u}.Sanitize()
		stmts = append(stmts,
			"CREATE ROLE "+id+" LOGIN",
			"GRANT "+owner+" TO "+id,
			"ALTER ROLE "+id+" SET role = "+quoteLiteral(ownerRole),
		)
	}
	for _, s := range stmts {
		if _, err := a.conn.Exec(ctx2, s); err != nil {
			return login{}, fmt.Errorf("%s: %w", s, err)
		}
	}
	first, err := a.setPassword(ctx, backendUsers[0])
	if err != nil {
		return login{}, err
	}
	var stored string
	if err := a.conn.QueryRow(ctx2, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", first.User).Scan(&stored); err != nil {
		return login{}, fmt.Errorf("read the password verifier of %s: %w", first.User, err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$") {
		return login{}, fmt.Errorf("role %s: password not stored as scram-sha-256", first.User)
	}

	initCtx, cancelInit := context.WithTimeout(ctx, initTimeout)
	defer cancelInit()
	args := []string{"-i", "-q", "-s", strconv.Itoa(scale)}
	out, err := testenv.Command(initCtx, pg.Bin("pgbench"), libpqEnv(pg.Addr(), first), args...).CombinedOutput()
	if err != nil {
		return login{}, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), err, indent(lastLines(string(out), 10)))
	}
	return first, checkOwner(ctx, pg)
}

// checkOwner verifies that the pgbench tables belong to bench_owner, which both backend users
// act as.
func checkOwner(ctx context.Context, pg *testenv.Postgres) error {
	cfg, err := pg.ConnConfig(pg.SuperUser, pg.SuperPassword, benchDB)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to %s as %s: %w", benchDB, pg.SuperUser, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var owner string
	if err := conn.QueryRow(ctx, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'pgbench_accounts'").Scan(&owner); err != nil {
		return fmt.Errorf("owner of pgbench_accounts: %w", err)
	}
	if owner != ownerRole {
		return fmt.Errorf("pgbench_accounts belongs to %s, want %s", owner, ownerRole)
	}
	return nil
}

// setPassword gives user a new random password and returns the login. The password is hex, so
// quoting it is safe; it is kept out of error messages.
func (a *dbAdmin) setPassword(ctx context.Context, user string) (login, error) {
	password, err := randomHex(16)
	if err != nil {
		return login{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if _, err := a.conn.Exec(ctx, "ALTER ROLE "+pgx.Identifier{user}.Sanitize()+" PASSWORD "+quoteLiteral(password)); err != nil {
		return login{}, fmt.Errorf("ALTER ROLE %s PASSWORD '…': %w", user, err)
	}
	return login{User: user, Password: password}, nil
}

// rotator performs rotations: the other backend user gets a new password in the database, then
// the credential file is replaced. It is used by one goroutine.
type rotator struct {
	db       *dbAdmin
	credFile string
	current  login  // the credential in the file now
	gen      uint64 // the generation credswap gives current (1 at start)
}

// rotate switches the credential to the other user and returns the new login and the moment
// the file was replaced.
func (r *rotator) rotate(ctx context.Context) (login, time.Time, error) {
	next := backendUsers[0]
	if r.current.User == next {
		next = backendUsers[1]
	}
	l, err := r.db.setPassword(ctx, next)
	if err != nil {
		return login{}, time.Time{}, err
	}
	if err := writeCredential(r.credFile, l); err != nil {
		return login{}, time.Time{}, err
	}
	at := time.Now()
	r.current = l
	r.gen++
	return l, at, nil
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

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings is on).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
