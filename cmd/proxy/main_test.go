package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"syscall"

	"fmt"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

func TestMain(m *testing.M) {
	// The signal test runs this binary as the real command.
	if os.Getenv("CREDSWAP_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	testenv.Main(m)
}

// cli runs the credswap command line in-process.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestAdminCommands(t *testing.T) {
	pg := testenv.PG(t)
	userA, passA := pg.CreateUser(t, "cli")
	userB, passB := pg.CreateUser(t, "cli")
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600)
	p := proxytest.Start(t, pg, userA, passA, func(c *config.Config) { c.Admin.TokenFile = tokenFile })
	p.Connect(t, "postgres")

	if _, err := cli(t, "status", "--admin", p.AdminURL); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("status without a token: %v", err)
	}
	t.Setenv(tokenEnv, "s3cret-token")
	out, err := cli(t, "status", "--admin", p.AdminURL)
	if err != nil || !strings.Contains(out, "backend pg (postgres)") || !strings.Contains(out, "generation 1, user "+userA) {
		t.Fatalf("status: %v\n%s", err, out)
	}

	p.WriteCredential(t, userB, passB)
	out, err = cli(t, "refresh", "pg", "--admin", p.AdminURL)
	if err != nil || !strings.Contains(out, "generation 2 (user "+userB+")") {
		t.Fatalf("refresh: %v\n%s", err, out)
	}
	out, err = cli(t, "drain", "pg", "--admin", p.AdminURL)
	if err != nil || !strings.Contains(out, "pg: generation 2") {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	proxytest.Eventually(t, 5*time.Second, "the session to move", func() bool {
		return len(p.Backend().Sessions.Behind(2)) == 0
	})
	out, err = cli(t, "status", "--admin", p.AdminURL, "--json")
	if err != nil || !strings.Contains(out, `"target_generation": 2`) || strings.Contains(out, passA) || strings.Contains(out, passB) {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if _, err := cli(t, "drain", "nope", "--admin", p.AdminURL); err == nil || !strings.Contains(err.Error(), "unknown_backend") {
		t.Fatalf("drain of an unknown backend: %v", err)
	}
}

func TestCheckAndVersion(t *testing.T) {
	pg := testenv.PG(t)
	user, pass := pg.CreateUser(t, "chk")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("local\n"), 0o600)
	write := func(password string) string {
		os.WriteFile(filepath.Join(dir, "cred.json"), []byte(fmt.Sprintf(`{"username": %q, "password": %q}`, user, password)), 0o600)
		cfg := fmt.Sprintf("backends:\n  - name: db\n    protocol: postgres\n    listen: 127.0.0.1:0\n    upstream: %s\n    clients: [{user: app, password_file: pw}]\n    credential: {source: file, path: cred.json}\n", pg.Addr())
		path := filepath.Join(dir, "credswap.yaml")
		os.WriteFile(path, []byte(cfg), 0o600)
		return path
	}
	out, err := cli(t, "check", "-c", write(pass))
	if err != nil || !strings.Contains(out, "backend db: ok") {
		t.Fatalf("check: %v\n%s", err, out)
	}
	out, err = cli(t, "check", "-c", write("wrong"))
	if err == nil || !strings.Contains(out, "backend db: FAIL") || strings.Contains(out, "wrong") && strings.Contains(out, `"wrong"`) {
		t.Fatalf("check with a wrong password: %v\n%s", err, out)
	}
	if _, err := cli(t, "run"); err == nil {
		t.Fatal("run without --config succeeded")
	}
	out, err = cli(t, "version")
	if err != nil || !strings.HasPrefix(out, "credswap ") {
		t.Fatalf("version: %v %q", err, out)
	}
}

// TestRunSignals runs the real command: SIGHUP reloads the client users,
// SIGTERM lets sessions finish until shutdown_timeout, then closes them
// with 57P01 and exits.
func TestRunSignals(t *testing.T) {
	pg := testenv.PG(t)
	user, pass := pg.CreateUser(t, "sig")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("local-one\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "cred.json"), []byte(fmt.Sprintf(`{"username": %q, "password": %q}`, user, pass)), 0o600)
	port, _ := testenv.FreePort()
	adminPort, _ := testenv.FreePort()
	cfg := fmt.Sprintf("admin: {listen: 127.0.0.1:%d}\nshutdown_timeout: 1s\nlog: {level: debug}\nbackends:\n  - name: db\n    protocol: postgres\n    listen: 127.0.0.1:%d\n    upstream: %s\n    clients: [{user: app, password_file: pw}]\n    credential: {source: file, path: cred.json}\n", adminPort, port, pg.Addr())
	path := filepath.Join(dir, "credswap.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)

	cmd := exec.Command(os.Args[0], "run", "--config", path)
	cmd.Env = append(os.Environ(), "CREDSWAP_TEST_RUN_MAIN=1")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("proxy output:\n%s", logs.String())
		}
	}()
	dsn := func(pw string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=postgres sslmode=disable", port, pw)
	}
	ctx := context.Background()
	var c *pgx.Conn
	proxytest.Eventually(t, 15*time.Second, "the proxy to accept", func() bool {
		var err error
		c, err = pgx.Connect(ctx, dsn("local-one"))
		return err == nil
	})
	defer c.Close(ctx)

	os.WriteFile(filepath.Join(dir, "pw"), []byte("local-two\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	proxytest.Eventually(t, 5*time.Second, "the reloaded password to work", func() bool {
		c2, err := pgx.Connect(ctx, dsn("local-two"))
		if err != nil {
			return false
		}
		c2.Close(ctx)
		return true
	})

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	// New connections are refused at once; the idle session is closed
	// with 57P01 once shutdown_timeout has passed.
	proxytest.Eventually(t, 5*time.Second, "the listener to close", func() bool {
		_, err := pgx.Connect(ctx, dsn("local-two"))
		return err != nil
	})
	_, err := c.Exec(ctx, "SELECT pg_sleep(5)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
		if !c.IsClosed() {
			t.Fatalf("session during shutdown: want 57P01, got %v", err)
		}
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 6*time.Second {
		t.Fatalf("session closed after %s, want about shutdown_timeout (1s)", d)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not exit after SIGTERM")
	}
	if strings.Contains(logs.String(), pass) {
		t.Fatal("the backend password appears in the log")
	}
}

// TestDemo runs the README's run command, shortened.
func TestDemo(t *testing.T) {
	// Skip or fail like every database test when the binaries are missing.
	testenv.PG(t)
	testenv.MariaDBServer(t)
	out, err := cli(t, "demo", "--rotations", "2", "--clients", "3")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"summary (orders): ", "summary (shop): ", "old password of shop_app discarded", "orders_b locked",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "verify-retired  ok") != 4 || strings.Count(out, ", 0 errors, 2 rotations") != 2 {
		t.Fatalf("demo output:\n%s", out)
	}
}

// TestSetupUsersSQL runs the printed statements on PostgreSQL.
func TestSetupUsersSQL(t *testing.T) {
	pg := testenv.PG(t)
	suffix := proxytest.Random(3)
	a, b := "su_a_"+suffix, "su_b_"+suffix
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("x\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"username": "`+a+`", "password": "x"}`), 0o600)
	os.WriteFile(filepath.Join(dir, "admin.json"), []byte(`{"username": "postgres", "password": "x"}`), 0o600)
	cfg := fmt.Sprintf("backends:\n  - name: shop-%s\n    protocol: postgres\n    listen: 127.0.0.1:0\n    upstream: %s\n    clients: [{user: app, password_file: pw}]\n    credential: {source: file, path: c.json}\n    rotation: {strategy: alternating-users, users: [%s, %s], admin_credential: {source: file, path: admin.json}}\n", suffix, pg.Addr(), a, b)
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	out, err := cli(t, "setup-users", "shop-"+suffix, "-c", path)
	if err != nil {
		t.Fatalf("setup-users: %v\n%s", err, out)
	}
	// The roles stay in the throwaway server; their names are unique.
	pg.Exec(t, out)
	conn := pg.Connect(t, "postgres")
	var role string
	if err := conn.QueryRow(context.Background(), "SELECT unnest(setconfig) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = $1", b).Scan(&role); err != nil || role != "role=shop_"+suffix+"_owner" {
		t.Fatalf("after setup-users: %q %v", role, err)
	}
}

// TestSetupUsersSQLMariaDB runs the printed statements on MariaDB: both
// logins get the role as their default, the second starts locked. The
// second case has user names with a backslash and a quote, which must
// reach the server unchanged.
func TestSetupUsersSQLMariaDB(t *testing.T) {
	m := testenv.MariaDBServer(t)
	for _, tc := range []struct{ name, mark string }{{"plain", ""}, {"backslash and quote", `\'q`}} {
		t.Run(tc.name, func(t *testing.T) {
			suffix := proxytest.Random(3)
			a, b := "su_a_"+suffix+tc.mark, "su_b_"+suffix+tc.mark
			dir := t.TempDir()
			cred, _ := json.Marshal(map[string]string{"username": a, "password": "x"})
			os.WriteFile(filepath.Join(dir, "pw"), []byte("x\n"), 0o600)
			os.WriteFile(filepath.Join(dir, "c.json"), cred, 0o600)
			os.WriteFile(filepath.Join(dir, "admin.json"), []byte(`{"username": "root", "password": "x"}`), 0o600)
			yamlUsers, _ := json.Marshal([]string{a, b}) // a JSON array is a YAML flow sequence
			cfg := fmt.Sprintf("backends:\n  - name: shop-%s\n    protocol: mysql\n    listen: 127.0.0.1:0\n    upstream: %s\n    clients: [{user: app, password_file: pw}]\n    credential: {source: file, path: c.json}\n    rotation: {strategy: alternating-users, users: %s, admin_credential: {source: file, path: admin.json}}\n", suffix, m.Addr(), yamlUsers)
			path := filepath.Join(dir, "c.yaml")
			os.WriteFile(path, []byte(cfg), 0o600)
			out, err := cli(t, "setup-users", "shop-"+suffix, "-c", path)
			if err != nil {
				t.Fatalf("setup-users: %v\n%s", err, out)
			}
			// The users and the role stay in the throwaway server; their names are unique.
			m.Exec(t, out)
			// Names are compared in hex, so that this query needs no quoting of its own.
			got := m.Query(t, fmt.Sprintf("SELECT GROUP_CONCAT(CONCAT(HEX(User), ':', JSON_VALUE(Priv, '$.default_role'), ':', IF(JSON_VALUE(Priv, '$.account_locked') IN ('1', 'true'), 'locked', 'open')) ORDER BY User) FROM mysql.global_priv WHERE HEX(User) IN ('%X', '%X')", a, b))
			want := fmt.Sprintf("%X:shop_%s_owner:open,%X:shop_%s_owner:locked", a, suffix, b, suffix)
			if got != want {
				t.Fatalf("after setup-users: %q, want %q", got, want)
			}
		})
	}
}
