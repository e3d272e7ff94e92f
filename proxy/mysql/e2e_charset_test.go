package mysql_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestSwitchKeepsCharsetAndUnsigned moves sessions whose state a fresh
// connection would get wrong: an unsigned user variable (SET @id =
// LAST_INSERT_ID(), as the mariadb CLI keeps ids), SET NAMES back to the
// server's default character set while the handshake asked for another
// (PHP applications), and a handshake collation that is not its character
// set's default (go-sql-driver's collation=cp1257_bin). Each is compared
// with what the same session shows before the switch.
func TestSwitchKeepsCharsetAndUnsigned(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	m.ExecIn(t, db, "CREATE TABLE ids (id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, v INT); ALTER TABLE ids AUTO_INCREMENT = 18")
	p := proxytest.StartMySQL(t, m, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The server's default is utf8mb4: the handshake asks for latin1 and
	// the session goes back to the default with SET NAMES.
	names := conn(t, p, db, "collation=latin1_swedish_ci")
	cp := conn(t, p, db, "collation=cp1257_bin")
	ids := conn(t, p, db, "")
	for _, q := range []string{"INSERT INTO ids (v) VALUES (1)", "SET @id = LAST_INSERT_ID(), @big = CAST(-1 AS UNSIGNED), @neg = -5"} {
		if _, err := ids.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := names.ExecContext(ctx, "SET NAMES utf8mb4"); err != nil {
		t.Fatal(err)
	}
	snapshot := func() map[string]string {
		return map[string]string{
			"names": queryString(t, names, "SELECT CONCAT_WS(' ', @@character_set_client, @@character_set_connection, @@character_set_results, @@collation_connection)"),
			"text":  queryString(t, names, "SELECT HEX('é')"),
			"cp":    queryString(t, cp, "SELECT CONCAT_WS(' ', @@character_set_client, @@collation_connection)"),
			"ids": queryString(t, ids, "SELECT CONCAT_WS(' ', @id = 18, @big = 18446744073709551615, @neg = -5, "+
				"(SELECT GROUP_CONCAT(VARIABLE_NAME, ':', VARIABLE_TYPE ORDER BY VARIABLE_NAME) FROM information_schema.USER_VARIABLES))"),
		}
	}
	before := snapshot()
	if before["ids"] != "1 1 1 big:INT UNSIGNED,id:INT UNSIGNED,neg:INT" {
		t.Fatalf("before the switch: %q", before["ids"])
	}
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 20*time.Second)
	after := snapshot()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %q before the switch, %q after", k, v, after[k])
		}
	}
	if got := queryString(t, ids, "SELECT SUBSTRING_INDEX(USER(), '@', 1)"); got != userB {
		t.Fatalf("session runs as %s", got)
	}
}

// TestSwitchDefersStatementWithMissingTable moves a session holding a
// prepared statement whose table was dropped (MariaDB keeps such a
// statement; executing it fails until the table is back). The switch must
// not fail on it: the statement is prepared on first use, with the same
// error as before while the table is missing, and works once it is back.
func TestSwitchDefersStatementWithMissingTable(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	p := proxytest.StartMySQL(t, m, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := conn(t, p, db, "interpolateParams=false")
	if _, err := c.ExecContext(ctx, "CREATE TABLE gone (x INT)"); err != nil {
		t.Fatal(err)
	}
	ins, err := c.PrepareContext(ctx, "INSERT INTO gone VALUES (?)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "DROP TABLE gone"); err != nil {
		t.Fatal(err)
	}
	_, before := ins.ExecContext(ctx, 1)
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 20*time.Second)
	if got := queryString(t, c, "SELECT SUBSTRING_INDEX(USER(), '@', 1)"); got != userB {
		t.Fatalf("session runs as %s", got)
	}
	_, after := ins.ExecContext(ctx, 2)
	if before == nil || after == nil || before.Error() != after.Error() {
		t.Fatalf("executing with the table gone: %v before the switch, %v after", before, after)
	}
	if _, err := c.ExecContext(ctx, "CREATE TABLE gone (x INT)"); err != nil {
		t.Fatal(err)
	}
	if _, err := ins.ExecContext(ctx, 3); err != nil {
		t.Fatalf("executing once the table is back: %v", err)
	}
	if got := queryString(t, c, "SELECT GROUP_CONCAT(x) FROM gone"); got != "3" {
		t.Fatalf("table holds %s", got)
	}
	if err := ins.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.Logs.String(), "session switch failed") {
		t.Fatalf("a switch failed:\n%s", p.Logs.Tail(20))
	}
}
