package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/internal/testenv"
)

// runMariaDBDemo starts MariaDB from the local binaries with one
// application user, runs credswap in front of it (protocol mysql) with a
// steady client load through it, and rotates the user's password with
// MariaDB's dual passwords: the new password is added beside the old one,
// every session moves, then the old one is discarded.
func runMariaDBDemo(ctx context.Context, say func(string, ...any), rotations, clients int) (err error) {
	say("== MariaDB: dual-password ==")
	say("starting a throwaway MariaDB from the local binaries…")
	m, err := testenv.StartMariaDB(ctx, testenv.MariaDBOptions{})
	if err != nil {
		var missing *testenv.MissingError
		if errors.As(err, &missing) {
			return fmt.Errorf("%w (install them with scripts/deps.sh)", err)
		}
		return err
	}
	defer func() { err = errors.Join(err, m.Stop()) }()

	dir, err := os.MkdirTemp("", "credswap-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pass := "demo-" + randomHex(8)
	if err := mariaExec(ctx, m, "root", m.RootPassword, "",
		"CREATE DATABASE shop",
		fmt.Sprintf("CREATE USER 'shop_app'@'%%' IDENTIFIED BY '%s'", pass),
		"GRANT ALL ON shop.* TO 'shop_app'@'%'",
	); err != nil {
		return err
	}
	writeJSON := func(name string, v any) {
		b, _ := json.Marshal(v)
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}
	writeJSON("shop.json", map[string]string{"username": "shop_app", "password": pass})
	writeJSON("admin.json", map[string]string{"username": "root", "password": m.RootPassword})
	localPassword := "local-" + randomHex(6)
	os.WriteFile(filepath.Join(dir, "app-password"), []byte(localPassword+"\n"), 0o600)
	yaml := fmt.Sprintf(`admin: {listen: "127.0.0.1:0"}
backends:
  - name: shop
    protocol: mysql
    listen: "127.0.0.1:0"
    upstream: %q
    clients: [{user: app, password_file: app-password}]
    credential: {source: file, path: shop.json}
    drain_deadline: 10s
    rotation:
      strategy: dual-password
      admin_credential: {source: file, path: admin.json}
      publish: {to: file}
`, m.Addr())
	a, stopApp, err := startDemoApp(ctx, dir, yaml)
	if err != nil {
		return err
	}
	defer stopApp()
	addr := a.ListenAddr("shop")
	say("credswap listens on %s (admin API on %s); backend user shop_app", addr, a.AdminAddr())

	if err := mariaExec(ctx, m, "app", localPassword, addr,
		"CREATE TABLE shop.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, client INT, at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))",
	); err != nil {
		return err
	}
	db, err := sql.Open("mysql", mariaDSN("app", localPassword, addr, "shop"))
	if err != nil {
		return err
	}
	defer db.Close()
	return demoLoad(ctx, say, a, "shop", rotations, clients, func(ctx context.Context) (demoSession, error) {
		conn, err := db.Conn(ctx)
		if err != nil {
			return demoSession{}, err
		}
		return demoSession{
			insert: func(ctx context.Context, client int) error {
				_, err := conn.ExecContext(ctx, "INSERT INTO events (client) VALUES (?)", client)
				return err
			},
			close: func() { conn.Close() },
		}, nil
	})
}

// mariaDSN is a go-sql-driver DSN for user at addr (m's address when empty).
func mariaDSN(user, password, addr, db string) string {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, password, "tcp", addr, db
	return c.FormatDSN()
}

// mariaExec runs stmts as user, directly on m or through the proxy at addr.
func mariaExec(ctx context.Context, m *testenv.MariaDB, user, password, addr string, stmts ...string) error {
	if addr == "" {
		addr = m.Addr()
	}
	db, err := sql.Open("mysql", mariaDSN(user, password, addr, ""))
	if err != nil {
		return err
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}
