package rotate

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy/postgres"
)

// Database changes logins in one kind of database. Statements run as the
// admin credential given to each call.
type Database interface {
	// CanLogin reports whether user may log in.
	CanLogin(ctx context.Context, admin creds.Credential, user string) (bool, error)
	// SetPassword gives user a new password; with login it also lets the
	// user log in (an admin may do that, a user changing its own password
	// may not).
	SetPassword(ctx context.Context, admin creds.Credential, user, password string, login bool) error
	// Lock stops user from logging in; with terminate it also ends the
	// user's sessions.
	Lock(ctx context.Context, admin creds.Credential, user string, terminate bool) error
	// Verify performs a test login; a refusal wraps creds.ErrRejected.
	Verify(ctx context.Context, c creds.Credential) error
	// Sessions lists who holds sessions of user in the database, every
	// client of the database counted (not only this proxy's).
	Sessions(ctx context.Context, admin creds.Credential, user string) ([]Holder, error)
}

// Holder is a client address (and, on PostgreSQL, application name) that
// holds sessions of a user in the database.
type Holder struct {
	Client      string `json:"client"`
	Application string `json:"application,omitempty"`
	Sessions    int    `json:"sessions"`
}

// Postgres implements Database for PostgreSQL through the backend's
// dialer (explicit connection settings, the backend's TLS).
type Postgres struct {
	Dialer *postgres.Dialer
}

func (p Postgres) exec(ctx context.Context, admin creds.Credential, sql string) error {
	conn, err := p.Dialer.Connect(ctx, admin, "")
	if err != nil {
		return fmt.Errorf("connecting as %s: %w", admin.Username, err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql).ReadAll()
	return err
}

// CanLogin implements Database.
func (p Postgres) CanLogin(ctx context.Context, admin creds.Credential, user string) (bool, error) {
	conn, err := p.Dialer.Connect(ctx, admin, "")
	if err != nil {
		return false, fmt.Errorf("connecting as %s: %w", admin.Username, err)
	}
	defer conn.Close(context.Background())
	res := conn.ExecParams(ctx, "SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = $1", [][]byte{[]byte(user)}, nil, nil, nil).Read()
	if res.Err != nil {
		return false, res.Err
	}
	if len(res.Rows) != 1 {
		return false, fmt.Errorf("role %s does not exist", user)
	}
	return string(res.Rows[0][0]) == "t", nil
}

// SetPassword implements Database. The password travels as a SCRAM
// verifier computed here, so it appears in no server log.
func (p Postgres) SetPassword(ctx context.Context, admin creds.Credential, user, password string, login bool) error {
	v, err := scramVerifier(password)
	if err != nil {
		return err
	}
	with := "WITH"
	if login {
		with = "WITH LOGIN"
	}
	return p.exec(ctx, admin, fmt.Sprintf("ALTER ROLE %s %s PASSWORD %s", postgres.QuoteIdent(user), with, postgres.QuoteLiteral(v)))
}

// Lock implements Database.
func (p Postgres) Lock(ctx context.Context, admin creds.Credential, user string, terminate bool) error {
	sql := fmt.Sprintf("ALTER ROLE %s WITH NOLOGIN", postgres.QuoteIdent(user))
	if terminate {
		sql += fmt.Sprintf("; SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = %s AND pid <> pg_catalog.pg_backend_pid()",
			postgres.QuoteLiteral(user))
	}
	return p.exec(ctx, admin, sql)
}

// Sessions implements Database from pg_stat_activity (the admin needs
// pg_read_all_stats or superuser to see other users' client addresses).
func (p Postgres) Sessions(ctx context.Context, admin creds.Credential, user string) ([]Holder, error) {
	conn, err := p.Dialer.Connect(ctx, admin, "")
	if err != nil {
		return nil, fmt.Errorf("connecting as %s: %w", admin.Username, err)
	}
	defer conn.Close(context.Background())
	rr := conn.ExecParams(ctx, `SELECT coalesce(host(client_addr), 'local'), coalesce(application_name, ''), count(*)::text
		FROM pg_catalog.pg_stat_activity WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid()
		GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2`, [][]byte{[]byte(user)}, nil, nil, nil).Read()
	if rr.Err != nil {
		return nil, rr.Err
	}
	out := make([]Holder, 0, len(rr.Rows))
	for _, row := range rr.Rows {
		n, _ := strconv.Atoi(string(row[2]))
		out = append(out, Holder{Client: string(row[0]), Application: string(row[1]), Sessions: n})
	}
	return out, nil
}

// Verify implements Database.
func (p Postgres) Verify(ctx context.Context, c creds.Credential) error {
	return p.Dialer.Verify(ctx, c)
}

// isRejected reports whether err is a refused login.
func isRejected(err error) bool { return errors.Is(err, creds.ErrRejected) }
