package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestSwitchKeepsSessionState moves one go-sql-driver connection with
// changed variables, user variables of every type, another default
// database, LAST_INSERT_ID(), SQL and protocol-level prepared statements
// to a connection logged in as another user.
func TestSwitchKeepsSessionState(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	other := m.CreateDatabase(t)
	m.Grant(t, userA, other)
	m.Grant(t, userB, other)
	m.ExecIn(t, db, "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20)); INSERT INTO items (name) VALUES ('one'), ('two')")
	m.ExecIn(t, other, "CREATE TABLE here (x INT); INSERT INTO here VALUES (7)")
	p := proxytest.StartMySQL(t, m, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := conn(t, p, db, "interpolateParams=false")

	for _, q := range []string{
		"SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES,NO_ZERO_DATE'",
		"SET time_zone = '+05:30'",
		"SET SESSION wait_timeout = 1234, autocommit = 1",
		"SET @greeting = _utf8mb4'héllo 😀', @n = 42, @d = 1.5e0, @dec = 3.25, @nothing = NULL, @bin = X'00FF10'",
		"SET @long = REPEAT('x', 5000)",
		"SELECT @via_select := 'chosen'",
		"INSERT INTO items (name) VALUES ('three')",
		"PREPARE sqlp FROM 'SELECT name FROM items WHERE id = ?'",
		"USE " + other,
	} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	byID, err := c.PrepareContext(ctx, "SELECT name FROM "+db+".items WHERE id = ?")
	if err != nil {
		t.Fatal(err)
	}
	defer byID.Close()
	plus, err := c.PrepareContext(ctx, "SELECT ? + ?")
	if err != nil {
		t.Fatal(err)
	}
	defer plus.Close()
	var name string
	if err := byID.QueryRowContext(ctx, 1).Scan(&name); err != nil || name != "one" {
		t.Fatalf("before: %q %v", name, err)
	}
	threadBefore := queryString(t, c, "SELECT CONNECTION_ID()")
	if got := queryString(t, c, "SELECT CURRENT_USER()"); got != userA+"@%" {
		t.Fatalf("before: %s", got)
	}

	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 10*time.Second)

	if got := queryString(t, c, "SELECT CURRENT_USER()"); got != userB+"@%" {
		t.Fatalf("after the switch: CURRENT_USER() = %s, want %s@%%", got, userB)
	}
	if got := queryString(t, c, "SELECT CONNECTION_ID()"); got == threadBefore {
		t.Fatalf("CONNECTION_ID() still %s after the switch", got)
	}
	checks := []struct{ sql, want string }{
		{"SELECT @@SESSION.sql_mode", "ANSI_QUOTES,STRICT_ALL_TABLES,NO_ZERO_DATE"},
		{"SELECT @@time_zone", "+05:30"},
		{"SELECT @@wait_timeout", "1234"},
		{"SELECT DATABASE()", other},
		{"SELECT x FROM here", "7"},
		{"SELECT HEX(@greeting)", "68C3A96C6C6F20F09F9880"},
		{"SELECT CHARSET(@greeting)", "utf8mb4"},
		{"SELECT @n + 1", "43"},
		{"SELECT @d / 3", "0.5"},
		{"SELECT @dec * 2 = 6.5", "1"},
		{"SELECT COALESCE(@nothing, 'null')", "null"},
		{"SELECT HEX(@bin)", "00FF10"},
		{"SELECT LENGTH(@long)", "5000"},
		{"SELECT @via_select", "chosen"},
		{"SELECT LAST_INSERT_ID()", "3"},
	}
	for _, ch := range checks {
		if got := queryString(t, c, ch.sql); got != ch.want {
			t.Errorf("%s = %q, want %q", ch.sql, got, ch.want)
		}
	}
	if _, err := c.ExecContext(ctx, "SET @id = 2"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, c, "EXECUTE sqlp USING @id"); got != "two" {
		t.Errorf("SQL PREPARE after the switch: %q", got)
	}
	if err := byID.QueryRowContext(ctx, 3).Scan(&name); err != nil || name != "three" {
		t.Errorf("prepared statement after the switch: %q %v", name, err)
	}
	var sum int
	if err := plus.QueryRowContext(ctx, 40, 2).Scan(&sum); err != nil || sum != 42 {
		t.Errorf("prepared statement first executed after the switch: %d %v", sum, err)
	}
	st := p.Status(t)
	if st.Backends[0].Sessions.ByGeneration["2"] != 1 {
		t.Errorf("status sessions by generation: %+v", st.Backends[0].Sessions)
	}
	if m := scrape(t, p); !strings.Contains(m, `credswap_session_switches_total{backend="my",result="ok"}`) {
		t.Errorf("switch metric missing")
	}
}

// TestSwitchPins pins sessions with a temporary table, a GET_LOCK lock
// and LOCK TABLES; each moves once its state is gone, while a free
// session moves at once.
func TestSwitchPins(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	m.ExecIn(t, db, "CREATE TABLE t (x INT)")
	p := proxytest.StartMySQL(t, m, userA, passA)
	ctx := context.Background()
	pins := []struct {
		reason, take, release string
	}{
		{"temp_table", "CREATE TEMPORARY TABLE scratch (x INT)", "DROP TEMPORARY TABLE scratch"},
		{"user_lock", "SELECT GET_LOCK('credswap-test', 0)", "SELECT RELEASE_LOCK('credswap-test')"},
		{"lock_tables", "LOCK TABLES t READ", "UNLOCK TABLES"},
	}
	conns := make([]*sql.Conn, len(pins))
	for i, pin := range pins {
		conns[i] = conn(t, p, db, "")
		if _, err := conns[i].ExecContext(ctx, pin.take); err != nil {
			t.Fatalf("%s: %v", pin.take, err)
		}
	}
	free := conn(t, p, db, "")
	p.RotateTo(t, userB, passB)
	proxytest.Eventually(t, 10*time.Second, "the free session to switch", func() bool {
		return queryString(t, free, "SELECT CURRENT_USER()") == userB+"@%"
	})
	proxytest.Eventually(t, 5*time.Second, "every pin reported", func() bool {
		got := map[string]bool{}
		for _, s := range p.Status(t).Backends[0].PinnedSessions {
			got[s.PinReason] = true
		}
		return got["temp_table"] && got["user_lock"] && got["lock_tables"]
	})
	for i, pin := range pins {
		if got := queryString(t, conns[i], "SELECT CURRENT_USER()"); got != userA+"@%" {
			t.Fatalf("%s: session moved to %s while pinned", pin.reason, got)
		}
	}
	if m := scrape(t, p); !strings.Contains(m, `credswap_pinned_sessions{backend="my",reason="temp_table"} 1`) {
		t.Errorf("pinned metric missing")
	}
	for i, pin := range pins {
		if _, err := conns[i].ExecContext(ctx, pin.release); err != nil {
			t.Fatalf("%s: %v", pin.release, err)
		}
		proxytest.Eventually(t, 5*time.Second, pin.reason+" session to move after "+pin.release, func() bool {
			return queryString(t, conns[i], "SELECT CURRENT_USER()") == userB+"@%"
		})
	}
	proxytest.Eventually(t, 5*time.Second, "the drain to complete", func() bool {
		st := p.Status(t).Backends[0]
		return len(st.PinnedSessions) == 0 && st.Drain.Complete
	})
}

// TestSwitchTransactionWaits: a session inside a transaction moves after
// COMMIT, keeping its transaction's work on the old user.
func TestSwitchTransactionWaits(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	m.ExecIn(t, db, "CREATE TABLE t (x INT, who VARCHAR(100))")
	p := proxytest.StartMySQL(t, m, userA, passA)
	ctx := context.Background()
	c := conn(t, p, db, "")
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tx.ExecContext(ctx, "INSERT INTO t VALUES (1, CURRENT_USER())")
	p.RotateTo(t, userB, passB)
	time.Sleep(300 * time.Millisecond)
	tx.ExecContext(ctx, "INSERT INTO t VALUES (2, CURRENT_USER())")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, c, "SELECT GROUP_CONCAT(DISTINCT who) FROM t"); got != userA+"@%" {
		t.Fatalf("the transaction ran as %s", got)
	}
	proxytest.Eventually(t, 5*time.Second, "the session to move after COMMIT", func() bool {
		return queryString(t, c, "SELECT CURRENT_USER()") == userB+"@%"
	})
}

// TestSwitchDeadlineClose closes a pinned session at the drain deadline
// with on_deadline: close.
func TestSwitchDeadlineClose(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	p := proxytest.StartMySQL(t, m, userA, passA, func(c *config.Config) {
		c.Backends[0].DrainDeadline = config.Duration(time.Second)
		c.Backends[0].OnDeadline = "close"
	})
	ctx := context.Background()
	pinned := conn(t, p, db, "")
	if _, err := pinned.ExecContext(ctx, "CREATE TEMPORARY TABLE keep (x INT)"); err != nil {
		t.Fatal(err)
	}
	p.RotateTo(t, userB, passB)
	var err error
	proxytest.Eventually(t, 5*time.Second, "the pinned session to be closed", func() bool {
		var n int
		err = pinned.QueryRowContext(ctx, "SELECT 1").Scan(&n)
		return err != nil
	})
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 1053 || !strings.Contains(myErr.Message, "drain deadline") {
		t.Fatalf("want ERR 1053 about the drain deadline, got %v", err)
	}
}

// TestPasswordChangedBeforeFile changes the database password first and
// the file two seconds later: clients connecting in between wait and
// succeed.
func TestPasswordChangedBeforeFile(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, _, _ := twoUsers(t, m)
	p := proxytest.StartMySQL(t, m, userA, passA, func(c *config.Config) { c.Backends[0].Pool.MaxIdle = 0 })
	newPass := "rotated-" + proxytest.Random(8)
	m.Exec(t, fmt.Sprintf("SET PASSWORD FOR '%s'@'%%' = PASSWORD('%s')", userA, newPass))
	changed := time.Now()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			sdb, err := sql.Open("mysql", p.DSN(db, "timeout=20s"))
			if err != nil {
				errs <- err
				return
			}
			defer sdb.Close()
			var n int
			errs <- sdb.QueryRow("SELECT 1").Scan(&n)
		}()
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2*time.Second - time.Since(changed))
	p.WriteCredential(t, userA, newPass)
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("client failed during the rotation: %v", err)
		}
	}
	if m := scrape(t, p); !strings.Contains(m, `credswap_backend_auth_failures_total{backend="my"}`) {
		t.Errorf("auth failures not counted")
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
