//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credswap/credswap/bench/internal/benchkit"
)

// The state every idle session of part 1 holds, and how it is checked.
const (
	searchPath       = "public, pg_catalog"
	statementTimeout = "30s"
	listenChannel    = "swapbench"
	stmtWho          = "swapbench_who"
	stmtBalance      = "swapbench_balance"
	openParallelism  = 8
	checkTimeout     = 30 * time.Second
)

// idleSession is one client connection through the proxy holding session state. It is used by
// one goroutine at a time.
type idleSession struct {
	n      int
	conn   *pgx.Conn
	tenant string // its app.tenant
}

// sessionConfig is a pgx configuration for the local login through the proxy at addr, built
// from the arguments alone (no PG* environment, no passfile, password in the struct). Queries
// without a prepared statement use the simple protocol, so the only prepared statements a
// session holds are the two it prepares itself.
func sessionConfig(addr string, l benchkit.Login) (*pgx.ConnConfig, error) {
	connString, err := benchkit.ConnString(addr, l.User, benchDB, dialTimeout)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("connection config: %w", err)
	}
	benchkit.IsolateConfig(&cfg.Config, l.Password, tool)
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cfg.StatementCacheCapacity, cfg.DescriptionCacheCapacity = 0, 0
	return cfg, nil
}

// openSessions opens k sessions through the proxy and gives each its state. On error the
// sessions opened so far are closed.
func openSessions(ctx context.Context, cfg *pgx.ConnConfig, k int) ([]*idleSession, error) {
	sessions := make([]*idleSession, k)
	errs := make([]error, k)
	sem := make(chan struct{}, openParallelism)
	var wg sync.WaitGroup
	for i := range k {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sessions[i], errs[i] = openSession(ctx, cfg, i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeSessions(sessions)
		return nil, err
	}
	return sessions, nil
}

func openSession(ctx context.Context, cfg *pgx.ConnConfig, n int) (*idleSession, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("session %d: connect through credswap: %w", n, err)
	}
	s := &idleSession{n: n, conn: conn, tenant: fmt.Sprintf("tenant-%d", n)}
	for _, q := range []string{
		"SET search_path TO " + searchPath,
		"SET statement_timeout = " + quoteLiteral(statementTimeout),
		"SET app.tenant = " + quoteLiteral(s.tenant),
		"LISTEN " + listenChannel,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("session %d: %s: %w", n, q, err)
		}
	}
	for name, sql := range map[string]string{
		stmtWho: "SELECT session_user::text, current_setting('app.tenant'), current_setting('search_path')," +
			" current_setting('statement_timeout')",
		stmtBalance: "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
	} {
		if _, err := conn.Prepare(ctx, name, sql); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("session %d: prepare %s: %w", n, name, err)
		}
	}
	return s, nil
}

// check verifies that the session is logged in to the database as user and still has its
// state: its settings, both prepared statements, and (with payload non-empty) that a
// notification with payload on its channel reached it.
func (s *idleSession) check(ctx context.Context, user, payload string) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var gotUser, tenant, path, timeout string
	if err := s.conn.QueryRow(ctx, stmtWho).Scan(&gotUser, &tenant, &path, &timeout); err != nil {
		return fmt.Errorf("session %d: execute %s: %w", s.n, stmtWho, err)
	}
	var errs []error
	if gotUser != user {
		errs = append(errs, fmt.Errorf("session_user is %s, want %s", gotUser, user))
	}
	if tenant != s.tenant {
		errs = append(errs, fmt.Errorf("app.tenant is %q, want %q", tenant, s.tenant))
	}
	if path != searchPath {
		errs = append(errs, fmt.Errorf("search_path is %q, want %q", path, searchPath))
	}
	if timeout != statementTimeout {
		errs = append(errs, fmt.Errorf("statement_timeout is %q, want %q", timeout, statementTimeout))
	}
	var balance int64
	if err := s.conn.QueryRow(ctx, stmtBalance, s.n+1).Scan(&balance); err != nil {
		errs = append(errs, fmt.Errorf("execute %s: %w", stmtBalance, err))
	}
	if payload != "" {
		n, err := s.conn.WaitForNotification(ctx)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("no notification on %s: %w", listenChannel, err))
		case n.Channel != listenChannel || n.Payload != payload:
			errs = append(errs, fmt.Errorf("notification %s %q, want %s %q", n.Channel, n.Payload, listenChannel, payload))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("session %d: %w", s.n, err)
	}
	return nil
}

// checkSessions checks every session after a rotation to user: one of them sends a NOTIFY
// with payload, then each is checked in turn.
func checkSessions(ctx context.Context, sessions []*idleSession, user, payload string) error {
	if len(sessions) == 0 {
		return nil
	}
	nctx, cancel := context.WithTimeout(ctx, checkTimeout)
	_, err := sessions[0].conn.Exec(nctx, "SELECT pg_notify($1, $2)", listenChannel, payload)
	cancel()
	if err != nil {
		return fmt.Errorf("session 0: notify: %w", err)
	}
	var errs []error
	for _, s := range sessions {
		if err := s.check(ctx, user, payload); err != nil {
			errs = append(errs, err)
			if len(errs) == 5 {
				errs = append(errs, errors.New("(further sessions not checked)"))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// closeSessions closes every non-nil session.
func closeSessions(sessions []*idleSession) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range sessions {
		if s != nil {
			_ = s.conn.Close(ctx)
		}
	}
}
