package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// The MySQL state fuzzer is a differential test of session moves against
// MariaDB itself. Each case is a random sequence of statements that change
// session state, drawn from a grammar of what clients do (user variables
// of every type, SET NAMES and collations, sql_mode, time_zone,
// autocommit, isolation levels, USE, LAST_INSERT_ID, SQL and protocol
// prepared statements, GET_LOCK, temporary tables, DDL on the tables the
// statements use, errors, transactions). It runs on a session through
// credswap and on a direct connection to the same server as the same user;
// the proxied session is moved to a new backend connection between phases
// (the credential alternates between two users with the same grants), and
// every answer and a snapshot of everything the session can observe about
// itself must be equal on both sides. A session credswap reports pinned
// did not move, and must be equal all the same.
//
// CREDSWAP_STATEFUZZ_CASES sets the number of generated cases (default
// 240), CREDSWAP_STATEFUZZ_SEED the first seed (default 1; "random" picks
// one and prints it). A failing case prints its seed and statements; add
// it to myFuzzRegressions.

// myStep is one statement of a case. sql uses {T} for the case's table,
// {L} for its lock name and {DB}/{DB2} for the databases, which differ
// between the two sides where they must.
type myStep struct {
	kind   string // "q": text query; "prep": COM_STMT_PREPARE; "exec": COM_STMT_EXECUTE; "close": COM_STMT_CLOSE
	sql    string
	name   string
	args   []any
	params int // for "prep", and for a "q" that is a SQL PREPARE
}

func (s myStep) String() string {
	switch s.kind {
	case "prep":
		return fmt.Sprintf("<prepare %s: %s>", s.name, s.sql)
	case "exec":
		return fmt.Sprintf("<execute %s %v>", s.name, s.args)
	case "close":
		return fmt.Sprintf("<close %s>", s.name)
	}
	return s.sql
}

// myCase is a case in phases; the proxied session is moved between them.
// dsn holds extra connection parameters (a handshake collation).
type myCase struct {
	seed   uint64
	dsn    string
	phases [][]myStep
}

func (c myCase) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d (%q):\n", c.seed, c.dsn)
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

// myFuzzRegressions are cases that once differed, kept as they were found.
var myFuzzRegressions = []myCase{
	{phases: [][]myStep{
		{{kind: "q", sql: "INSERT INTO {T} (v) VALUES ('a')"}, {kind: "q", sql: "SET @id = LAST_INSERT_ID()"}},
		{{kind: "q", sql: "SELECT @id = 1, @id"}},
		{},
	}},
	{dsn: "collation=latin1_swedish_ci", phases: [][]myStep{
		{{kind: "q", sql: "SET NAMES utf8mb4"}}, {{kind: "q", sql: "SELECT HEX('é'), @@character_set_client"}}, {},
	}},
	{dsn: "collation=cp1257_bin", phases: [][]myStep{{}, {{kind: "q", sql: "SELECT @@collation_connection"}}, {}}},
	{dsn: "collation=cp1257_bin", phases: [][]myStep{
		{{kind: "q", sql: "SET NAMES utf8mb3"}, {kind: "q", sql: "SET collation_connection = utf8mb4_unicode_ci"}, {kind: "q", sql: "SET sql_select_limit = 3"}},
		{}, {},
	}},
	{phases: [][]myStep{{{kind: "q", sql: "SET character_set_results = NULL"}}, {{kind: "q", sql: "SELECT 'é'"}}, {}}},
	{phases: [][]myStep{{{kind: "q", sql: "SET @n = 0, @d = 1.5, @s = 'x', @u = CAST(1 AS UNSIGNED), @f = 1e0"},
		{kind: "q", sql: "SET @n = NULL, @d = NULL, @s = NULL, @u = NULL, @f = NULL"}}, {}, {}}},
}

// myFuzzValues are expressions assigned to user variables.
var myFuzzValues = []string{
	"1", "-5", "0", "9223372036854775807", "-9223372036854775808", "18446744073709551615",
	"CAST(-1 AS UNSIGNED)", "CAST(7 AS UNSIGNED)", "LAST_INSERT_ID()", "1.5", "1.50", "-0.001", "12345678901234567890.123",
	"1e0", "0.1e0 + 0.2e0", "1.7976931348623157e308", "-2.5e-10", "'text'", "''", "'it''s'",
	"_latin1 X'E9'", "_utf8mb4 X'F09F9880'", "_utf8mb4'naïve' COLLATE utf8mb4_bin", "CONVERT('x' USING ucs2)",
	"X'00FF10'", "X''", "b'101'", "NULL", "TRUE", "REPEAT('x', 3000)", "REPEAT(_utf8mb4 X'C3A9', 1500)",
	"NOW() - NOW()", "DATE('2024-05-06')", "@fz1", "CONCAT(@fz2, 'a')", "(SELECT COUNT(*) FROM {T})",
}

// myFuzzSettings are session settings with values to set.
var myFuzzSettings = []string{
	"SET NAMES latin1", "SET NAMES utf8mb4", "SET NAMES utf8mb4 COLLATE utf8mb4_bin", "SET NAMES utf8mb3",
	"SET NAMES binary", "SET CHARACTER SET latin1", "SET CHARACTER SET utf8mb4", "SET character_set_results = NULL",
	"SET collation_connection = utf8mb4_unicode_ci", "SET collation_connection = latin1_bin",
	"SET character_set_client = cp1257", "SET character_set_connection = utf8mb4",
	"SET sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES'", "SET sql_mode = ''", "SET sql_mode = DEFAULT",
	"SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'", "SET time_zone = '+05:30'", "SET time_zone = 'SYSTEM'",
	"SET time_zone = '-08:00'", "SET autocommit = 0", "SET autocommit = 1",
	"SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
	"SET SESSION TRANSACTION READ ONLY", "SET SESSION TRANSACTION READ WRITE", "SET wait_timeout = 1234",
	"SET max_join_size = 1000000", "SET group_concat_max_len = 5000", "SET div_precision_increment = 8",
	"SET sql_select_limit = 3", "SET sql_select_limit = DEFAULT", "SET lc_time_names = 'de_DE'",
	"SET unique_checks = 0", "SET foreign_key_checks = 0", "SET sql_safe_updates = 1", "SET big_tables = 1",
	"SET max_statement_time = 30", "SET default_storage_engine = MyISAM", "SET optimizer_search_depth = 10",
	"SET @@session.net_write_timeout = 99", "SET SESSION sql_auto_is_null = 1", "SET character_set_results = utf8mb4",
}

// myFuzzQueries are statement texts prepared by the cases, with their
// parameter counts.
var myFuzzQueries = []struct {
	sql    string
	params int
}{
	{"SELECT ? + 1", 1},
	{"SELECT CONCAT(?, ?)", 2},
	{"SELECT id, v FROM {T} ORDER BY id", 0},
	{"INSERT INTO {T} (v) VALUES (?)", 1},
	{"SELECT COUNT(*) FROM {T} WHERE v = ?", 1},
	{"SELECT @fz1, @fz2", 0},
	{"SELECT DATABASE()", 0},
	// Literals that depend on the connection's character set at prepare
	// time are left out: a statement is prepared again under the settings
	// of the moment of the switch (docs/mysql.md, known differences).
	{"SELECT _latin1 X'E9', _utf8mb4 X'C3A9', @@character_set_connection", 0},
	{"SELECT NOW() = NOW(), ? IS NULL", 1},
	{"UPDATE {T} SET v = ? WHERE id = 1", 1},
	{"SELECT * FROM missing_table", 0},
	{"SELECT x FROM {T}", 0},
}

// genMyCase draws a case of three phases from seed.
func genMyCase(seed uint64) myCase {
	r := rand.New(rand.NewPCG(seed, 0x6d79))
	c := myCase{seed: seed, dsn: []string{"", "", "collation=latin1_swedish_ci", "collation=cp1257_bin", "collation=utf8mb4_bin"}[r.IntN(5)]}
	stmtNames := []string{"s1", "s2"}
	sqlNames := []string{"p1", "p2"}
	for range 3 {
		var ph []myStep
		for range r.IntN(8) {
			var s myStep
			switch k := r.IntN(30); {
			case k < 6:
				s = myStep{kind: "q", sql: fmt.Sprintf("SET @fz%d = %s", 1+r.IntN(4), myFuzzValues[r.IntN(len(myFuzzValues))])}
			case k < 7:
				s = myStep{kind: "q", sql: fmt.Sprintf("SELECT @fz%d := %s", 1+r.IntN(4), myFuzzValues[r.IntN(len(myFuzzValues))])}
			case k < 12:
				s = myStep{kind: "q", sql: myFuzzSettings[r.IntN(len(myFuzzSettings))]}
			case k < 13:
				s = myStep{kind: "q", sql: []string{"USE {DB2}", "USE {DB}"}[r.IntN(2)]}
			case k < 15:
				s = myStep{kind: "q", sql: []string{"INSERT INTO {T} (v) VALUES ('x')", "SELECT LAST_INSERT_ID(42)",
					"INSERT INTO {T} (v) VALUES ('y'), ('z')", "SELECT LAST_INSERT_ID()", "DELETE FROM {T} WHERE id > 2"}[r.IntN(5)]}
			case k < 17:
				q := myFuzzQueries[r.IntN(len(myFuzzQueries))]
				name := sqlNames[r.IntN(len(sqlNames))]
				text := strings.ReplaceAll(q.sql, "'", "''")
				s = myStep{kind: "q", sql: fmt.Sprintf("PREPARE %s FROM '%s'", name, text), name: name, params: q.params}
			case k < 18:
				s = myStep{kind: "q", sql: fmt.Sprintf("DEALLOCATE PREPARE %s", sqlNames[r.IntN(len(sqlNames))])}
			case k < 19:
				name := sqlNames[r.IntN(len(sqlNames))]
				s = myStep{kind: "q", sql: fmt.Sprintf("EXECUTE %s USING @fz1", name)}
			case k < 22:
				q := myFuzzQueries[r.IntN(len(myFuzzQueries))]
				s = myStep{kind: "prep", name: stmtNames[r.IntN(len(stmtNames))], sql: q.sql, params: q.params}
			case k < 24:
				n := r.IntN(3)
				args := make([]any, n)
				for i := range args {
					args[i] = []any{int64(7), "str", 2.5, nil, []byte{0, 0xff}, uint64(1 << 63)}[r.IntN(6)]
				}
				s = myStep{kind: "exec", name: stmtNames[r.IntN(len(stmtNames))], args: args}
			case k < 25:
				s = myStep{kind: "close", name: stmtNames[r.IntN(len(stmtNames))]}
			case k < 26:
				s = myStep{kind: "q", sql: []string{"SELECT GET_LOCK('{L}', 0)", "SELECT RELEASE_LOCK('{L}')", "SELECT RELEASE_ALL_LOCKS()"}[r.IntN(3)]}
			case k < 27:
				s = myStep{kind: "q", sql: []string{"CREATE TEMPORARY TABLE fz_tmp (x INT)", "DROP TEMPORARY TABLE IF EXISTS fz_tmp"}[r.IntN(2)]}
			case k < 28:
				s = myStep{kind: "q", sql: []string{"DROP TABLE IF EXISTS {T}", "CREATE TABLE IF NOT EXISTS {T} (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))",
					"ALTER TABLE {T} ADD COLUMN x INT", "TRUNCATE {T}"}[r.IntN(4)]}
			case k < 29:
				s = myStep{kind: "q", sql: []string{"BEGIN", "COMMIT", "ROLLBACK", "SELECT 1/0", "SELECT * FROM nowhere"}[r.IntN(5)]}
			default:
				s = myStep{kind: "q", sql: "SELECT @fz1, @fz2, @fz3, @fz4"}
			}
			ph = append(ph, s)
		}
		// Every phase ends outside a transaction, so that the session can
		// move (autocommit = 0 opens one with the next statement).
		ph = append(ph, myStep{kind: "q", sql: "COMMIT"})
		c.phases = append(c.phases, ph)
	}
	return c
}

// mySide is one of the two sessions of a case.
type mySide struct {
	sdb      *sql.DB
	c        *sql.Conn
	table    string
	lock     string
	db, db2  string
	stmts    map[string]*sql.Stmt
	params   map[string]int // of stmts
	sqlPreps map[string]int // SQL PREPAREs run, with parameter counts
}

func (sd *mySide) subst(s string) string {
	return strings.NewReplacer("{T}", sd.table, "{L}", sd.lock, "{DB2}", sd.db2, "{DB}", sd.db).Replace(s)
}

// norm makes the side's own names the placeholders again.
func (sd *mySide) norm(s string) string {
	return strings.NewReplacer(sd.table, "{T}", sd.lock, "{L}", sd.db2, "{DB2}", sd.db, "{DB}").Replace(s)
}

// answer runs one step and describes what the client saw.
func (sd *mySide) answer(ctx context.Context, s myStep) string {
	var out string
	switch s.kind {
	case "q":
		out = myRows(sd.c.QueryContext(ctx, sd.subst(s.sql)))
		if s.name != "" && strings.HasPrefix(s.sql, "PREPARE ") && !strings.HasPrefix(out, "error") {
			sd.sqlPreps[s.name] = s.params
		}
		if name, ok := strings.CutPrefix(s.sql, "DEALLOCATE PREPARE "); ok && !strings.HasPrefix(out, "error") {
			delete(sd.sqlPreps, name)
		}
	case "prep":
		if old := sd.stmts[s.name]; old != nil {
			old.Close()
			delete(sd.stmts, s.name)
		}
		st, err := sd.c.PrepareContext(ctx, sd.subst(s.sql))
		if err != nil {
			out = myErr(err)
			break
		}
		sd.stmts[s.name], sd.params[s.name] = st, s.params
		out = "prepared"
	case "exec":
		st := sd.stmts[s.name]
		if st == nil {
			return "no statement"
		}
		out = myRows(st.QueryContext(ctx, s.args...))
	case "close":
		if st := sd.stmts[s.name]; st != nil {
			out = myErr(st.Close())
			delete(sd.stmts, s.name)
		}
	}
	return sd.norm(out)
}

func myErr(err error) string {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return fmt.Sprintf("error %d %s", me.Number, me.Message)
	}
	if err != nil {
		return "failure " + err.Error()
	}
	return "ok"
}

// myRows reads every row and describes the column types and values.
func myRows(rows *sql.Rows, err error) string {
	if err != nil {
		return myErr(err)
	}
	defer rows.Close()
	var b strings.Builder
	for {
		types, _ := rows.ColumnTypes()
		for _, ct := range types {
			b.WriteString(ct.DatabaseTypeName() + " ")
		}
		vals := make([]sql.RawBytes, len(types))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				return myErr(err)
			}
			b.WriteString("[")
			for i, v := range vals {
				if i > 0 {
					b.WriteByte('|')
				}
				if v == nil {
					b.WriteString("NULL")
				} else {
					fmt.Fprintf(&b, "%q", v)
				}
			}
			b.WriteString("]")
		}
		if !rows.NextResultSet() {
			break
		}
		b.WriteString("; ")
	}
	if err := rows.Err(); err != nil {
		return myErr(err)
	}
	return b.String()
}

// myVarsSkipped are session variables that differ between any two
// connections (ids, clocks, counters) or that only a login sets.
var myVarsSkipped = map[string]bool{
	"PSEUDO_THREAD_ID": true, "TIMESTAMP": true, "RAND_SEED1": true, "RAND_SEED2": true,
	"WARNING_COUNT": true, "ERROR_COUNT": true, "LAST_INSERT_ID": true, "INSERT_ID": true, "IDENTITY": true,
	"LAST_GTID": true, "GTID_SEQ_NO": true, "EXTERNAL_USER": true, "PROXY_USER": true,
	"THREAD_ID": true, "IN_TRANSACTION": true,
}

// snapshot describes everything the session can observe about itself.
func (sd *mySide) snapshot(ctx context.Context) map[string]string {
	out := map[string]string{}
	q := func(key, sql string) { out[key] = sd.norm(myRows(sd.c.QueryContext(ctx, sql))) }
	// Plain utf8mb4 results, so every value reads the same; the session's
	// own character sets were read before.
	q("charsets", "SELECT @@character_set_client, @@character_set_connection, @@character_set_results, @@collation_connection")
	q("db", "SELECT DATABASE(), LAST_INSERT_ID(), @@in_transaction")
	rows, err := sd.c.QueryContext(ctx, "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.SESSION_VARIABLES ORDER BY VARIABLE_NAME LIMIT 100000")
	if err != nil {
		out["variables"] = myErr(err)
	} else {
		for rows.Next() {
			var name string
			var value sql.NullString
			if err := rows.Scan(&name, &value); err != nil {
				out["variables"] = myErr(err)
				break
			}
			if !myVarsSkipped[name] {
				out["variable "+name] = fmt.Sprintf("%q %v", value.String, value.Valid)
			}
		}
		rows.Close()
	}
	rows, err = sd.c.QueryContext(ctx, "SELECT VARIABLE_NAME FROM information_schema.USER_VARIABLES ORDER BY VARIABLE_NAME LIMIT 100000")
	var names []string
	if err == nil {
		for rows.Next() {
			var n string
			rows.Scan(&n)
			names = append(names, n)
		}
		rows.Close()
	}
	out["user variables"] = strings.Join(names, ",")
	for _, n := range names {
		v := "@`" + n + "`"
		q("user variable "+n, fmt.Sprintf("SELECT VARIABLE_TYPE, CHARACTER_SET_NAME, HEX(%s), COLLATION(%s), CHARSET(%s), %s IS NULL "+
			"FROM information_schema.USER_VARIABLES WHERE VARIABLE_NAME = '%s'", v, v, v, v, n))
	}
	for _, name := range slices.Sorted(mapKeys(sd.stmts)) {
		args := make([]any, sd.params[name])
		for i := range args {
			args[i] = int64(i + 1)
		}
		out["statement "+name] = sd.norm(myRows(sd.stmts[name].QueryContext(ctx, args...)))
	}
	for _, name := range slices.Sorted(mapKeys(sd.sqlPreps)) {
		using := ""
		if n := sd.sqlPreps[name]; n > 0 {
			using = " USING " + strings.Repeat("@fz1, ", n-1) + "@fz1"
		}
		q("sql statement "+name, "EXECUTE "+name+using)
	}
	return out
}

func mapKeys[M ~map[string]V, V any](m M) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestStateFuzzMySQL runs the regression cases and generated ones through
// credswap and directly against MariaDB and compares them.
func TestStateFuzzMySQL(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	db2 := m.CreateDatabase(t)
	m.Grant(t, userA, db2)
	m.Grant(t, userB, db2)
	p := proxytest.StartMySQL(t, m, userA, passA)

	cases := slices.Clone(myFuzzRegressions)
	n, first := proxytest.StateFuzzCases(t)
	for i := range n {
		cases = append(cases, genMyCase(first+uint64(i)))
	}

	users := [2][2]string{{userB, passB}, {userA, passA}}
	rotations := 0
	rotate := func() {
		u := users[rotations%2]
		rotations++
		p.RotateTo(t, u[0], u[1])
		var stuck []string
		deadline := time.Now().Add(20 * time.Second)
		for {
			b := p.Backend()
			stuck = stuck[:0]
			for _, s := range b.Sessions.Behind(b.Store.Current().N) {
				if info := s.Info(); info.PinReason == "" {
					stuck = append(stuck, fmt.Sprintf("%+v", info))
				}
			}
			if len(stuck) == 0 && b.Target().N == b.Store.Current().N {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sessions neither moved nor pinned (target %d, current %d):\n%s", b.Target().N, b.Store.Current().N, strings.Join(stuck, "\n"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	const group = 24
	failures := 0
	for g := 0; g < len(cases) && failures < 5; g += group {
		batch := cases[g:min(g+group, len(cases))]
		failures += runMyFuzzGroup(t, p, m, db, db2, userA, passA, batch, g, rotate)
	}
	t.Logf("%d cases, %d rotations", len(cases), rotations)
	if strings.Contains(p.Logs.String(), "session switch failed") {
		t.Errorf("a switch failed:\n%s", p.Logs.Tail(30))
	}
}

// runMyFuzzGroup runs a group of cases side by side: each phase on every
// case, then a rotation, and finally the snapshots. It returns how many
// cases differed.
func runMyFuzzGroup(t *testing.T, p *proxytest.Proxy, m *testenv.MariaDB, db, db2, user, pass string,
	batch []myCase, base int, rotate func()) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type pair struct {
		direct, proxied *mySide
		diffs           []string
	}
	pairs := make([]*pair, len(batch))
	for i, c := range batch {
		id := base + i
		params := "interpolateParams=false&multiStatements=false"
		if c.dsn != "" {
			params += "&" + c.dsn
		}
		side := func(dsn, suffix string) *mySide {
			sdb, err := sql.Open("mysql", dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sdb.Close() })
			cn, err := sdb.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cn.Close() })
			return &mySide{sdb: sdb, c: cn, table: fmt.Sprintf("fzt_%d_%s", id, suffix), lock: fmt.Sprintf("fzl_%d_%s", id, suffix),
				db: db, db2: db2, stmts: map[string]*sql.Stmt{}, params: map[string]int{}, sqlPreps: map[string]int{}}
		}
		pairs[i] = &pair{
			direct:  side(fmt.Sprintf("%s:%s@tcp(%s)/%s?%s", user, pass, m.Addr(), db, params), "d"),
			proxied: side(p.DSN(db, params), "p"),
		}
	}
	setup := myStep{kind: "q", sql: "CREATE TABLE {T} (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))"}
	for ph := 0; ph < 3; ph++ {
		var wg sync.WaitGroup
		for i, c := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pr := pairs[i]
				steps := c.phases[ph]
				if ph == 0 {
					steps = append([]myStep{setup}, steps...)
				}
				for j, s := range steps {
					a, b := pr.proxied.answer(ctx, s), pr.direct.answer(ctx, s)
					if a != b {
						pr.diffs = append(pr.diffs, fmt.Sprintf("phase %d step %d %s:\n    proxied %s\n    direct  %s", ph, j, s, a, b))
					}
				}
			}()
		}
		wg.Wait()
		if ph < 2 {
			rotate()
		}
	}
	failed := 0
	var wg sync.WaitGroup
	for i := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr := pairs[i]
			a, b := pr.proxied.snapshot(ctx), pr.direct.snapshot(ctx)
			for _, k := range slices.Sorted(mapKeys(b)) {
				if a[k] != b[k] {
					pr.diffs = append(pr.diffs, fmt.Sprintf("snapshot %s:\n    proxied %s\n    direct  %s", k, a[k], b[k]))
				}
			}
			for k := range a {
				if _, ok := b[k]; !ok {
					pr.diffs = append(pr.diffs, fmt.Sprintf("snapshot %s only proxied: %s", k, a[k]))
				}
			}
		}()
	}
	wg.Wait()
	for i, pr := range pairs {
		if len(pr.diffs) > 0 {
			failed++
			t.Errorf("case %s differs:\n  %s", batch[i], strings.Join(pr.diffs, "\n  "))
		}
		// Drop the case's tables and locks with its sessions.
		pr.direct.c.ExecContext(ctx, "DROP TABLE IF EXISTS "+pr.direct.table)
		pr.proxied.c.ExecContext(ctx, "DROP TABLE IF EXISTS "+pr.proxied.table)
		pr.direct.c.Close()
		pr.proxied.c.Close()
		pr.direct.sdb.Close() // ends the connections, not only the Conns
		pr.proxied.sdb.Close()
	}
	if met := scrape(t, p); strings.Contains(met, `credswap_session_panics_total{backend="my"} 1`) {
		t.Errorf("a session panicked:\n%s", p.Logs.Tail(30))
	}
	return failed
}
