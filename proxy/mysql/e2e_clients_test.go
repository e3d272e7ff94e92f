package mysql_test

import (
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

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

func TestGoSQLDriverBasics(t *testing.T) {
	p, db, user := setup(t)
	sdb := open(t, p, db, "interpolateParams=false&parseTime=true")
	ctx := context.Background()
	if got := queryString(t, sdb, "SELECT CURRENT_USER()"); got != user+"@%" {
		t.Fatalf("CURRENT_USER() = %q, want %s@%%", got, user)
	}
	if _, err := sdb.ExecContext(ctx, "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), n DOUBLE, b BLOB, d DATETIME)"); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	res, err := sdb.ExecContext(ctx, "INSERT INTO t VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)",
		1, "one", 1.5, []byte{0, 1, 2}, now, 2, "two", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 2 {
		t.Fatalf("rows affected %d", n)
	}
	var (
		name string
		f    sql.NullFloat64
		b    []byte
		d    sql.NullTime
	)
	row := sdb.QueryRowContext(ctx, "SELECT name, n, b, d FROM t WHERE id = ?", 1)
	if err := row.Scan(&name, &f, &b, &d); err != nil {
		t.Fatal(err)
	}
	if name != "one" || f.Float64 != 1.5 || string(b) != "\x00\x01\x02" || !d.Valid {
		t.Fatalf("row: %q %v %q %v", name, f, b, d)
	}

	// Transactions: rollback and commit.
	tx, err := sdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tx.ExecContext(ctx, "INSERT INTO t (id, name) VALUES (3, 'three')")
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	tx, _ = sdb.BeginTx(ctx, nil)
	tx.ExecContext(ctx, "INSERT INTO t (id, name) VALUES (4, 'four')")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, sdb, "SELECT GROUP_CONCAT(id ORDER BY id) FROM t"); got != "1,2,4" {
		t.Fatalf("after transactions: %s", got)
	}

	// A prepared statement used many times, and one with many parameters.
	stmt, err := sdb.PrepareContext(ctx, "SELECT name FROM t WHERE id = ?")
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	for range 3 {
		if err := stmt.QueryRowContext(ctx, 4).Scan(&name); err != nil || name != "four" {
			t.Fatalf("prepared: %q %v", name, err)
		}
	}
	args := make([]any, 300)
	marks := make([]string, 300)
	for i := range args {
		args[i], marks[i] = i, "?"
	}
	if got := queryString(t, sdb, "SELECT COUNT(*) FROM t WHERE id IN ("+strings.Join(marks, ",")+")", args...); got != "3" {
		t.Fatalf("IN with 300 parameters: %s", got)
	}

	// Errors pass through unchanged, and the session goes on.
	_, err = sdb.ExecContext(ctx, "SELECT * FROM no_such_table")
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 1146 {
		t.Fatalf("missing table: %v", err)
	}
	if _, err := sdb.ExecContext(ctx, "INSERT INTO t (id) VALUES (?)", 1); !errors.As(err, &myErr) || myErr.Number != 1062 {
		t.Fatalf("duplicate key through a prepared statement: %v", err)
	}
}

func TestSQLPrepareAndMultiStatements(t *testing.T) {
	p, db, _ := setup(t)
	c := conn(t, p, db, "multiStatements=true")
	ctx := context.Background()
	if _, err := c.ExecContext(ctx, "CREATE TABLE m (id INT); INSERT INTO m VALUES (1), (2); INSERT INTO m VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	rows, err := c.QueryContext(ctx, "SELECT COUNT(*) FROM m; SELECT MAX(id) FROM m")
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for {
		for rows.Next() {
			var n int
			rows.Scan(&n)
			got = append(got, n)
		}
		if !rows.NextResultSet() {
			break
		}
	}
	rows.Close()
	if fmt.Sprint(got) != "[3 3]" {
		t.Fatalf("multi results: %v", got)
	}
	if _, err := c.ExecContext(ctx, "PREPARE s FROM 'SELECT id * 10 FROM m WHERE id = ?'"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "SET @x = 2"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, c, "EXECUTE s USING @x"); got != "20" {
		t.Fatalf("EXECUTE s: %s", got)
	}
	// A stored procedure returning two result sets through the binary
	// protocol (PS_MULTI_RESULTS).
	if _, err := c.ExecContext(ctx, "CREATE PROCEDURE two() BEGIN SELECT 1; SELECT 2; END"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, c, "CALL two()"); got != "1" {
		t.Fatalf("CALL two(): %s", got)
	}
	if got := queryString(t, c, "SELECT 42"); got != "42" {
		t.Fatalf("after CALL: %s", got)
	}
}

func TestLargeRows(t *testing.T) {
	p, db, _ := setup(t)
	sdb := open(t, p, db, "interpolateParams=false")
	ctx := context.Background()
	big := strings.Repeat("0123456789abcdef", 3<<16) // 3 MiB
	if _, err := sdb.ExecContext(ctx, "CREATE TABLE big (id INT PRIMARY KEY, v LONGTEXT)"); err != nil {
		t.Fatal(err)
	}
	if _, err := sdb.ExecContext(ctx, "INSERT INTO big VALUES (1, ?)", big); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := sdb.QueryRowContext(ctx, "SELECT v FROM big WHERE id = ?", 1).Scan(&v); err != nil || v != big {
		t.Fatalf("binary protocol row of %d bytes: %d bytes, %v", len(big), len(v), err)
	}
	if got := queryString(t, sdb, "SELECT LENGTH(REPEAT('x', 2*1024*1024))"); got != "2097152" {
		t.Fatal(got)
	}
	text := open(t, p, db, "interpolateParams=true")
	if err := text.QueryRowContext(ctx, "SELECT CONCAT(v, ?) FROM big", "!").Scan(&v); err != nil || v != big+"!" {
		t.Fatalf("text protocol row: %d bytes, %v", len(v), err)
	}
}

// TestPacketsOver16MiB moves rows and parameters larger than one frame
// (16 MiB) both ways, on a server of its own that allows such packets.
func TestPacketsOver16MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a MariaDB server of its own")
	}
	m := testenv.StartTestMariaDB(t, testenv.MariaDBOptions{ExtraConfig: []string{"max_allowed_packet = 64M"}})
	db := m.CreateDatabase(t)
	user, password := m.CreateUser(t, "big")
	m.Grant(t, user, db)
	p := proxytest.StartMySQL(t, m, user, password)
	ctx := context.Background()
	huge := strings.Repeat("abcdefghijklmnop", 20<<16) // 20 MiB
	for _, mode := range []string{"interpolateParams=false", "interpolateParams=true"} {
		sdb := open(t, p, db, mode+"&maxAllowedPacket=0")
		sdb.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS huge (id INT PRIMARY KEY, v LONGTEXT)")
		sdb.ExecContext(ctx, "DELETE FROM huge")
		if _, err := sdb.ExecContext(ctx, "INSERT INTO huge VALUES (1, ?)", huge); err != nil {
			t.Fatalf("%s: insert of 20 MiB: %v", mode, err)
		}
		var v string
		if err := sdb.QueryRowContext(ctx, "SELECT v FROM huge WHERE id = ?", 1).Scan(&v); err != nil || v != huge {
			t.Fatalf("%s: select of 20 MiB: %d bytes, %v", mode, len(v), err)
		}
		if got := queryString(t, sdb, "SELECT 'still in sync'"); got != "still in sync" {
			t.Fatal(got)
		}
	}
}

func TestMariaDBCLI(t *testing.T) {
	p, db, user := setup(t, nativeAuth)
	out, err := cli(t, p, db, `
CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(10));
INSERT INTO items VALUES (1, 'one'), (2, 'two');
START TRANSACTION;
INSERT INTO items VALUES (3, 'three');
ROLLBACK;
PREPARE byid FROM 'SELECT name FROM items WHERE id = ?';
SET @id = 2;
EXECUTE byid USING @id;
DEALLOCATE PREPARE byid;
SELECT COUNT(*) FROM items;
SELECT CURRENT_USER();
DELIMITER //
CREATE PROCEDURE p() BEGIN SELECT 'a'; SELECT 'b'; END //
DELIMITER ;
CALL p();
`)
	if err != nil {
		t.Fatalf("mariadb: %v\n%s", err, out)
	}
	want := "two\n2\n" + user + "@%\na\nb\n"
	if out != want {
		t.Fatalf("mariadb output:\n%s\nwant:\n%s", out, want)
	}
	// A failing statement: the client prints the database's error.
	out, err = cli(t, p, db, "SELECT * FROM nope;\n")
	if e := testenv.ParseMariaDBError([]byte(out)); err == nil || e == nil || e.Code != 1146 {
		t.Fatalf("error through the CLI: %v %q", err, out)
	}
}

func TestLocalInfile(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "data.csv")
	var b strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&b, "%d,name-%d\n", i, i)
	}
	if err := os.WriteFile(csv, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	load := fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE f FIELDS TERMINATED BY ','", csv)
	mysql.RegisterLocalFile(csv)

	t.Run("allowed", func(t *testing.T) {
		p, db, _ := setup(t, nativeAuth, func(c *config.Config) { c.Backends[0].LocalInfile.Allow = true })
		sdb := open(t, p, db, "")
		if _, err := sdb.Exec("CREATE TABLE f (id INT, name VARCHAR(20))"); err != nil {
			t.Fatal(err)
		}
		res, err := sdb.Exec(load)
		if err != nil {
			t.Fatalf("go-sql-driver: %v", err)
		}
		if n, _ := res.RowsAffected(); n != 5000 {
			t.Fatalf("rows loaded: %d", n)
		}
		out, err := cli(t, p, db, load+";\nSELECT COUNT(*) FROM f;\n", "--local-infile=1")
		if err != nil || strings.TrimSpace(out) != "10000" {
			t.Fatalf("mariadb CLI: %v %q", err, out)
		}
	})
	t.Run("refused", func(t *testing.T) {
		p, db, _ := setup(t, nativeAuth)
		sdb := open(t, p, db, "")
		if _, err := sdb.Exec("CREATE TABLE f (id INT, name VARCHAR(20))"); err != nil {
			t.Fatal(err)
		}
		_, err := sdb.Exec(load)
		var myErr *mysql.MySQLError
		// MariaDB 10.11 answers 4166 (older versions and MySQL 1148).
		if !errors.As(err, &myErr) || myErr.Number != 4166 && myErr.Number != 1148 {
			t.Fatalf("LOAD DATA LOCAL without local_infile.allow: %v", err)
		}
		if got := queryString(t, sdb, "SELECT COUNT(*) FROM f"); got != "0" {
			t.Fatalf("rows: %s", got)
		}
		out, err := cli(t, p, db, load+";\n", "--local-infile=1")
		if e := testenv.ParseMariaDBError([]byte(out)); err == nil || e == nil || e.Code != 4166 && e.Code != 1148 {
			t.Fatalf("mariadb CLI: %v %q", err, out)
		}
	})
}

// TestKillQuery cancels SELECT SLEEP(30) with KILL QUERY from a second
// connection through the proxy: by CONNECTION_ID() (the backend's thread
// id, passed through) and by the proxy's connection id from the
// greeting (go-mysql's client exposes it), which the proxy maps.
func TestKillQuery(t *testing.T) {
	p, db, _ := setup(t)
	ctx := context.Background()
	victim := conn(t, p, db, "")
	killer := open(t, p, db, "")
	thread := queryString(t, victim, "SELECT CONNECTION_ID()")

	check := func(name string, run func() error, kill func() error) {
		t.Helper()
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- run() }()
		time.Sleep(300 * time.Millisecond)
		if err := kill(); err != nil {
			t.Fatalf("%s: KILL QUERY: %v", name, err)
		}
		select {
		case err := <-done:
			if took := time.Since(start); took > 1300*time.Millisecond {
				t.Fatalf("%s: SLEEP(30) ended after %s", name, took)
			}
			if err != nil && !strings.Contains(err.Error(), "1317") {
				t.Fatalf("%s: %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: SLEEP(30) still running 5 s after KILL QUERY", name)
		}
	}
	check("by CONNECTION_ID()", func() error {
		var n int
		return victim.QueryRowContext(ctx, "SELECT SLEEP(30)").Scan(&n)
	}, func() error {
		_, err := killer.ExecContext(ctx, "KILL QUERY "+thread)
		return err
	})
	if got := queryString(t, victim, "SELECT 'alive'"); got != "alive" {
		t.Fatal(got)
	}

	gm, err := client.Connect(fmt.Sprintf("%s:%d", p.Host, p.Port), p.ClientUser, p.ClientPassword, db,
		func(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") })
	if err != nil {
		t.Fatal(err)
	}
	defer gm.Close()
	proxyID := gm.GetConnectionID()
	if fmt.Sprint(proxyID) == thread || proxyID < 1<<30 {
		t.Fatalf("greeting connection id %d does not look proxy-minted", proxyID)
	}
	check("by the proxy's connection id", func() error {
		_, err := gm.Execute("SELECT SLEEP(30)")
		return err
	}, func() error {
		_, err := killer.ExecContext(ctx, fmt.Sprintf("KILL QUERY %d", proxyID))
		return err
	})
	if _, err := gm.Execute("SELECT 1"); err != nil {
		t.Fatalf("after KILL QUERY: %v", err)
	}
	// KILL CONNECTION of the proxy id ends that session.
	if _, err := killer.ExecContext(ctx, fmt.Sprintf("KILL %d", proxyID)); err != nil {
		t.Fatal(err)
	}
	if _, err := gm.Execute("SELECT 1"); err == nil {
		t.Fatal("the killed connection still answers")
	}
}

// TestManyClients runs concurrent sessions through one proxy.
func TestManyClients(t *testing.T) {
	p, db, _ := setup(t)
	sdb := open(t, p, db, "interpolateParams=false")
	sdb.SetMaxOpenConns(20)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for w := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				var n int
				if err := sdb.QueryRowContext(ctx, "SELECT ? + ?", w, i).Scan(&n); err != nil || n != w+i {
					errs <- fmt.Errorf("worker %d: %d %v", w, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
