package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/proxy/postgres"
)

// arrayOfParams is a query using parameters $1…$n, each cast to int so
// that PostgreSQL can infer every type without the client naming any.
func arrayOfParams(n int) string {
	var b strings.Builder
	b.Grow(n * 10)
	b.WriteString("SELECT pg_catalog.array_length(ARRAY[")
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "$%d::int", i)
	}
	b.WriteString("], 1)")
	return b.String()
}

// TestSwitchStatementsAtProtocolLimits prepares statements with as many
// parameters as a Parse can list (65,535) and more (65,536, which
// PostgreSQL accepts when the client names no types), named and unnamed,
// and moves the session twice. A replay that tried to list 65,536 types
// in a Parse used to panic and take the whole process down.
func TestSwitchStatementsAtProtocolLimits(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	type stmtCase struct{ name, sql string }
	var cases []stmtCase
	for _, n := range []int{65535, 65536} {
		cases = append(cases, stmtCase{"p" + strconv.Itoa(n), arrayOfParams(n)})
	}
	c := p.Connect(t, db)
	pc := c.PgConn()
	for _, sc := range cases {
		sd, err := pc.Prepare(ctx, sc.name, sc.sql, nil)
		if err != nil {
			t.Fatalf("prepare %s: %v", sc.name, err)
		}
		if want, _ := strconv.Atoi(sc.name[1:]); len(sd.ParamOIDs) != want {
			t.Fatalf("%s: %d parameters, want %d", sc.name, len(sd.ParamOIDs), want)
		}
	}
	// The unnamed statement with 65,536 parameters stays alive across a Sync.
	if _, err := pc.Prepare(ctx, "", arrayOfParams(65536), nil); err != nil {
		t.Fatalf("prepare unnamed: %v", err)
	}
	// Another session proves the process survives the switches.
	other := p.Connect(t, db)
	if n := p.Status(t).Backends[0].Sessions.Total; n != 2 {
		t.Fatalf("status lists %d sessions, want 2", n)
	}

	users := [2][2]string{{userB, passB}, {userA, passA}}
	for i := range 2 {
		u := users[i%2]
		p.RotateTo(t, u[0], u[1])
		p.WaitSwitched(t, 30*time.Second)
		for name, conn := range map[string]*pgx.Conn{"prepared": c, "other": other} {
			var who string
			if err := conn.QueryRow(ctx, "SELECT session_user", pgx.QueryExecModeSimpleProtocol).Scan(&who); err != nil || who != u[0] {
				t.Fatalf("rotation %d: %s session runs as %q (%v), want %s", i+1, name, who, err, u[0])
			}
		}
		// pgx's simple-protocol query above destroyed the unnamed
		// statement; the named ones must all be there, with their types.
		rr := pc.ExecParams(ctx, "SELECT name, pg_catalog.array_length(parameter_types, 1) FROM pg_prepared_statements ORDER BY name",
			nil, nil, nil, nil).Read()
		if rr.Err != nil {
			t.Fatal(rr.Err)
		}
		got := map[string]string{}
		for _, r := range rr.Rows {
			got[string(r[0])] = string(r[1])
		}
		for _, sc := range cases {
			if got[sc.name] != sc.name[1:] {
				t.Fatalf("rotation %d: statement %s has %q parameter types; all statements: %v", i+1, sc.name, got[sc.name], got)
			}
		}
		// A statement with 65,535 parameters can still be executed.
		args := make([][]byte, 65535)
		for j := range args {
			args[j] = []byte("1")
		}
		res := pc.ExecPrepared(ctx, "p65535", args, nil, nil).Read()
		if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != "65535" {
			t.Fatalf("rotation %d: executing p65535: %v %q", i+1, res.Err, res.Rows)
		}
		if _, err := pc.Prepare(ctx, "", arrayOfParams(65536), nil); err != nil {
			t.Fatalf("prepare unnamed again: %v", err)
		}
	}
	if m := scrape(t, p); !strings.Contains(m, `credswap_session_switches_total{backend="pg",result="ok"}`) ||
		strings.Contains(m, `credswap_session_switches_total{backend="pg",result="failed"}`) {
		t.Fatalf("switch metrics:\n%s", grep(m, "session_switches_total"))
	}
}

// TestSessionAlwaysRegistered checks that a session is listed in the
// status, in the database and in a drain whatever it prepared: a session
// that prepared a statement with 65,536 parameters was once invisible.
func TestSessionAlwaysRegistered(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := p.Connect(t, db)
	if _, err := c.PgConn().Prepare(ctx, "big", arrayOfParams(65536), nil); err != nil {
		t.Fatal(err)
	}
	if n := p.Status(t).Backends[0].Sessions.Total; n != 1 {
		t.Fatalf("status lists %d sessions, want 1", n)
	}
	admin := pg.Connect(t, db)
	var n int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = $1", userA).Scan(&n); err != nil || n != 1 {
		t.Fatalf("client backends of %s: %d (%v), want 1", userA, n, err)
	}
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 30*time.Second)
	var who string
	if err := c.QueryRow(ctx, "SELECT session_user", pgx.QueryExecModeSimpleProtocol).Scan(&who); err != nil || who != userB {
		t.Fatalf("after the rotation the session runs as %q (%v), want %s", who, err, userB)
	}
}

// TestPanicInSwitchEndsOnlyThatSession makes the first switch panic, over
// both relays: the session it happened in gets an internal error and is
// closed, every other session moves, the proxy keeps serving, and the
// panic is logged with its stack and counted.
func TestPanicInSwitchEndsOnlyThatSession(t *testing.T) {
	t.Run("loop relay", func(t *testing.T) { testPanicInSwitch(t, false) })
	t.Run("goroutine relay over TLS", func(t *testing.T) { testPanicInSwitch(t, true) })
}

func testPanicInSwitch(t *testing.T, useTLS bool) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	var opts []proxytest.Option
	var ca *testenv.CA
	if useTLS {
		ca = testenv.TestCA(t)
		opts = append(opts, withTLS(t, ca, false))
	}
	p := proxytest.Start(t, pg, userA, passA, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func() *pgx.Conn {
		if !useTLS {
			return p.Connect(t, db)
		}
		c, err := connect(ctx, strings.Replace(p.ConnString(db), "sslmode=disable", "sslmode=verify-full", 1)+" host=localhost", ca.ClientTLSConfig("localhost"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	conns := []*pgx.Conn{open(), open(), open()}
	var fired atomic.Bool
	h := p.App.Handler("pg").(*postgres.Handler)
	h.SetFaultHook(func(point string) {
		if point == "replay" && fired.CompareAndSwap(false, true) {
			panic("injected fault in replay")
		}
	})
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 20*time.Second)

	ended, moved := 0, 0
	for _, c := range conns {
		var who string
		err := c.QueryRow(ctx, "SELECT session_user").Scan(&who)
		switch {
		case err == nil && who == userB:
			moved++
		case err != nil:
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (pgErr.Code != "XX000" || !strings.Contains(pgErr.Message, "internal proxy error")) {
				t.Errorf("ended session got %v, want XX000 internal proxy error", err)
			}
			ended++
		default:
			t.Errorf("session runs as %s", who)
		}
	}
	if ended != 1 || moved != 2 {
		t.Fatalf("%d sessions ended and %d moved; want 1 and 2", ended, moved)
	}
	if u := sessionUser(t, p, db); u != userB {
		t.Fatalf("new session: %s", u)
	}
	if m := scrape(t, p); !strings.Contains(m, `credswap_session_panics_total{backend="pg"} 1`) {
		t.Fatalf("panic metric:\n%s", grep(m, "panics"))
	}
	logs := p.Logs.String()
	if !strings.Contains(logs, "panic in a session goroutine") || !strings.Contains(logs, "injected fault in replay") ||
		!strings.Contains(logs, "performSwitch") {
		t.Fatalf("the panic was not logged with its stack:\n%s", p.Logs.Tail(20))
	}
	proxytest.Eventually(t, 5*time.Second, "the ended session to leave the status", func() bool {
		return p.Status(t).Backends[0].Sessions.Total == 2
	})
}

// TestSwitchIdleTLSSession moves a TLS session that sends nothing during
// the drain. Its backend reader, blocked on a socket the relay loops
// could own, once could not be paused: the drain hung holding the
// session, and so did the client's next query.
func TestSwitchIdleTLSSession(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	ca := testenv.TestCA(t)
	p := proxytest.Start(t, pg, userA, passA, withTLS(t, ca, true))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := connect(ctx, strings.Replace(p.ConnString(db), "sslmode=disable", "sslmode=verify-full", 1)+" host=localhost", ca.ClientTLSConfig("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 10*time.Second)
	var who string
	if err := c.QueryRow(ctx, "SELECT session_user").Scan(&who); err != nil || who != userB {
		t.Fatalf("after the switch: %q %v", who, err)
	}
}

// TestSwitchSQLPrepareKeepsItsText rotates three times a session that
// changed a setting and ran SQL PREPAREs (as psql sends them: one
// statement per Query). Replay used to send the PREPAREs in one query
// string with set_config, which PostgreSQL then recorded as the
// statement's text; the next capture found a multi-statement PREPARE and
// pinned the session for good.
func TestSwitchSQLPrepareKeepsItsText(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := p.Connect(t, db)
	simple := pgx.QueryExecModeSimpleProtocol
	prepares := []string{
		"PREPARE p(int) AS SELECT $1+1;",
		"prepare   q AS select 'x;y' /* ; */ || $1::text",
		"PREPARE r AS SELECT current_setting('work_mem')",
	}
	for _, q := range append([]string{"SET work_mem='5MB';"}, prepares...) {
		if _, err := c.Exec(ctx, q, simple); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	want := map[string]string{"p": prepares[0], "q": prepares[1], "r": prepares[2]}
	users := [2][2]string{{userB, passB}, {userA, passA}}
	for i := range 3 {
		u := users[i%2]
		p.RotateTo(t, u[0], u[1])
		p.WaitSwitched(t, 10*time.Second)
		var who, wm, pv, qv string
		if err := c.QueryRow(ctx, "SELECT session_user", simple).Scan(&who); err != nil || who != u[0] {
			t.Fatalf("rotation %d: session_user %q (%v), want %s", i+1, who, err, u[0])
		}
		if err := c.QueryRow(ctx, "EXECUTE r", simple).Scan(&wm); err != nil || wm != "5MB" {
			t.Fatalf("rotation %d: EXECUTE r = %q (%v)", i+1, wm, err)
		}
		if err := c.QueryRow(ctx, "EXECUTE p(41)", simple).Scan(&pv); err != nil || pv != "42" {
			t.Fatalf("rotation %d: EXECUTE p = %q (%v)", i+1, pv, err)
		}
		if err := c.QueryRow(ctx, "EXECUTE q('z')", simple).Scan(&qv); err != nil || qv != "x;yz" {
			t.Fatalf("rotation %d: EXECUTE q = %q (%v)", i+1, qv, err)
		}
		rows, err := c.Query(ctx, "SELECT name, statement FROM pg_prepared_statements", simple)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for rows.Next() {
			var n, st string
			rows.Scan(&n, &st)
			got[n] = st
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("rotation %d: pg_prepared_statements\n got %q\nwant %q", i+1, got, want)
		}
		if st := p.Status(t).Backends[0]; len(st.PinnedSessions) != 0 {
			t.Fatalf("rotation %d: pinned %+v", i+1, st.PinnedSessions)
		}
	}
}

// TestBackendKeyDataIsAPostgresPID checks the process ID the proxy mints:
// a client may pass it to pg_cancel_backend(int), which failed with 22003
// for IDs above 2^31; and it must never name another backend process.
func TestBackendKeyDataIsAPostgresPID(t *testing.T) {
	p, db, _ := setup(t)
	ctx := context.Background()
	for range 20 {
		c := p.Connect(t, db)
		pid := c.PgConn().PID()
		if pid <= 1<<22 || pid > 1<<31-1 {
			t.Fatalf("BackendKeyData process ID %d is not above 2^22 and a positive int4", pid)
		}
		var ok bool
		if err := c.QueryRow(ctx, "SELECT pg_cancel_backend($1)", int64(pid)).Scan(&ok); err != nil || ok {
			t.Fatalf("pg_cancel_backend(%d) = %v, %v; want false and no error", pid, ok, err)
		}
		c.Close(ctx)
	}
}

// TestParameterStatusNetChange rotates several times while a session is
// idle: before its next result the client learns only the net change of
// the reported parameters, not one message per switch.
func TestParameterStatusNetChange(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	c := p.Connect(t, db)
	hc, err := c.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	fe := hc.Frontend
	users := [2][2]string{{userB, passB}, {userA, passA}}
	round := 0
	for _, switches := range []int{4, 3} {
		for range switches {
			u := users[round%2]
			round++
			p.RotateTo(t, u[0], u[1])
			p.WaitSwitched(t, 10*time.Second)
		}
		want := users[(round-1)%2][0]
		fe.Send(&pgproto3.Query{String: "SELECT session_user"})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		var statuses []string
		var who string
		for {
			hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			msg, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			switch m := msg.(type) {
			case *pgproto3.ParameterStatus:
				statuses = append(statuses, m.Name+"="+m.Value)
			case *pgproto3.DataRow:
				who = string(m.Values[0])
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		if who != want {
			t.Fatalf("after %d switches the session runs as %s, want %s", switches, who, want)
		}
		var auth []string
		for _, s := range statuses {
			if strings.HasPrefix(s, "session_authorization=") {
				auth = append(auth, s)
			}
		}
		wantAuth := []string{"session_authorization=" + want}
		if switches%2 == 0 {
			wantAuth = nil
		}
		if fmt.Sprint(auth) != fmt.Sprint(wantAuth) {
			t.Fatalf("after %d switches the client got %q, want %q (all: %q)", switches, auth, wantAuth, statuses)
		}
	}
}

// TestFailedSwitchBacksOff makes every switch of a session fail (its role
// cannot be set by the new user) while the client keeps sending
// statements: attempts are spaced out instead of costing a backend login
// before every statement, and the status and metrics say why. Once the
// role is granted, the session moves.
func TestFailedSwitchBacksOff(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	role := "r_" + proxytest.Random(4)
	pg.Exec(t, fmt.Sprintf("CREATE ROLE %s NOLOGIN; GRANT %s TO %s", role, role, userA))
	p := proxytest.Start(t, pg, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := p.Connect(t, db)
	if _, err := c.Exec(ctx, "SET ROLE "+role); err != nil {
		t.Fatal(err)
	}
	failed := func() int {
		var n int
		fmt.Sscan(strings.TrimPrefix(grep(scrape(t, p), `session_switches_total{backend="pg",result="failed"}`),
			`credswap_session_switches_total{backend="pg",result="failed"} `), &n)
		return n
	}
	p.RotateTo(t, userB, passB)
	proxytest.Eventually(t, 10*time.Second, "the first failed switch", func() bool { return failed() > 0 })
	start := time.Now()
	for range 50 {
		var who string
		if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != role {
			t.Fatalf("current_user %q (%v), want %s", who, err, role)
		}
	}
	took := time.Since(start)
	// Attempts start 100 ms apart and double; the drain also retries once
	// a second. Without a backoff, every one of the 50 statements tried.
	if n, most := failed(), 4+int(2*took/time.Second); n > most {
		t.Fatalf("%d failed switches in %s of 50 statements, want at most %d", n, took, most)
	}
	st := p.Status(t).Backends[0]
	if len(st.SwitchFailing) != 1 || st.SwitchFailing[0].SwitchFailure.Stage != "replay" ||
		!strings.Contains(st.SwitchFailing[0].SwitchFailure.Error, "permission denied to set role") {
		t.Fatalf("switch_failing in status: %+v", st.SwitchFailing)
	}
	if m := scrape(t, p); !strings.Contains(m, `credswap_switch_failing_sessions{backend="pg",stage="replay"} 1`) {
		t.Fatalf("metrics:\n%s", grep(m, "switch_failing"))
	}
	pg.Exec(t, fmt.Sprintf("GRANT %s TO %s", role, userB))
	p.WaitSwitched(t, 30*time.Second)
	var who, cur string
	if err := c.QueryRow(ctx, "SELECT session_user, current_user").Scan(&who, &cur); err != nil || who != userB || cur != role {
		t.Fatalf("after the grant: %s/%s (%v)", who, cur, err)
	}
	if st := p.Status(t).Backends[0]; len(st.SwitchFailing) != 0 {
		t.Fatalf("switch_failing after the move: %+v", st.SwitchFailing)
	}
}

// TestSwitchSkipsSupersededGeneration changes the password of the user a
// drain targets before an idle session could move (it was in a
// transaction): its switches fail and back off. When the new password is
// adopted, the session moves at once instead of waiting out the backoff
// of the generation that no longer works (under fast alternating
// rotations, a session once kept retrying a superseded generation until
// its old user was retired).
func TestSwitchSkipsSupersededGeneration(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := p.Connect(t, db)
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	p.RotateTo(t, userB, passB)
	newPass := "p" + proxytest.Random(12)
	pg.Exec(t, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", userB, newPass))
	// Connections the drain warmed with the old password still work: end them.
	pg.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", userB)
	if _, err := c.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	var retryAt time.Time
	proxytest.Eventually(t, 30*time.Second, "five failed switches", func() bool {
		st := p.Status(t).Backends[0]
		if len(st.SwitchFailing) != 1 || st.SwitchFailing[0].SwitchFailure.Failures < 5 {
			return false
		}
		retryAt = st.SwitchFailing[0].SwitchFailure.RetryAt
		return true
	})
	if f := p.Status(t).Backends[0].SwitchFailing[0].SwitchFailure; f.Stage != "connect" {
		t.Fatalf("failing stage %q (%s), want connect", f.Stage, f.Error)
	}
	p.RotateTo(t, userB, newPass)
	p.WaitSwitched(t, 20*time.Second)
	if time.Now().After(retryAt) {
		t.Fatalf("the session waited out the backoff of a superseded generation (retry at %s)", retryAt.Format(time.RFC3339Nano))
	}
	var who string
	if err := c.QueryRow(ctx, "SELECT session_user").Scan(&who); err != nil || who != userB {
		t.Fatalf("session runs as %q (%v)", who, err)
	}
	if st := p.Status(t).Backends[0]; len(st.SwitchFailing) != 0 {
		t.Fatalf("switch_failing after the move: %+v", st.SwitchFailing)
	}
	if logs := p.Logs.String(); strings.Contains(logs, newPass) || strings.Contains(logs, passB) {
		t.Fatal("a password reached the log")
	}
}

// TestBackendEndsIdleSession ends the backend connection of an idle
// session in three ways (idle_session_timeout, pg_terminate_backend, a
// server restart), over both relays: the client gets the database's FATAL
// error and then a closed connection at once, without sending anything,
// just as it would from the database itself.
func TestBackendEndsIdleSession(t *testing.T) {
	pg := testenv.StartTestPostgres(t, testenv.PostgresOptions{})
	ca := testenv.TestCA(t)
	user, pass := pg.CreateUser(t, "idle")
	db := pg.CreateDatabase(t)
	pg.Exec(t, fmt.Sprintf("GRANT ALL ON DATABASE %s TO %s", db, user))
	p := proxytest.Start(t, pg, user, pass, withTLS(t, ca, false))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := pg.Connect(t, "postgres")
	outer := t

	for _, useTLS := range []bool{false, true} {
		for _, how := range []string{"idle_session_timeout", "pg_terminate_backend", "restart"} {
			name := how + map[bool]string{false: "/loop relay", true: "/goroutine relay over TLS"}[useTLS]
			t.Run(name, func(t *testing.T) {
				var c *pgx.Conn
				var err error
				if useTLS {
					c, err = connect(ctx, strings.Replace(p.ConnString(db), "sslmode=disable", "sslmode=verify-full", 1)+" host=localhost", ca.ClientTLSConfig("localhost"))
				} else {
					c, err = connect(ctx, p.ConnString(db), nil)
				}
				if err != nil {
					t.Fatal(err)
				}
				var pid int
				if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
					t.Fatal(err)
				}
				want := "57P01"
				if how == "idle_session_timeout" {
					if _, err := c.Exec(ctx, "SET idle_session_timeout = '500ms'"); err != nil {
						t.Fatal(err)
					}
					want = "57P05"
				}
				hc, err := c.PgConn().Hijack()
				if err != nil {
					t.Fatal(err)
				}
				defer hc.Conn.Close()
				switch how {
				case "pg_terminate_backend":
					if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
						t.Fatal(err)
					}
				case "restart":
					admin.Close(ctx)
					if err := pg.Restart(ctx); err != nil {
						t.Fatal(err)
					}
					admin = pg.Connect(outer, "postgres")
				}
				hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				var codes []string
				for {
					msg, err := hc.Frontend.Receive()
					if err != nil {
						if errors.Is(err, os.ErrDeadlineExceeded) {
							t.Fatalf("the client connection stayed open after the backend ended (errors so far: %v)", codes)
						}
						break // closed, as from the database itself
					}
					if e, ok := msg.(*pgproto3.ErrorResponse); ok {
						codes = append(codes, e.Severity+" "+e.Code)
					}
				}
				if len(codes) != 1 || codes[0] != "FATAL "+want {
					t.Fatalf("the client got %v, want [FATAL %s] then end of stream", codes, want)
				}
			})
		}
	}
	if u := sessionUser(t, p, db); u != user {
		t.Fatalf("a new session after all that: %s", u)
	}
}

// stepResult is what one step of a differential test observed: rows or a
// SQLSTATE.
func stepResult(rr []*pgconn.Result, err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return "error " + pgErr.Code
	}
	if err != nil {
		return "failure " + err.Error()
	}
	var b strings.Builder
	for _, r := range rr {
		if r.Err != nil {
			return stepResult(nil, r.Err)
		}
		for _, row := range r.Rows {
			for _, v := range row {
				b.WriteString(string(v))
				b.WriteByte(' ')
			}
			b.WriteByte(';')
		}
	}
	return "ok " + b.String()
}

// describe sends Describe of statement name and Sync, and reports the
// message types of the answer (an error as its SQLSTATE). PostgreSQL sends
// the ParameterDescription of a statement over a dropped table before the
// error about the table; through the proxy such a statement is deferred
// and the error comes alone (docs/swap.md), so an answer that fails is
// reported as its errors only.
func describe(ctx context.Context, name string) func(c *pgconn.PgConn) string {
	return func(c *pgconn.PgConn) string {
		fe := c.Frontend()
		fe.Send(&pgproto3.Describe{ObjectType: 'S', Name: name})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			return "failure " + err.Error()
		}
		var out []string
		for {
			msg, err := c.ReceiveMessage(ctx)
			if err != nil {
				return "failure " + err.Error()
			}
			switch m := msg.(type) {
			case *pgproto3.ErrorResponse:
				out = append(out, "error "+m.Code)
			case *pgproto3.ReadyForQuery:
				var errs []string
				for _, o := range out {
					if strings.HasPrefix(o, "error ") {
						errs = append(errs, o)
					}
				}
				if len(errs) > 0 {
					return strings.Join(errs, " ")
				}
				return strings.Join(out, " ")
			default:
				out = append(out, fmt.Sprintf("%T", msg))
			}
		}
	}
}

// TestSwitchStatementOverDroppedTable is psycopg 3's auto-prepared INSERT
// into an ON COMMIT DROP temporary table: at every safe point the table
// is gone, so the statement cannot be prepared again on a new connection.
// The session must move anyway, and every later use of the statement must
// answer exactly as PostgreSQL answers on a connection that never moved
// (run side by side on a direct connection).
func TestSwitchStatementOverDroppedTable(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "loop relay", true: "goroutine relay over TLS"}[useTLS], func(t *testing.T) {
			testSwitchStatementOverDroppedTable(t, useTLS)
		})
	}
}

func testSwitchStatementOverDroppedTable(t *testing.T, useTLS bool) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	ca := testenv.TestCA(t)
	p := proxytest.Start(t, pg, userA, passA, withTLS(t, ca, false))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var viaProxy *pgx.Conn
	var err error
	if useTLS {
		viaProxy, err = connect(ctx, strings.Replace(p.ConnString(db), "sslmode=disable", "sslmode=verify-full", 1)+" host=localhost", ca.ClientTLSConfig("localhost"))
	} else {
		viaProxy, err = connect(ctx, p.ConnString(db), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer viaProxy.Close(ctx)
	cfg, err := pg.ConnConfig(userA, passA, db)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)

	type step struct {
		name string
		run  func(c *pgconn.PgConn) string
	}
	exec := func(sql string) func(c *pgconn.PgConn) string {
		return func(c *pgconn.PgConn) string { return stepResult(c.Exec(ctx, sql).ReadAll()) }
	}
	prepared := func(name string, args ...string) func(c *pgconn.PgConn) string {
		return func(c *pgconn.PgConn) string {
			var params [][]byte
			for _, a := range args {
				params = append(params, []byte(a))
			}
			r := c.ExecPrepared(ctx, name, params, nil, nil).Read()
			return stepResult([]*pgconn.Result{r}, nil)
		}
	}
	prepare := func(name, sql string) func(c *pgconn.PgConn) string {
		return func(c *pgconn.PgConn) string {
			_, err := c.Prepare(ctx, name, sql, nil)
			return stepResult(nil, err)
		}
	}
	// A batch of three Sync rounds: the first fails, the second uses the
	// statement with its table present, the third without.
	batch := func(c *pgconn.PgConn) string {
		b := &pgconn.Batch{}
		b.ExecParams("SELECT 1/0", nil, nil, nil, nil)
		b.ExecParams("CREATE TEMP TABLE t (x int) ON COMMIT DROP", nil, nil, nil, nil)
		b.ExecPrepared("ins", [][]byte{[]byte("7")}, nil, nil)
		b.ExecPrepared("cnt", nil, nil, nil)
		rr, err := c.ExecBatch(ctx, b).ReadAll()
		return stepResult(rr, err)
	}
	setup := []step{
		{"begin", exec("BEGIN")},
		{"create", exec("CREATE TEMP TABLE t (x int) ON COMMIT DROP")},
		{"prepare ins", prepare("ins", "INSERT INTO t VALUES ($1)")},
		{"prepare cnt", prepare("cnt", "SELECT count(*) FROM t")},
		{"prepare keep", prepare("keep", "SELECT $1::int * 2")},
		{"insert", prepared("ins", "1")},
		{"commit", exec("COMMIT")},
	}
	after := []step{
		{"insert without table", prepared("ins", "2")},
		{"describe without table", describe(ctx, "cnt")},
		{"other statement", prepared("keep", "21")},
		{"begin", exec("BEGIN")},
		{"create again", exec("CREATE TEMP TABLE t (x int) ON COMMIT DROP")},
		{"insert with table", prepared("ins", "5")},
		{"count with table", prepared("cnt")},
		{"describe with table", describe(ctx, "cnt")},
		{"commit", exec("COMMIT")},
		{"batch", batch},
		{"deallocate without table", exec("DEALLOCATE cnt")},
		{"count after deallocate", prepared("cnt")},
		{"close", func(c *pgconn.PgConn) string { return stepResult(nil, c.Deallocate(ctx, "ins")) }},
		{"insert after close", prepared("ins", "1")},
		{"statements", exec("SELECT name FROM pg_prepared_statements ORDER BY name")},
	}
	for _, st := range setup {
		a, b := st.run(viaProxy.PgConn()), st.run(direct.PgConn())
		if a != b {
			t.Fatalf("%s: through the proxy %q, directly %q", st.name, a, b)
		}
	}
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 10*time.Second)
	for _, st := range after {
		a, b := st.run(viaProxy.PgConn()), st.run(direct.PgConn())
		if a != b {
			t.Errorf("%s: through the proxy %q, directly %q", st.name, a, b)
		}
	}
	var who string
	if err := viaProxy.QueryRow(ctx, "SELECT session_user").Scan(&who); err != nil || who != userB {
		t.Fatalf("session_user %q %v", who, err)
	}
	if m := scrape(t, p); strings.Contains(m, `credswap_session_switches_total{backend="pg",result="failed"}`) {
		t.Fatalf("failed switches:\n%s", grep(m, "session_switches_total"))
	}
}
