//go:build linux

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/bench/internal/benchkit"
	"github.com/credswap/credswap/internal/testenv"
)

const (
	benchDB   = "bench"
	benchUser = "bench"
	appName   = "credswap-bench" // application_name of the benchmark's own logins

	dialTimeout  = 5 * time.Second
	readyTimeout = 30 * time.Second
	pollInterval = 50 * time.Millisecond
)

// setupDatabase creates the role and database "bench" on pg, the role with a random password
// (stored as scram-sha-256: the server's password_encryption), and loads it with
// `pgbench -i -s scale` over TCP as that role. It returns the role's login.
func setupDatabase(ctx context.Context, pg *testenv.Postgres, scale int) (benchkit.Login, error) {
	password, err := benchkit.RandomHex(16)
	if err != nil {
		return benchkit.Login{}, err
	}
	cfg, err := pg.ConnConfig(pg.SuperUser, pg.SuperPassword, "postgres")
	if err != nil {
		return benchkit.Login{}, err
	}
	connCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(connCtx, cfg)
	if err != nil {
		return benchkit.Login{}, fmt.Errorf("connect to the test server as %s: %w", pg.SuperUser, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	role := pgx.Identifier{benchUser}.Sanitize()
	// Utility statements take no parameters; the password is hex and kept out of error messages.
	if _, err := conn.Exec(connCtx, "CREATE ROLE "+role+" LOGIN PASSWORD '"+password+"'"); err != nil {
		return benchkit.Login{}, fmt.Errorf("create role %s: %w", benchUser, err)
	}
	if _, err := conn.Exec(connCtx, "CREATE DATABASE "+pgx.Identifier{benchDB}.Sanitize()+" OWNER "+role); err != nil {
		return benchkit.Login{}, fmt.Errorf("create database %s: %w", benchDB, err)
	}
	if err := benchkit.CheckSCRAM(connCtx, conn, benchUser); err != nil {
		return benchkit.Login{}, err
	}

	l := benchkit.Login{User: benchUser, Password: password}
	if err := benchkit.InitPgbench(ctx, pg.Bin("pgbench"), benchkit.LibpqEnv(pg.Addr(), l, benchDB), scale); err != nil {
		return benchkit.Login{}, err
	}
	return l, nil
}

// waitLogin logs in to addr until it works, proc exits, readyTimeout passes or ctx ends.
func waitLogin(ctx context.Context, proc *benchkit.Process, addr string, l benchkit.Login) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cfg, err := benchkit.PgConnConfig(addr, l, benchDB, dialTimeout, appName)
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
		case <-proc.Done():
			return fmt.Errorf("%s exited during start (%v); log:\n%s", proc.Name(), proc.WaitErr(), benchkit.Indent(proc.LogTail()))
		case <-ctx.Done():
			return fmt.Errorf("%s: no login on %s within %v: %w (last attempt: %v); log:\n%s",
				proc.Name(), addr, readyTimeout, context.Cause(ctx), err, benchkit.Indent(proc.LogTail()))
		case <-tick.C:
		}
	}
}
