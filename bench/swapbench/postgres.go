//go:build linux

package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credswap/credswap/bench/internal/benchkit"
	"github.com/credswap/credswap/internal/testenv"
)

const (
	benchDB    = "bench"
	ownerRole  = "bench_owner" // NOLOGIN; owns the database and the pgbench tables
	clientUser = "bench"       // the local user clients log in to credswap with

	dialTimeout  = 10 * time.Second
	readyTimeout = 30 * time.Second
	pollInterval = 20 * time.Millisecond
)

// backendUsers are the two LOGIN roles a rotation alternates between.
var backendUsers = [2]string{"swap_a", "swap_b"}

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
func (a *dbAdmin) setupDatabase(ctx context.Context, pg *testenv.Postgres, scale int) (benchkit.Login, error) {
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
			return benchkit.Login{}, fmt.Errorf("%s: %w", s, err)
		}
	}
	first, err := a.setPassword(ctx, backendUsers[0])
	if err != nil {
		return benchkit.Login{}, err
	}
	if err := benchkit.CheckSCRAM(ctx2, a.conn, first.User); err != nil {
		return benchkit.Login{}, err
	}

	if err := benchkit.InitPgbench(ctx, pg.Bin("pgbench"), benchkit.LibpqEnv(pg.Addr(), first, benchDB), scale); err != nil {
		return benchkit.Login{}, err
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
func (a *dbAdmin) setPassword(ctx context.Context, user string) (benchkit.Login, error) {
	password, err := benchkit.RandomHex(16)
	if err != nil {
		return benchkit.Login{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if _, err := a.conn.Exec(ctx, "ALTER ROLE "+pgx.Identifier{user}.Sanitize()+" PASSWORD "+quoteLiteral(password)); err != nil {
		return benchkit.Login{}, fmt.Errorf("ALTER ROLE %s PASSWORD '…': %w", user, err)
	}
	return benchkit.Login{User: user, Password: password}, nil
}

// rotator performs rotations: the other backend user gets a new password in the database, then
// the credential file is replaced. It is used by one goroutine.
type rotator struct {
	db       *dbAdmin
	credFile string
	current  benchkit.Login // the credential in the file now
	gen      uint64         // the generation credswap gives current (1 at start)
}

// rotate switches the credential to the other user and returns the new login and the moment
// the file was replaced.
func (r *rotator) rotate(ctx context.Context) (benchkit.Login, time.Time, error) {
	next := backendUsers[0]
	if r.current.User == next {
		next = backendUsers[1]
	}
	l, err := r.db.setPassword(ctx, next)
	if err != nil {
		return benchkit.Login{}, time.Time{}, err
	}
	if err := benchkit.WriteCredential(r.credFile, l); err != nil {
		return benchkit.Login{}, time.Time{}, err
	}
	at := time.Now()
	r.current = l
	r.gen++
	return l, at, nil
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings is on).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
