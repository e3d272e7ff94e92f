package postgres_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestSwitchKeepsSessionState runs over plaintext (relayed by an epoll
// loop) and over TLS (relayed by two goroutines).
func TestSwitchKeepsSessionState(t *testing.T) {
	t.Run("loop relay", func(t *testing.T) { testSwitchKeepsSessionState(t, false) })
	t.Run("goroutine relay over TLS", func(t *testing.T) { testSwitchKeepsSessionState(t, true) })
}

func testSwitchKeepsSessionState(t *testing.T, useTLS bool) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	pg.ExecIn(t, db, "CREATE SCHEMA app; CREATE TABLE app.items (id int primary key, name text); INSERT INTO app.items VALUES (1, 'one'), (2, 'two')")
	pg.ExecIn(t, db, fmt.Sprintf("GRANT USAGE ON SCHEMA app TO %s, %s; GRANT SELECT ON app.items TO %s, %s", userA, userB, userA, userB))
	var opts []proxytest.Option
	var ca *testenv.CA
	if useTLS {
		ca = testenv.TestCA(t)
		opts = append(opts, withTLS(t, ca, true))
	}
	p := proxytest.Start(t, pg, userA, passA, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var c *pgx.Conn
	if useTLS {
		var err error
		c, err = connect(ctx, strings.Replace(p.ConnString(db), "sslmode=disable", "sslmode=verify-full", 1)+" host=localhost", ca.ClientTLSConfig("localhost"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
	} else {
		c = p.Connect(t, db)
	}
	for _, q := range []string{
		"SET search_path = app, public",
		"SET statement_timeout = '42s'",
		"SET app.tenant = 'acme'",
		"SELECT set_config('app.user_id', '7', false)",
		"PREPARE sqlprep(int) AS SELECT name FROM items WHERE id = $1",
		"LISTEN jobs",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := c.Prepare(ctx, "byid", "SELECT name FROM items WHERE id = $1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Prepare(ctx, "plus", "SELECT $1::int + $2::int"); err != nil {
		t.Fatal(err)
	}
	var who string
	c.QueryRow(ctx, "SELECT session_user").Scan(&who)
	if who != userA {
		t.Fatalf("before: %s", who)
	}

	// Notifications sent all through the switch must all arrive.
	notifier := pg.Connect(t, db)
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := notifier.Exec(ctx, "SELECT pg_notify('jobs', $1)", fmt.Sprint(n)); err != nil {
				return
			}
			n++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 10*time.Second)
	time.Sleep(50 * time.Millisecond)
	close(stop)
	total := <-sent

	if err := c.QueryRow(ctx, "SELECT session_user").Scan(&who); err != nil || who != userB {
		t.Fatalf("after the switch: session_user %q (%v), want %s", who, err, userB)
	}
	got := map[string]bool{}
	for len(got) < total {
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := c.WaitForNotification(wctx)
		wcancel()
		if err != nil {
			t.Fatalf("received %d of %d notifications: %v", len(got), total, err)
		}
		got[n.Payload] = true
	}
	checks := []struct{ sql, want string }{
		{"SHOW search_path", "app, public"},
		{"SHOW statement_timeout", "42s"},
		{"SELECT current_setting('app.tenant')", "acme"},
		{"SELECT current_setting('app.user_id')", "7"},
		{"EXECUTE sqlprep(2)", "two"},
		{"SELECT string_agg(c, ',') FROM pg_listening_channels() c", "jobs"},
	}
	for _, ch := range checks {
		var v string
		if err := c.QueryRow(ctx, ch.sql, pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil || v != ch.want {
			t.Errorf("%s = %q (%v), want %q", ch.sql, v, err, ch.want)
		}
	}
	var name string
	if err := c.QueryRow(ctx, "byid", 1).Scan(&name); err != nil || name != "one" {
		t.Errorf("protocol-level statement byid: %q %v", name, err)
	}
	var sum int
	if err := c.QueryRow(ctx, "plus", 40, 2).Scan(&sum); err != nil || sum != 42 {
		t.Errorf("protocol-level statement plus: %d %v", sum, err)
	}
	// pgx's own statement cache (named statements it prepared) also survived.
	if err := c.QueryRow(ctx, "SELECT name FROM items WHERE id = $1", 2).Scan(&name); err != nil || name != "two" {
		t.Errorf("cached statement: %q %v", name, err)
	}
	st := p.Status(t)
	if st.Backends[0].Sessions.ByGeneration["2"] != 1 {
		t.Errorf("status sessions by generation: %+v", st.Backends[0].Sessions)
	}
	metrics := scrape(t, p)
	if !strings.Contains(metrics, `credswap_session_switches_total{backend="pg",result="ok"}`) {
		t.Errorf("switch metric missing:\n%s", grep(metrics, "switches"))
	}
}

// TestSwitchUnnamedStatement moves sessions between the Parse/Describe/Sync
// and the Bind/Execute/Sync of clients that use the unnamed statement.
func TestSwitchUnnamedStatement(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	ctx := context.Background()
	c := p.Connect(t, db)
	pc := c.PgConn()
	// Parse the unnamed statement and Sync: a safe point with the statement alive.
	if _, err := pc.Prepare(ctx, "", "SELECT $1::int * 3", nil); err != nil {
		t.Fatal(err)
	}
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 10*time.Second)
	res := pc.ExecPrepared(ctx, "", [][]byte{[]byte("14")}, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != "42" {
		t.Fatalf("Bind of the unnamed statement after the switch: %v %q", res.Err, res.Rows)
	}
	var who string
	c.QueryRow(ctx, "SELECT session_user", pgx.QueryExecModeSimpleProtocol).Scan(&who)
	if who != userB {
		t.Fatalf("session_user %s", who)
	}
}

func TestSwitchPinnedTempTable(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	ctx := context.Background()
	pinned := p.Connect(t, db)
	other := p.Connect(t, db)
	if _, err := pinned.Exec(ctx, "CREATE TEMP TABLE scratch (x int)"); err != nil {
		t.Fatal(err)
	}
	p.RotateTo(t, userB, passB)
	var who string
	proxytest.Eventually(t, 10*time.Second, "the other session to switch", func() bool {
		other.QueryRow(ctx, "SELECT session_user").Scan(&who)
		return who == userB
	})
	pinned.QueryRow(ctx, "SELECT session_user").Scan(&who)
	if who != userA {
		t.Fatalf("the session holding a temp table moved to %s", who)
	}
	st := p.Status(t).Backends[0]
	if len(st.PinnedSessions) != 1 || st.PinnedSessions[0].PinReason != "temp_table" || st.PinnedSessions[0].Generation != 1 {
		t.Fatalf("pinned sessions in status: %+v", st.PinnedSessions)
	}
	if m := scrape(t, p); !strings.Contains(m, `credswap_pinned_sessions{backend="pg",reason="temp_table"} 1`) {
		t.Fatalf("pinned metric:\n%s", grep(m, "pinned"))
	}
	if _, err := pinned.Exec(ctx, "DROP TABLE scratch"); err != nil {
		t.Fatal(err)
	}
	if err := pinned.QueryRow(ctx, "SELECT session_user").Scan(&who); err != nil || who != userB {
		t.Fatalf("after DROP TABLE the next query runs as %q (%v), want %s", who, err, userB)
	}
	proxytest.Eventually(t, 2*time.Second, "the drain to complete", func() bool {
		st := p.Status(t).Backends[0]
		return len(st.PinnedSessions) == 0 && st.Drain.Complete
	})
}

func TestSwitchPinsAndDeadlineClose(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA, func(c *config.Config) {
		c.Backends[0].DrainDeadline = config.Duration(time.Second)
		c.Backends[0].OnDeadline = "close"
	})
	ctx := context.Background()
	pins := map[string]string{
		"advisory_lock": "SELECT pg_advisory_lock(42)",
		"hold_cursor":   "DECLARE cur CURSOR WITH HOLD FOR SELECT 1",
	}
	conns := map[string]*pgx.Conn{}
	for reason, q := range pins {
		c := p.Connect(t, db)
		if _, err := c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		conns[reason] = c
	}
	free := p.Connect(t, db)
	p.RotateTo(t, userB, passB)
	proxytest.Eventually(t, 5*time.Second, "both sessions pinned", func() bool {
		n := map[string]bool{}
		for _, s := range p.Status(t).Backends[0].PinnedSessions {
			n[s.PinReason] = true
		}
		return n["advisory_lock"] && n["hold_cursor"]
	})
	// Past the deadline the pinned sessions are closed with a FATAL error.
	for reason, c := range conns {
		var err error
		proxytest.Eventually(t, 5*time.Second, reason+" session to be closed", func() bool {
			_, err = c.Exec(ctx, "SELECT 1")
			return err != nil
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57P01" || !strings.Contains(pgErr.Message, "drain deadline") {
			// pgx may report the closed socket if the FATAL arrived first.
			if !c.IsClosed() {
				t.Errorf("%s: want FATAL 57P01 about the drain deadline, got %v", reason, err)
			}
		}
	}
	var who string
	if err := free.QueryRow(ctx, "SELECT session_user").Scan(&who); err != nil || who != userB {
		t.Fatalf("unpinned session: %q %v", who, err)
	}
}

func TestAdoptionFailureKeepsWorkingCredential(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, _ := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	ctx := context.Background()
	c := p.Connect(t, db)
	p.WriteCredential(t, userB, "definitely-wrong")
	proxytest.Eventually(t, 5*time.Second, "the failed adoption to be reported", func() bool {
		return p.Status(t).Backends[0].Credential.Failing
	})
	st := p.Status(t).Backends[0]
	if st.Credential.Current.Generation != 1 || st.Credential.Current.Username != userA ||
		!strings.Contains(st.Credential.LastError, "test login as "+userB) {
		t.Fatalf("credential status: %+v", st.Credential)
	}
	m := scrape(t, p)
	if !strings.Contains(m, `credswap_credential_adoption_failing{backend="pg"} 1`) {
		t.Fatalf("metrics:\n%s", grep(m, "adoption"))
	}
	var who string
	if err := c.QueryRow(ctx, "SELECT session_user").Scan(&who); err != nil || who != userA {
		t.Fatalf("live session: %q %v", who, err)
	}
	if u := sessionUser(t, p, db); u != userA {
		t.Fatalf("new session: %s", u)
	}
}

// TestPasswordChangedBeforeFile changes the database password first and
// the file two seconds later: clients connecting in between wait and succeed.
func TestPasswordChangedBeforeFile(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, _, _ := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA, func(c *config.Config) { c.Backends[0].Pool.MaxIdle = 0 })
	newPass := "rotated-" + proxytest.Random(8)
	pg.Exec(t, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", userA, newPass))
	changed := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := pgx.ConnectConfig(ctx, p.PgxConfig(t, db))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			var n int
			if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
				errs <- err
			}
		}()
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2*time.Second - time.Since(changed))
	p.WriteCredential(t, userA, newPass)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("client failed during the rotation: %v", err)
	}
	if m := scrape(t, p); !strings.Contains(m, `credswap_backend_auth_failures_total{backend="pg"}`) {
		t.Errorf("auth failures not counted")
	}
}

func TestCancelAfterSwitch(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	cfg := p.PgxConfig(t, db)
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 10 * time.Second}
	}
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Exec(ctx, "SELECT pg_sleep(30)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" || time.Since(start) > 1300*time.Millisecond {
		t.Fatalf("cancel after a switch: %v after %s", err, time.Since(start))
	}
}

func scrape(t *testing.T, p *proxytest.Proxy) string {
	t.Helper()
	resp, err := http.Get(p.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSwitchLibPQAndPsql keeps a lib/pq pool (unnamed statements and a
// prepared statement) and an interactive psql session busy across several
// switches.
func TestSwitchLibPQAndPsql(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sqlDB, err := sql.Open("postgres", p.ConnString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.Close()
	sqlDB.SetMaxOpenConns(4)
	stmt, err := sqlDB.PrepareContext(ctx, "SELECT $1::int + 1")
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()

	cmd := testenv.Command(ctx, p.PG.Bin("psql"), p.Env(db), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=0")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	lines := bufio.NewReader(stdout)
	ask := func(q string) string {
		t.Helper()
		fmt.Fprintln(stdin, q)
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("psql: %v", err)
		}
		return strings.TrimSpace(line)
	}
	if got := ask("SET application_name = 'psql-live'; SELECT session_user;"); got != userA {
		t.Fatalf("psql before: %q", got)
	}

	stop := make(chan struct{})
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var n int
				var err error
				if i%2 == 0 {
					err = stmt.QueryRowContext(ctx, w).Scan(&n)
				} else {
					err = sqlDB.QueryRowContext(ctx, "SELECT $1::int + 1", w).Scan(&n)
				}
				if err != nil || n != w+1 {
					errs <- fmt.Errorf("lib/pq worker %d: %v (%d)", w, err, n)
					return
				}
			}
		}()
	}
	users := [2][2]string{{userB, passB}, {userA, passA}}
	for i := range 4 {
		u := users[i%2]
		p.RotateTo(t, u[0], u[1])
		p.WaitSwitched(t, 10*time.Second)
		if got := ask("SELECT session_user || ' ' || current_setting('application_name');"); got != u[0]+" psql-live" {
			t.Fatalf("psql after switch %d: %q", i+1, got)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
