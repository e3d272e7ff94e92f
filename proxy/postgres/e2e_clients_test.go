package postgres_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/lib/pq"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// setup creates a database owned by a fresh backend user and a proxy whose
// credential is that user.
func setup(t *testing.T, opts ...proxytest.Option) (*proxytest.Proxy, string, string) {
	t.Helper()
	pg := testenv.PG(t)
	user, password := pg.CreateUser(t, "be")
	db := pg.CreateDatabase(t)
	pg.Exec(t, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", db, user))
	p := proxytest.Start(t, pg, user, password, opts...)
	return p, db, user
}

func psql(t *testing.T, p *proxytest.Proxy, db string, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := testenv.Command(ctx, p.PG.Bin("psql"), p.Env(db), append([]string{"-X", "-v", "ON_ERROR_STOP=1", "-At"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPsqlThroughProxy(t *testing.T) {
	p, db, user := setup(t)
	out, err := psql(t, p, db, "", "-c", "SELECT current_user")
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) != user {
		t.Fatalf("current_user = %q, want the backend user %q (client logged in as %q)", out, user, p.ClientUser)
	}

	// \copy in and out.
	dir := t.TempDir()
	in := filepath.Join(dir, "in.csv")
	var csv bytes.Buffer
	for i := range 5000 {
		fmt.Fprintf(&csv, "%d,row %d\n", i, i)
	}
	os.WriteFile(in, csv.Bytes(), 0o644)
	outFile := filepath.Join(dir, "out.csv")
	script := fmt.Sprintf("CREATE TABLE items (id int, name text);\n\\copy items FROM '%s' WITH (FORMAT csv)\n\\copy (SELECT * FROM items ORDER BY id) TO '%s' WITH (FORMAT csv)\nSELECT count(*) FROM items;\n", in, outFile)
	out, err = psql(t, p, db, script)
	if err != nil {
		t.Fatalf("psql copy: %v\n%s", err, out)
	}
	if !strings.Contains(out, "5000") {
		t.Fatalf("count after \\copy in: %q", out)
	}
	got, _ := os.ReadFile(outFile)
	if !bytes.Equal(got, csv.Bytes()) {
		t.Fatalf("\\copy out returned %d bytes, want %d identical", len(got), csv.Len())
	}

	// A transaction with an error, then ROLLBACK: the session stays usable.
	script = "BEGIN;\nINSERT INTO items VALUES (-1, 'x');\nSELECT 1/0;\nROLLBACK;\nSELECT count(*) FROM items WHERE id = -1;\n"
	out, _ = psql(t, p, db, script, "-v", "ON_ERROR_STOP=0")
	if !strings.Contains(out, "division by zero") || !strings.HasSuffix(strings.TrimSpace(out), "0") {
		t.Fatalf("transaction with error then ROLLBACK: %q", out)
	}
}

func TestPgx(t *testing.T) {
	p, db, _ := setup(t)
	ctx := context.Background()
	c := p.Connect(t, db)

	// Extended protocol with a cached prepared statement, then simple protocol.
	var n int
	if err := c.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("extended: %v %d", err, n)
	}
	if err := c.QueryRow(ctx, "SELECT 7", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 7 {
		t.Fatalf("simple: %v %d", err, n)
	}
	if _, err := c.Prepare(ctx, "add", "SELECT $1::int + $2::int"); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "add", 2, 3).Scan(&n); err != nil || n != 5 {
		t.Fatalf("prepared: %v %d", err, n)
	}
	// Every exec mode, including describe-then-execute (two Syncs).
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		if err := c.QueryRow(ctx, "SELECT length($1::text)", mode, "abcd").Scan(&n); err != nil || n != 4 {
			t.Fatalf("mode %v: %v %d", mode, err, n)
		}
	}

	// COPY FROM via CopyFrom and COPY TO via pgconn.
	if _, err := c.Exec(ctx, "CREATE TABLE t (id int, v text)"); err != nil {
		t.Fatal(err)
	}
	rows := make([][]any, 10000)
	for i := range rows {
		rows[i] = []any{i, strings.Repeat("v", i%50)}
	}
	copied, err := c.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id", "v"}, pgx.CopyFromRows(rows))
	if err != nil || copied != int64(len(rows)) {
		t.Fatalf("CopyFrom: %v %d", err, copied)
	}
	var buf bytes.Buffer
	tag, err := c.PgConn().CopyTo(ctx, &buf, "COPY t TO STDOUT")
	if err != nil || tag.RowsAffected() != int64(len(rows)) {
		t.Fatalf("CopyTo: %v %v", err, tag)
	}

	// Rows larger than 1 MiB both ways.
	big := strings.Repeat("x", 3<<20)
	var got string
	if err := c.QueryRow(ctx, "SELECT $1::text || 'y'", big).Scan(&got); err != nil || len(got) != len(big)+1 {
		t.Fatalf("big row: %v len %d", err, len(got))
	}
	if err := c.QueryRow(ctx, "SELECT repeat('z', 5000000)", pgx.QueryExecModeSimpleProtocol).Scan(&got); err != nil || len(got) != 5000000 {
		t.Fatalf("big simple row: %v len %d", err, len(got))
	}

	// The session still works after an error inside an extended batch.
	if _, err := c.Exec(ctx, "SELECT 1/0"); err == nil {
		t.Fatal("expected division by zero")
	}
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("after error: %v", err)
	}
}

func TestPgxListenNotify(t *testing.T) {
	p, db, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	listener := p.Connect(t, db)
	notifier := p.Connect(t, db)
	if _, err := listener.Exec(ctx, "LISTEN events"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := notifier.Exec(ctx, "SELECT pg_notify('events', $1)", fmt.Sprint("payload-", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Channel != "events" || n.Payload != fmt.Sprint("payload-", i) {
			t.Fatalf("notification %d = %+v", i, n)
		}
	}
}

func TestPgxCancel(t *testing.T) {
	p, db, _ := setup(t)
	cfg := p.PgxConfig(t, db)
	// Make context cancellation send a CancelRequest (pgx's default closes
	// the connection instead).
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, CancelRequestDelay: 0, DeadlineDelay: 10 * time.Second}
	}
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, how := range []string{"context", "CancelRequest"} {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(300 * time.Millisecond)
			if how == "context" {
				cancel()
			} else {
				c.PgConn().CancelRequest(context.Background())
			}
		}()
		start := time.Now()
		_, err := c.Exec(ctx, "SELECT pg_sleep(30)")
		elapsed := time.Since(start) - 300*time.Millisecond
		cancel()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
			t.Fatalf("%s: want 57014 query_canceled, got %v", how, err)
		}
		if elapsed > time.Second {
			t.Fatalf("%s: cancel took %s", how, elapsed)
		}
		var n int
		if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&n); err != nil {
			t.Fatalf("session after cancel: %v", err)
		}
	}
}

func TestLibPQ(t *testing.T) {
	p, db, user := setup(t)
	conn, err := sql.Open("postgres", p.ConnString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetMaxOpenConns(2)
	ctx := context.Background()

	var got string
	if err := conn.QueryRowContext(ctx, "SELECT current_user").Scan(&got); err != nil || got != user {
		t.Fatalf("simple: %v %q", err, got)
	}
	// Arguments use the unnamed statement (Parse/Describe/Sync, then Bind/Execute/Sync).
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT $1::int * 2", 21).Scan(&n); err != nil || n != 42 {
		t.Fatalf("extended: %v %d", err, n)
	}
	stmt, err := conn.PrepareContext(ctx, "SELECT $1::text || $2::text")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := stmt.QueryRowContext(ctx, "a", fmt.Sprint(i)).Scan(&got); err != nil || got != fmt.Sprint("a", i) {
			t.Fatalf("prepared: %v %q", err, got)
		}
	}
	stmt.Close()

	// COPY FROM STDIN with pq.CopyIn.
	if _, err := conn.ExecContext(ctx, "CREATE TABLE c (id int, v text)"); err != nil {
		t.Fatal(err)
	}
	txn, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := txn.Prepare(pq.CopyIn("c", "id", "v"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		if _, err := cp.Exec(i, "value"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cp.Exec(); err != nil {
		t.Fatal(err)
	}
	cp.Close()
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM c").Scan(&n); err != nil || n != 2000 {
		t.Fatalf("copy in: %v %d", err, n)
	}

	// Big row.
	if err := conn.QueryRowContext(ctx, "SELECT $1::text", strings.Repeat("b", 2<<20)).Scan(&got); err != nil || len(got) != 2<<20 {
		t.Fatalf("big row: %v %d", err, len(got))
	}

	// Cancel through the context (lib/pq sends a CancelRequest).
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = conn.ExecContext(cctx, "SELECT pg_sleep(30)")
	if err == nil || time.Since(start) > 1300*time.Millisecond {
		t.Fatalf("cancel: err %v after %s", err, time.Since(start))
	}

	// LISTEN/NOTIFY with pq.Listener on its own connection.
	var events sync.WaitGroup
	events.Add(1)
	l := pq.NewListener(p.ConnString(db), 10*time.Millisecond, time.Second, nil)
	defer l.Close()
	if err := l.Listen("jobs"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "NOTIFY jobs, 'hello'"); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-l.Notify:
		if n == nil || n.Extra != "hello" {
			t.Fatalf("notification %+v", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
}

func TestPgbench(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	p, db, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	bench := p.PG.Bin("pgbench")
	if out, err := testenv.Command(ctx, bench, p.Env(db), "-i", "-s", "2", "-q").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	out, err := testenv.Command(ctx, bench, p.Env(db), "-c", "16", "-j", "2", "-T", "10", "-M", "prepared").CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench: %v\n%s", err, out)
	}
	checkPgbench(t, string(out))
}

// checkPgbench asserts that a pgbench run had no failed transactions and
// no aborted clients.
func checkPgbench(t *testing.T, out string) {
	t.Helper()
	if !strings.Contains(out, "number of failed transactions: 0 (0.000%)") {
		t.Fatalf("pgbench reported failures:\n%s", out)
	}
	if strings.Contains(out, "aborted") && !strings.Contains(out, "number of clients aborted: 0") {
		t.Fatalf("pgbench clients aborted:\n%s", out)
	}
	t.Logf("pgbench:\n%s", lastLines(out, 8))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestDatabaseErrorsPassThrough: errors the database raises for this
// client's login reach it at once, with the database's SQLSTATE.
func TestDatabaseErrorsPassThrough(t *testing.T) {
	p, db, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cases := []struct{ dsn, code string }{
		{p.ConnString("no_such_db_" + proxytest.Random(3)), "3D000"},
		{p.ConnString(db) + " options='-c statement_timeout=bogus'", "22023"},
	}
	for _, c := range cases {
		start := time.Now()
		_, err := pgx.Connect(ctx, c.dsn)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != c.code || time.Since(start) > 3*time.Second {
			t.Errorf("want SQLSTATE %s at once, got %v after %s", c.code, err, time.Since(start))
		}
	}
}
