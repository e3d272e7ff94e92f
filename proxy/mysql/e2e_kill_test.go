package mysql_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestKillAfterSwitch: the connection id a client got at login keeps
// reaching its session's current backend thread after the session moved
// to a connection of another user, and CONNECTION_ID() changes.
func TestKillAfterSwitch(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	p := proxytest.StartMySQL(t, m, userA, passA)
	gm, err := client.Connect(fmt.Sprintf("%s:%d", p.Host, p.Port), p.ClientUser, p.ClientPassword, db,
		func(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") })
	if err != nil {
		t.Fatal(err)
	}
	defer gm.Close()
	proxyID := gm.GetConnectionID()
	threadOf := func() string {
		r, err := gm.Execute("SELECT CONNECTION_ID()")
		if err != nil {
			t.Fatal(err)
		}
		s, _ := r.GetString(0, 0)
		return s
	}
	before := threadOf()
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 10*time.Second)
	after := threadOf()
	if after == before {
		t.Fatalf("CONNECTION_ID() still %s after the switch", after)
	}

	killer := open(t, p, db, "")
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := gm.Execute("SELECT SLEEP(30)")
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := killer.ExecContext(context.Background(), fmt.Sprintf("KILL QUERY %d", proxyID)); err != nil {
		t.Fatalf("KILL QUERY %d: %v", proxyID, err)
	}
	select {
	case err := <-done:
		if err != nil && !strings.Contains(err.Error(), "1317") {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("SLEEP(30) ended after %s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SLEEP(30) still running 5 s after KILL QUERY of the login's connection id")
	}
	if got := threadOf(); got != after {
		t.Fatalf("the session's thread changed from %s to %s after KILL QUERY", after, got)
	}
}
