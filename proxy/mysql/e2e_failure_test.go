package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	mysqlproxy "github.com/credswap/credswap/proxy/mysql"
)

// TestPanicEndsOneSession makes the proxy panic while it relays one
// session's command, then while it replays another session's state in a
// switch: each time that session alone ends with a clean internal error,
// the panic is logged with its stack and counted, and every other session
// goes on (and moves to the new credential).
func TestPanicEndsOneSession(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	p := proxytest.StartMySQL(t, m, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cs []*sql.Conn
	for range 4 {
		cs = append(cs, conn(t, p, db, ""))
	}
	for _, c := range cs {
		queryString(t, c, "SELECT 1")
	}
	h := p.App.Handler("my").(*mysqlproxy.Handler)
	var arm atomic.Value // the point that panics once, or ""
	arm.Store("")
	h.SetFaultHook(func(point string) {
		if arm.Load() == point && arm.CompareAndSwap(point, "") {
			panic("injected fault in " + point)
		}
	})

	isInternal := func(err error) bool {
		var me *mysql.MySQLError
		return errors.As(err, &me) && strings.Contains(me.Message, "internal proxy error")
	}
	arm.Store("command")
	var n int
	if err := cs[0].QueryRowContext(ctx, "SELECT 1").Scan(&n); !isInternal(err) {
		t.Fatalf("the session that panicked got %v, want the internal proxy error", err)
	}
	proxytest.Eventually(t, 5*time.Second, "the ended session to leave the status", func() bool {
		return p.Status(t).Backends[0].Sessions.Total == 3
	})

	arm.Store("replay")
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 20*time.Second)
	ended, moved := 0, 0
	for _, c := range cs[1:] {
		var who string
		err := c.QueryRowContext(ctx, "SELECT SUBSTRING_INDEX(USER(), '@', 1)").Scan(&who)
		switch {
		case err == nil && who == userB:
			moved++
		case isInternal(err):
			ended++
		default:
			t.Errorf("session: %q, %v", who, err)
		}
	}
	if ended != 1 || moved != 2 {
		t.Fatalf("%d sessions ended and %d moved; want 1 and 2", ended, moved)
	}
	if got := queryString(t, open(t, p, db, ""), "SELECT SUBSTRING_INDEX(USER(), '@', 1)"); got != userB {
		t.Fatalf("new session runs as %s", got)
	}
	if met := scrape(t, p); !strings.Contains(met, `credswap_session_panics_total{backend="my"} 2`) {
		t.Fatalf("panic metric:\n%s", met)
	}
	logs := p.Logs.String()
	for _, want := range []string{"injected fault in command", "injected fault in replay", "performSwitch", "clientLoop"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("the panics were not logged with their stacks (no %q):\n%s", want, p.Logs.Tail(30))
		}
	}
}

// TestSwitchSkipsSupersededGeneration changes the password of the user a
// drain targets before an idle session could move (it was in a
// transaction): its switches fail and back off. When the new password is
// adopted, the session moves at once instead of waiting out the backoff
// of the generation that no longer works.
func TestSwitchSkipsSupersededGeneration(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	p := proxytest.StartMySQL(t, m, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := conn(t, p, db, "")
	if _, err := c.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	p.RotateTo(t, userB, passB)
	newPass := "p" + proxytest.Random(12)
	m.Exec(t, fmt.Sprintf("SET PASSWORD FOR '%s'@'%%' = PASSWORD('%s')", userB, newPass))
	// Connections the drain warmed with the old password still work: end them.
	for _, id := range strings.Fields(m.Query(t, fmt.Sprintf("SELECT id FROM information_schema.processlist WHERE user = '%s'", userB))) {
		m.Exec(t, "KILL "+id)
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
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
	if got := queryString(t, c, "SELECT SUBSTRING_INDEX(USER(), '@', 1)"); got != userB {
		t.Fatalf("session runs as %s", got)
	}
	if st := p.Status(t).Backends[0]; len(st.SwitchFailing) != 0 {
		t.Fatalf("switch_failing after the move: %+v", st.SwitchFailing)
	}
	if strings.Contains(p.Logs.String(), newPass) || strings.Contains(p.Logs.String(), passB) {
		t.Fatal("a password reached the log")
	}
}
