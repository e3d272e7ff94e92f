package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// The state fuzzer is a differential test of session moves against the
// database itself. Each case is a random sequence of statements that
// change session state, drawn from a grammar of what clients do (settings
// in every form, roles, SQL and protocol-level prepared statements, LISTEN,
// transactions, temporary tables, cursors, advisory locks, statements over
// dropped and altered tables). It runs on a session through credswap and
// on a direct connection to the same database as the same user, the
// proxied session is moved to a new backend connection between phases
// (the credential alternates between two users that share an owner role),
// and every statement's answer and a snapshot of everything a session can
// observe about itself must be equal on both sides. A session credswap
// reports pinned did not move, and must be equal all the same.
//
// CREDSWAP_STATEFUZZ_CASES sets the number of generated cases (default
// 240), CREDSWAP_STATEFUZZ_SEED the first seed (default 1; "random" picks
// one and prints it). A failing case prints its seed and statements; add
// it to pgFuzzRegressions.

// fzStep is one statement of a case. sql uses {T} for the case's table
// and {L} for its advisory lock key, which differ between the two sides.
type fzStep struct {
	kind string // "q": simple query; "prep": protocol Parse; "exec": Bind/Execute; "close": Close; "unnamed": unnamed Parse
	sql  string
	name string
	oids []uint32
	args []string
}

func (s fzStep) String() string {
	switch s.kind {
	case "q":
		return s.sql
	case "prep", "unnamed":
		return fmt.Sprintf("<parse %q %v: %s>", s.name, s.oids, s.sql)
	case "exec":
		return fmt.Sprintf("<execute %q %q>", s.name, s.args)
	case "close":
		return fmt.Sprintf("<close %q>", s.name)
	}
	return s.kind
}

// fzCase is a case in phases; the proxied session is moved between phases.
type fzCase struct {
	seed   uint64
	phases [][]fzStep
}

func (c fzCase) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d:\n", c.seed)
	for i, ph := range c.phases {
		if i > 0 {
			b.WriteString("  -- switch --\n")
		}
		for _, s := range ph {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	return b.String()
}

// pgFuzzRegressions are cases that once differed, kept as they were found.
var pgFuzzRegressions = []fzCase{
	{seed: 0, phases: [][]fzStep{
		{{kind: "q", sql: "SET work_mem = '5MB'"}, {kind: "q", sql: "PREPARE p1(int) AS SELECT $1 + 1"}},
		{{kind: "q", sql: "EXECUTE p1(1)"}},
		{{kind: "q", sql: "EXECUTE p1(2)"}},
	}},
	{seed: 0, phases: [][]fzStep{
		{{kind: "q", sql: "BEGIN"}, {kind: "q", sql: "CREATE TEMP TABLE tt (x int) ON COMMIT DROP"},
			{kind: "prep", name: "s1", sql: "INSERT INTO tt VALUES ($1)"}, {kind: "q", sql: "COMMIT"}},
		{{kind: "exec", name: "s1", args: []string{"1"}}, {kind: "q", sql: "BEGIN"},
			{kind: "q", sql: "CREATE TEMP TABLE tt (x int) ON COMMIT DROP"}, {kind: "exec", name: "s1", args: []string{"2"}},
			{kind: "q", sql: "COMMIT"}},
		{},
	}},
	// A pinned session's pin check destroyed its unnamed statement.
	{seed: 0, phases: [][]fzStep{
		{{kind: "q", sql: "DECLARE cur CURSOR WITH HOLD FOR SELECT 1"}},
		{{kind: "unnamed", sql: "SELECT 41 + 1"}, {kind: "exec", name: ""}, {kind: "exec", name: ""}},
		{{kind: "exec", name: ""}},
	}},
	{seed: 0, phases: [][]fzStep{
		{{kind: "prep", name: "big", sql: arrayOfParams(65536)}},
		{{kind: "q", sql: "SET search_path = fz_b, public"}},
		{},
	}},
}

// pgFuzzSettings are settings a client may change, with values to set.
var pgFuzzSettings = map[string][]string{
	"search_path":                   {"fz_a, public", "fz_b, public", `"$user", public`, "public"},
	"TimeZone":                      {"UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"},
	"DateStyle":                     {"ISO, MDY", "SQL, DMY", "German", "Postgres, YMD"},
	"IntervalStyle":                 {"postgres", "iso_8601", "sql_standard"},
	"statement_timeout":             {"0", "5s", "1min"},
	"work_mem":                      {"4MB", "5MB", "64kB"},
	"application_name":              {"fz1", "fz two", "fz'three"},
	"extra_float_digits":            {"0", "1", "3", "-2"},
	"bytea_output":                  {"hex", "escape"},
	"client_min_messages":           {"notice", "warning", "error"},
	"enable_seqscan":                {"on", "off"},
	"default_transaction_isolation": {"read committed", "repeatable read", "serializable"},
	"standard_conforming_strings":   {"on", "off"},
	"lock_timeout":                  {"0", "2s"},
	"row_security":                  {"on", "off"},
	"xmloption":                     {"content", "document"},
	"check_function_bodies":         {"on", "off"},
	"default_transaction_read_only": {"off", "on"},
}

// pgFuzzQueries are statement texts prepared by the cases.
var pgFuzzQueries = []struct {
	sql    string
	params int
}{
	{"SELECT $1::int + 1", 1},
	{"SELECT x, y FROM {T} WHERE x = $1", 1},
	{"SELECT count(*) FROM {T}", 0},
	{"SELECT * FROM {T}", 0},
	{"INSERT INTO {T} (x, y) VALUES ($1, $2)", 2},
	{"SELECT current_setting('search_path'), $1::text", 1},
	{"SELECT f()", 0},
	{"SELECT now()::date = current_date, $1", 1},
}

// genPGCase draws a case from seed.
func genPGCase(seed uint64) fzCase {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	c := fzCase{seed: seed, phases: make([][]fzStep, 3)}
	inTx := false
	names := []string{"s1", "s2", "s3"}
	sqlNames := []string{"p1", "p2"}
	settingNames := slices.Sorted(func(yield func(string) bool) {
		for k := range pgFuzzSettings {
			if !yield(k) {
				return
			}
		}
	})
	pickSetting := func() (string, string) {
		n := settingNames[r.IntN(len(settingNames))]
		vs := pgFuzzSettings[n]
		return n, vs[r.IntN(len(vs))]
	}
	lit := func(v string) string { return "'" + strings.ReplaceAll(v, "'", "''") + "'" }
	query := func() (string, int) {
		q := pgFuzzQueries[r.IntN(len(pgFuzzQueries))]
		return q.sql, q.params
	}
	args := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = strconv.Itoa(r.IntN(5))
		}
		return out
	}
	for ph := range c.phases {
		n := r.IntN(8)
		if ph == 0 {
			n += 2
		}
		for range n {
			var s fzStep
			switch k := r.IntN(34); {
			case k < 5:
				name, v := pickSetting()
				s = fzStep{kind: "q", sql: "SET " + []string{"", "SESSION ", "LOCAL "}[r.IntN(3)] + name + " = " + lit(v)}
			case k < 7:
				name, v := pickSetting()
				s = fzStep{kind: "q", sql: fmt.Sprintf("SELECT set_config(%s, %s, %v)", lit(name), lit(v), r.IntN(3) == 0)}
			case k < 8:
				name, _ := pickSetting()
				s = fzStep{kind: "q", sql: []string{"RESET " + name, "RESET ALL"}[r.IntN(2)]}
			case k < 9:
				name, v := pickSetting()
				s = fzStep{kind: "q", sql: fmt.Sprintf("SELECT fz_set(%s, %s)", lit(name), lit(v))}
			case k < 11:
				key := []string{"fz.tenant", "fz.user_id", "Fz.Mixed"}[r.IntN(3)]
				v := []string{"acme", "7", "", "a'b"}[r.IntN(4)]
				switch r.IntN(4) {
				case 0:
					s = fzStep{kind: "q", sql: fmt.Sprintf("SET %s = %s", key, lit(v))}
				case 1:
					s = fzStep{kind: "q", sql: fmt.Sprintf("SELECT set_config(%s, %s, %v)", lit(key), lit(v), r.IntN(2) == 0)}
				case 2:
					s = fzStep{kind: "q", sql: "RESET " + key}
				default:
					s = fzStep{kind: "q", sql: fmt.Sprintf("SELECT current_setting(%s, true)", lit(key))}
				}
			case k < 12:
				s = fzStep{kind: "q", sql: []string{"SET ROLE fz_role", "RESET ROLE", "SET ROLE NONE", "SELECT current_user"}[r.IntN(4)]}
			case k < 15:
				if !inTx {
					s = fzStep{kind: "q", sql: []string{"BEGIN", "BEGIN ISOLATION LEVEL SERIALIZABLE", "START TRANSACTION READ ONLY"}[r.IntN(3)]}
					inTx = true
				} else {
					s = fzStep{kind: "q", sql: []string{"COMMIT", "ROLLBACK", "SAVEPOINT sp", "ROLLBACK TO SAVEPOINT sp", "SELECT 1/0"}[r.IntN(5)]}
					if s.sql == "COMMIT" || s.sql == "ROLLBACK" {
						inTx = false
					}
				}
			case k < 18:
				q, np := query()
				types := ""
				if np > 0 && r.IntN(2) == 0 {
					types = "(" + strings.Repeat("int,", np)[:4*np-1] + ")"
				}
				name := sqlNames[r.IntN(len(sqlNames))]
				prep := fmt.Sprintf("PREPARE %s%s AS %s", name, types, q)
				if r.IntN(8) == 0 {
					prep = "SET work_mem = '3MB'; " + prep // a multi-statement PREPARE: pins
				}
				s = fzStep{kind: "q", sql: prep}
			case k < 19:
				s = fzStep{kind: "q", sql: []string{"DEALLOCATE p1", "DEALLOCATE PREPARE p2", "DEALLOCATE ALL", "EXECUTE p1(1)", "EXECUTE p2"}[r.IntN(5)]}
			case k < 22:
				q, np := query()
				oids := make([]uint32, 0, np)
				if r.IntN(2) == 0 {
					for range np {
						oids = append(oids, []uint32{0, 23, 20, 25}[r.IntN(4)])
					}
				}
				if r.IntN(4) == 0 {
					s = fzStep{kind: "unnamed", sql: q, oids: oids}
				} else {
					s = fzStep{kind: "prep", name: names[r.IntN(len(names))], sql: q, oids: oids}
				}
			case k < 24:
				_, np := query()
				s = fzStep{kind: "exec", name: append(names, "")[r.IntN(len(names)+1)], args: args(np)}
			case k < 25:
				s = fzStep{kind: "close", name: names[r.IntN(len(names))]}
			case k < 26:
				s = fzStep{kind: "q", sql: []string{"LISTEN jobs", `LISTEN "Mixed Case"`, "UNLISTEN jobs", "UNLISTEN *"}[r.IntN(4)]}
			case k < 29:
				s = fzStep{kind: "q", sql: []string{"DROP TABLE IF EXISTS {T}", "CREATE TABLE IF NOT EXISTS {T} (x int, y text)",
					"ALTER TABLE {T} ADD COLUMN z int", "INSERT INTO {T} VALUES (1, 'one')", "TRUNCATE {T}"}[r.IntN(5)]}
			case k < 30:
				s = fzStep{kind: "q", sql: []string{"CREATE TEMP TABLE tt (x int)", "DROP TABLE IF EXISTS tt", "DISCARD TEMP",
					"CREATE TEMP TABLE tc (x int) ON COMMIT DROP", "CREATE TEMP TABLE td (x int) ON COMMIT DELETE ROWS"}[r.IntN(5)]}
			case k < 31:
				s = fzStep{kind: "q", sql: []string{"DECLARE cur CURSOR WITH HOLD FOR SELECT 1", "CLOSE cur", "CLOSE ALL",
					"DECLARE c2 CURSOR FOR SELECT 2"}[r.IntN(4)]}
			case k < 32:
				s = fzStep{kind: "q", sql: []string{"SELECT pg_advisory_lock({L})", "SELECT pg_advisory_unlock({L})",
					"SELECT pg_advisory_unlock_all()", "SELECT pg_advisory_xact_lock({L})"}[r.IntN(4)]}
			case k < 33:
				s = fzStep{kind: "q", sql: []string{"DISCARD ALL", "DISCARD PLANS", "DISCARD SEQUENCES"}[r.IntN(3)]}
			default:
				s = fzStep{kind: "q", sql: []string{"SHOW search_path", "SELECT f()", "SELECT now() = now()", "SHOW ALL"}[r.IntN(4)]}
			}
			c.phases[ph] = append(c.phases[ph], s)
		}
		if inTx { // switches happen between transactions
			c.phases[ph] = append(c.phases[ph], fzStep{kind: "q", sql: []string{"COMMIT", "ROLLBACK"}[r.IntN(2)]})
			inTx = false
		}
	}
	return c
}

// fzSide is one of the two sessions a case runs on.
type fzSide struct {
	c     *pgx.Conn
	table string
	lock  string
	login []string // backend user names, shown as <login>
}

// norm makes an answer comparable between the sides.
func (sd *fzSide) norm(s string) string {
	s = strings.ReplaceAll(s, sd.table, "{T}")
	for _, u := range sd.login {
		s = strings.ReplaceAll(s, u, "<login>")
	}
	return s
}

func (sd *fzSide) subst(sql string) string {
	return strings.NewReplacer("{T}", sd.table, "{L}", sd.lock).Replace(sql)
}

// answer runs one step and describes what the client saw.
func (sd *fzSide) answer(ctx context.Context, s fzStep) string {
	pc := sd.c.PgConn()
	var out string
	switch s.kind {
	case "q":
		rr, err := pc.Exec(ctx, sd.subst(s.sql)).ReadAll()
		out = fzResults(rr, err)
	case "prep", "unnamed":
		sdsc, err := pc.Prepare(ctx, s.name, sd.subst(s.sql), s.oids)
		if err == nil {
			out = fmt.Sprintf("params %v fields %d", sdsc.ParamOIDs, len(sdsc.Fields))
		} else {
			out = fzResults(nil, err)
		}
	case "exec":
		params := make([][]byte, len(s.args))
		for i, a := range s.args {
			params[i] = []byte(a)
		}
		r := pc.ExecPrepared(ctx, s.name, params, nil, nil).Read()
		out = fzResults([]*pgconn.Result{r}, nil)
	case "close":
		out = fzResults(nil, pc.Deallocate(ctx, s.name))
	}
	return sd.norm(out)
}

// knownDifference reports whether proxied answer a and direct answer b to
// step s differ in a way docs/swap.md lists: a Bind with the wrong number
// of parameters to a deferred statement (its table is still missing) gets
// the error of preparing it, where PostgreSQL, which still holds the
// statement, checks the parameter count first.
//
// And a statement whose result columns changed after it was prepared
// (ALTER TABLE ADD COLUMN under SELECT *): PostgreSQL refuses to run it
// (0A000), a new connection prepares it with its new columns.
func knownDifference(s fzStep, a, b string) bool {
	if (s.kind == "exec" || s.kind == "q" && strings.HasPrefix(s.sql, "EXECUTE ")) && strings.HasPrefix(b, resultTypeChanged) {
		return true
	}
	return s.kind == "exec" && strings.HasPrefix(b, "error 08P01 bind message supplies ") &&
		(strings.HasPrefix(a, "error 42P01 ") || strings.HasPrefix(a, "error 42703 "))
}

const resultTypeChanged = "error 0A000 cached plan must not change result type"

func fzResults(rr []*pgconn.Result, err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return "error " + pgErr.Code + " " + pgErr.Message
	}
	if err != nil {
		return "failure " + err.Error()
	}
	var b strings.Builder
	for _, r := range rr {
		if r.Err != nil {
			return fzResults(nil, r.Err)
		}
		b.WriteString(r.CommandTag.String())
		for _, row := range r.Rows {
			b.WriteString(" [")
			for i, v := range row {
				if i > 0 {
					b.WriteByte('|')
				}
				if v == nil {
					b.WriteString("NULL")
				} else {
					b.Write(v)
				}
			}
			b.WriteByte(']')
		}
		b.WriteByte(';')
	}
	return b.String()
}

// snapshot describes everything a session can observe about its own
// state, one line per key. Prepared statements are executed (with NULL
// parameters) before they are listed, so a statement the proxy deferred
// (deferred.go) is prepared by its first use if it can be.
func (sd *fzSide) snapshot(ctx context.Context, stmts []fzPrepared) map[string]string {
	pc := sd.c.PgConn()
	out := map[string]string{}
	for _, st := range stmts {
		r := pc.ExecPrepared(ctx, st.name, make([][]byte, st.params), nil, nil).Read()
		out["execute "+st.name] = sd.norm(fzResults([]*pgconn.Result{r}, nil))
	}
	rows := func(what, sql string) {
		rr, err := pc.Exec(ctx, sql).ReadAll()
		if err != nil || len(rr) != 1 {
			out[what] = sd.norm(fzResults(rr, err))
			return
		}
		for _, row := range rr[0].Rows {
			key := what
			if len(row) > 1 {
				key += " " + sd.norm(string(row[0]))
				row = row[1:]
			}
			var vals []string
			for _, v := range row {
				if v == nil {
					vals = append(vals, "NULL")
				} else {
					vals = append(vals, string(v))
				}
			}
			out[key] = sd.norm(strings.Join(vals, "|"))
		}
	}
	rows("statement", "SELECT name, statement, parameter_types::text, from_sql FROM pg_prepared_statements")
	rows("setting", "SELECT name, setting FROM pg_settings WHERE context IN ('user', 'superuser')")
	rows("custom", "SELECT 'custom', current_setting('fz.tenant', true), current_setting('fz.user_id', true), current_setting('fz.mixed', true)")
	rows("users", "SELECT 'users', current_user, session_user")
	rows("listening", "SELECT string_agg(c, ',' ORDER BY c) FROM pg_listening_channels() c")
	rows("temp", "SELECT relname, relkind FROM pg_class WHERE relnamespace = pg_my_temp_schema()")
	rows("cursor", "SELECT name, statement, is_holdable FROM pg_cursors")
	rows("locks", "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'")
	return out
}

// fzPrepared is a prepared statement of the direct session.
type fzPrepared struct {
	name   string
	params int
}

// compareSnapshots lists the keys whose values differ. A statement the
// proxy deferred because its objects are gone is not listed in
// pg_prepared_statements until it can be prepared (docs/swap.md): a
// statement missing from the proxied list is accepted when executing it
// failed in the same way on both sides.
func compareSnapshots(proxied, direct map[string]string) []string {
	var diffs []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		seen := map[string]bool{}
		for _, m := range []map[string]string{proxied, direct} {
			for k := range m {
				if !seen[k] {
					seen[k] = true
					if !yield(k) {
						return
					}
				}
			}
		}
	}) {
		a, aok := proxied[k]
		b, bok := direct[k]
		if aok && bok && a == b {
			continue
		}
		if strings.HasPrefix(k, "execute ") && strings.HasPrefix(b, resultTypeChanged) {
			continue // documented: the statement was prepared again with its new shape
		}
		if name, ok := strings.CutPrefix(k, "statement "); ok && !aok {
			if e := direct["execute "+name]; strings.HasPrefix(e, "error ") && proxied["execute "+name] == e {
				continue
			}
		}
		if !aok {
			a = "(none)"
		}
		if !bok {
			b = "(none)"
		}
		diffs = append(diffs, fmt.Sprintf("snapshot %s:\n    proxied %s\n    direct  %s", k, a, b))
	}
	return diffs
}

func TestStateFuzzPostgres(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	pg.Exec(t, "CREATE ROLE fz_owner NOLOGIN; CREATE ROLE fz_role NOLOGIN")
	pg.Exec(t, fmt.Sprintf("GRANT fz_owner, fz_role TO %s, %s; ALTER ROLE %s SET role = 'fz_owner'; ALTER ROLE %s SET role = 'fz_owner'",
		userA, userB, userA, userB))
	pg.Exec(t, fmt.Sprintf("GRANT ALL ON DATABASE %s TO fz_owner", db))
	pg.ExecIn(t, db, `GRANT ALL ON SCHEMA public TO fz_owner, fz_role;
		CREATE SCHEMA fz_a; CREATE SCHEMA fz_b; GRANT USAGE ON SCHEMA fz_a, fz_b TO PUBLIC;
		CREATE FUNCTION fz_a.f() RETURNS text LANGUAGE sql AS 'SELECT ''a''';
		CREATE FUNCTION fz_b.f() RETURNS text LANGUAGE sql AS 'SELECT ''b''';
		CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS 'SELECT ''public''';
		CREATE FUNCTION public.fz_set(text, text) RETURNS text LANGUAGE sql AS 'SELECT pg_catalog.set_config($1, $2, false)'`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, step := range [][2]string{
			{db, "REASSIGN OWNED BY fz_owner TO postgres; DROP OWNED BY fz_owner, fz_role"},
			{"postgres", "DROP OWNED BY fz_owner, fz_role; DROP ROLE fz_owner; DROP ROLE fz_role"},
		} {
			cfg, err := pg.ConnConfig(pg.SuperUser, pg.SuperPassword, step[0])
			if err != nil {
				t.Error(err)
				return
			}
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := c.Exec(ctx, step[1]); err != nil {
				t.Errorf("cleanup: %v", err)
			}
			c.Close(ctx)
		}
	})
	ca := testenv.TestCA(t)
	p := proxytest.Start(t, pg, userA, passA, withTLS(t, ca, false))

	cases := slices.Clone(pgFuzzRegressions)
	n, first := proxytest.StateFuzzCases(t)
	for i := range n {
		cases = append(cases, genPGCase(first+uint64(i)))
	}

	users := [2][2]string{{userB, passB}, {userA, passA}}
	rotations := 0
	rotate := func() {
		u := users[rotations%2]
		rotations++
		p.RotateTo(t, u[0], u[1])
		// Every session moves, or is pinned and says why.
		proxytest.Eventually(t, 20*time.Second, "every fuzz session to move or be pinned", func() bool {
			b := p.Backend()
			for _, s := range b.Sessions.Behind(b.Store.Current().N) {
				if s.Info().PinReason == "" {
					return false
				}
			}
			return b.Target().N == b.Store.Current().N
		})
	}

	const group = 24
	failures := 0
	for g := 0; g < len(cases) && failures < 5; g += group {
		batch := cases[g:min(g+group, len(cases))]
		useTLS := (g/group)%3 == 2
		failures += runFuzzGroup(t, p, pg, db, userA, passA, ca, useTLS, batch, g, rotate, []string{userA, userB})
	}
	t.Logf("%d cases, %d rotations", len(cases), rotations)
}

// runFuzzGroup runs a group of cases side by side: each phase on every
// case, then one rotation, and finally the snapshots. It returns how many
// cases differed.
func runFuzzGroup(t *testing.T, p *proxytest.Proxy, pg *testenv.Postgres, db, user, pass string, ca *testenv.CA, useTLS bool,
	batch []fzCase, base int, rotate func(), logins []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type pair struct {
		direct, proxied *fzSide
		diffs           []string
		pinned          string
	}
	pairs := make([]*pair, len(batch))
	var known atomic.Int64
	cfg, err := pg.ConnConfig(user, pass, db)
	if err != nil {
		t.Fatal(err)
	}
	delete(cfg.RuntimeParams, "application_name") // as through the proxy
	for i := range batch {
		id := base + i
		dc, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var pcn *pgx.Conn
		if useTLS {
			pcn, err = connect(ctx, strings.Replace(p.ConnString(db), "sslmode=disable", "sslmode=verify-full", 1)+" host=localhost", ca.ClientTLSConfig("localhost"))
		} else {
			pcn, err = connect(ctx, p.ConnString(db), nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		pairs[i] = &pair{
			direct:  &fzSide{c: dc, table: fmt.Sprintf("fzt_%d_d", id), lock: strconv.Itoa(2 * id), login: logins},
			proxied: &fzSide{c: pcn, table: fmt.Sprintf("fzt_%d_p", id), lock: strconv.Itoa(2*id + 1), login: logins},
		}
	}
	defer func() {
		for _, pr := range pairs {
			for _, sd := range []*fzSide{pr.direct, pr.proxied} {
				sd.c.Exec(ctx, "DROP TABLE IF EXISTS "+sd.table)
				sd.c.Close(ctx)
			}
		}
	}()
	setup := fzStep{kind: "q", sql: "CREATE TABLE {T} (x int, y text)"}
	for ph := 0; ph < 3; ph++ {
		var wg sync.WaitGroup
		for i, c := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pr := pairs[i]
				steps := c.phases[ph]
				if ph == 0 {
					steps = append([]fzStep{setup}, steps...)
				}
				for j, s := range steps {
					a, b := pr.proxied.answer(ctx, s), pr.direct.answer(ctx, s)
					if a != b && knownDifference(s, a, b) {
						known.Add(1)
					} else if a != b {
						pr.diffs = append(pr.diffs, fmt.Sprintf("phase %d step %d %s:\n    proxied %s\n    direct  %s", ph, j, s, a, b))
					}
				}
			}()
		}
		wg.Wait()
		if ph < 2 {
			rotate()
			for _, pr := range pairs {
				if st := sessionOf(p, pr.proxied); st != "" && pr.pinned == "" {
					pr.pinned = st
				}
			}
		}
	}
	failed := 0
	var wg sync.WaitGroup
	for i, c := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr := pairs[i]
			stmts := preparedNames(ctx, pr.direct)
			pr.diffs = append(pr.diffs, compareSnapshots(pr.proxied.snapshot(ctx, stmts), pr.direct.snapshot(ctx, stmts))...)
			_ = c
		}()
	}
	wg.Wait()
	for i, pr := range pairs {
		if len(pr.diffs) > 0 {
			failed++
			t.Errorf("case %s (relay: %s, pinned: %q) differs:\n  %s", batch[i], map[bool]string{false: "loop", true: "TLS"}[useTLS], pr.pinned,
				strings.Join(pr.diffs, "\n  "))
		}
	}
	if n := known.Load(); n > 0 {
		t.Logf("%d answers differed in a documented way (docs/swap.md, known differences)", n)
	}
	if m := scrape(t, p); strings.Contains(m, `credswap_session_panics_total{backend="pg"} 1`) {
		t.Errorf("a session panicked:\n%s", p.Logs.Tail(30))
	}
	return failed
}

// sessionOf returns the pin reason the proxy reports for the session
// whose backend connection side's connection uses, or "".
func sessionOf(p *proxytest.Proxy, sd *fzSide) string {
	addr := sd.c.PgConn().Conn().LocalAddr().String()
	for _, s := range p.Backend().Sessions.Snapshot() {
		if info := s.Info(); info.Client == addr {
			return info.PinReason
		}
	}
	return ""
}

// preparedNames lists the prepared statements of a session.
func preparedNames(ctx context.Context, sd *fzSide) []fzPrepared {
	rr, err := sd.c.PgConn().Exec(ctx, "SELECT name, coalesce(array_length(parameter_types, 1), 0) FROM pg_prepared_statements ORDER BY name").ReadAll()
	if err != nil || len(rr) == 0 {
		return nil
	}
	var out []fzPrepared
	for _, row := range rr[0].Rows {
		n, _ := strconv.Atoi(string(row[1]))
		out = append(out, fzPrepared{string(row[0]), n})
	}
	return out
}
