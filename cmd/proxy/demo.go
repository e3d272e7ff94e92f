package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/app"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/rotate"
)

func demoCommand() *cobra.Command {
	var rotations, clients int
	var databases []string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "A self-contained tour: throwaway PostgreSQL and MariaDB, credswap in front, client load, live rotations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDemo(ctx, cmd.OutOrStdout(), databases, rotations, clients)
		},
	}
	cmd.Flags().IntVar(&rotations, "rotations", 3, "rotations to run on each database")
	cmd.Flags().IntVar(&clients, "clients", 8, "client sessions running queries throughout")
	cmd.Flags().StringSliceVar(&databases, "databases", []string{"postgres", "mariadb"}, "databases to run the tour on: postgres, mariadb")
	return cmd
}

// runDemo runs the tour on each of databases in turn.
func runDemo(ctx context.Context, out io.Writer, databases []string, rotations, clients int) error {
	if ctx == nil {
		ctx = context.Background()
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	for i, d := range databases {
		if i > 0 {
			say("")
		}
		var err error
		switch d {
		case "postgres":
			err = runPostgresDemo(ctx, say, rotations, clients)
		case "mariadb":
			err = runMariaDBDemo(ctx, say, rotations, clients)
		default:
			err = fmt.Errorf("unknown database %q (postgres, mariadb)", d)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// runPostgresDemo starts PostgreSQL from the local binaries with two
// alternating logins, runs credswap in front of it and a steady client
// load through it, rotates the password several times with live progress,
// and prints a summary.
func runPostgresDemo(ctx context.Context, say func(string, ...any), rotations, clients int) (err error) {
	say("== PostgreSQL: alternating-users ==")
	say("starting a throwaway PostgreSQL from the local binaries…")
	pg, err := testenv.StartPostgres(ctx, testenv.PostgresOptions{})
	if err != nil {
		var missing *testenv.MissingError
		if errors.As(err, &missing) {
			return fmt.Errorf("%w (install them with scripts/deps.sh)", err)
		}
		return err
	}
	defer func() { err = errors.Join(err, pg.Stop()) }()

	dir, err := os.MkdirTemp("", "credswap-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	passA := "demo-" + randomHex(8)
	setup := []string{
		"CREATE ROLE orders_owner NOLOGIN",
		fmt.Sprintf("CREATE ROLE orders_a LOGIN PASSWORD '%s' IN ROLE orders_owner", passA),
		"CREATE ROLE orders_b NOLOGIN IN ROLE orders_owner",
		"ALTER ROLE orders_a SET role = 'orders_owner'",
		"ALTER ROLE orders_b SET role = 'orders_owner'",
		"CREATE DATABASE orders OWNER orders_owner",
	}
	if err := pgExec(ctx, pg, "postgres", setup...); err != nil {
		return err
	}
	if err := pgExec(ctx, pg, "orders", "GRANT ALL ON SCHEMA public TO orders_owner"); err != nil {
		return err
	}
	writeJSON := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	writeJSON("orders.json", map[string]string{"username": "orders_a", "password": passA})
	writeJSON("admin.json", map[string]string{"username": pg.SuperUser, "password": pg.SuperPassword})
	localPassword := "local-" + randomHex(6)
	os.WriteFile(filepath.Join(dir, "app-password"), []byte(localPassword+"\n"), 0o600)
	yaml := fmt.Sprintf(`admin: {listen: "127.0.0.1:0"}
backends:
  - name: orders
    protocol: postgres
    listen: "127.0.0.1:0"
    upstream: %q
    clients: [{user: app, password_file: app-password}]
    credential: {source: file, path: orders.json}
    drain_deadline: 10s
    rotation:
      strategy: alternating-users
      users: [orders_a, orders_b]
      admin_credential: {source: file, path: admin.json}
      publish: {to: file}
`, pg.Addr())
	a, stopApp, err := startDemoApp(ctx, dir, yaml)
	if err != nil {
		return err
	}
	defer stopApp()
	addr := a.ListenAddr("orders")
	say("credswap listens on %s (admin API on %s); backend user orders_a", addr, a.AdminAddr())

	dsn := fmt.Sprintf("postgres://app:%s@%s/orders?sslmode=disable", localPassword, addr)
	setupConn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	_, err = setupConn.Exec(ctx, "CREATE TABLE IF NOT EXISTS events (id bigserial PRIMARY KEY, client int, at timestamptz DEFAULT now())")
	setupConn.Close(ctx)
	if err != nil {
		return err
	}
	return demoLoad(ctx, say, a, "orders", rotations, clients, func(ctx context.Context) (demoSession, error) {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return demoSession{}, err
		}
		return demoSession{
			insert: func(ctx context.Context, client int) error {
				var n int64
				return conn.QueryRow(ctx, "INSERT INTO events (client) VALUES ($1) RETURNING id", client).Scan(&n)
			},
			close: func() { conn.Close(context.Background()) },
		}, nil
	})
}

// startDemoApp starts credswap from the configuration text yaml, with
// paths relative to dir, logging errors only; stop shuts it down.
func startDemoApp(ctx context.Context, dir, yaml string) (a *app.App, stop func(), err error) {
	cfg, err := config.Parse([]byte(yaml), config.ParseOptions{BaseDir: dir})
	if err != nil {
		return nil, nil, err
	}
	logCfg := zap.NewDevelopmentConfig()
	logCfg.Level = zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	log, _ := logCfg.Build()
	a, err = app.Start(ctx, cfg, app.Options{Logger: log, Version: buildVersion(), Build: binaryInfo()})
	if err != nil {
		return nil, nil, err
	}
	return a, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a.Shutdown(sctx)
		cancel()
	}, nil
}

// demoSession is one client connection of the demo's load.
type demoSession struct {
	insert func(ctx context.Context, client int) error
	close  func()
}

// demoLoad runs clients sessions inserting rows through backend name of a
// while rotating its password rotations times, printing each rotation's
// phases, and fails if any query failed.
func demoLoad(ctx context.Context, say func(string, ...any), a *app.App, name string, rotations, clients int, open func(context.Context) (demoSession, error)) error {
	var queries, failures atomic.Int64
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop := func() {
		stopLoad()
		wg.Wait()
	}
	for i := range clients {
		sess, err := open(ctx)
		if err != nil {
			stop()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sess.close()
			for loadCtx.Err() == nil {
				err := sess.insert(loadCtx, i)
				if err != nil && loadCtx.Err() == nil {
					failures.Add(1)
				} else if err == nil {
					queries.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	say("%d client sessions are inserting rows through credswap", clients)
	time.Sleep(2 * time.Second)

	rot := a.Rotator(name)
	moved := 0
	for i := range rotations {
		if ctx.Err() != nil {
			break
		}
		say("\nrotation %d of %d:", i+1, rotations)
		rec, err := rot.Rotate(ctx, "demo", true)
		if err != nil {
			stop()
			return err
		}
		for _, p := range rec.Phases {
			line := fmt.Sprintf("  %-15s %-8s %6s", p.Name, p.Outcome, p.EndedAt.Sub(p.StartedAt).Round(time.Millisecond))
			if p.Detail != "" {
				line += "  " + p.Detail
			}
			if p.Error != "" {
				line += "  error: " + p.Error
			}
			say("%s", line)
		}
		if rec.State != rotate.StateSucceeded {
			stop()
			return fmt.Errorf("rotation %s: %s", rec.State, rec.Error)
		}
		st := a.Backend(name).Status()
		moved += st.Drain.Results["ok"]
		say("  → %s; %d sessions on generation %d; %d queries so far, %d errors",
			rec.ToUser, st.Sessions.Total, st.Credential.Current.Generation, queries.Load(), failures.Load())
		time.Sleep(2 * time.Second)
	}
	stop()
	say("\nsummary (%s): %d queries, %d errors, %d rotations, %d session moves, no client reconnected",
		name, queries.Load(), failures.Load(), rotations, moved)
	if failures.Load() > 0 {
		return fmt.Errorf("%d queries failed", failures.Load())
	}
	return nil
}

func pgExec(ctx context.Context, pg *testenv.Postgres, db string, stmts ...string) error {
	cfg, err := pg.ConnConfig(pg.SuperUser, pg.SuperPassword, db)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
