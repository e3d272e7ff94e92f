package mysql_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestSwitchPinsXAHandlerCursor pins sessions with a prepared XA
// transaction, an open HANDLER and a server-side cursor (COM_STMT_EXECUTE
// with CURSOR_TYPE_READ_ONLY); each moves once released.
func TestSwitchPinsXAHandlerCursor(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	m.ExecIn(t, db, "CREATE TABLE t (x INT PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)")
	p := proxytest.StartMySQL(t, m, userA, passA)
	ctx := context.Background()

	xa := conn(t, p, db, "")
	for _, q := range []string{"XA START 'credswap-xa'", "INSERT INTO t VALUES (10)", "XA END 'credswap-xa'", "XA PREPARE 'credswap-xa'"} {
		if _, err := xa.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	handler := conn(t, p, db, "")
	if _, err := handler.ExecContext(ctx, "HANDLER t OPEN"); err != nil {
		t.Fatal(err)
	}

	gm, err := client.Connect(fmt.Sprintf("%s:%d", p.Host, p.Port), p.ClientUser, p.ClientPassword, db,
		func(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") })
	if err != nil {
		t.Fatal(err)
	}
	defer gm.Close()
	st, err := gm.Prepare("SELECT x FROM t ORDER BY x")
	if err != nil {
		t.Fatal(err)
	}
	// COM_STMT_EXECUTE, flags CURSOR_TYPE_READ_ONLY, iteration count 1, no
	// parameters: the server answers with the column definitions and a
	// status with SERVER_STATUS_CURSOR_EXISTS, and keeps the rows.
	exec := make([]byte, 4, 4+10)
	exec = append(exec, 0x17)
	exec = binary.LittleEndian.AppendUint32(exec, st.ID)
	exec = append(exec, 0x01)
	exec = binary.LittleEndian.AppendUint32(exec, 1)
	gm.ResetSequence()
	if err := gm.WritePacket(exec); err != nil {
		t.Fatal(err)
	}
	for {
		pkt, err := gm.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		if pkt[0] == 0xff {
			t.Fatalf("EXECUTE with a cursor: ERR %q", pkt[3:])
		}
		if pkt[0] == 0xfe && len(pkt) < 9 { // EOF, or OK with DEPRECATE_EOF: the end of the metadata
			break
		}
	}
	whoGM := func() string {
		r, err := gm.Execute("SELECT CURRENT_USER()")
		if err != nil {
			t.Fatal(err)
		}
		s, _ := r.GetString(0, 0)
		return s
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
		return got["xa_transaction"] && got["handler"] && got["open_cursor"]
	})
	if got := whoGM(); got != userA+"@%" {
		t.Fatalf("the session with an open cursor moved to %s", got)
	}

	if _, err := xa.ExecContext(ctx, "XA COMMIT 'credswap-xa'"); err != nil {
		t.Fatal(err)
	}
	proxytest.Eventually(t, 5*time.Second, "the XA session to move after XA COMMIT", func() bool {
		return queryString(t, xa, "SELECT CURRENT_USER()") == userB+"@%"
	})
	if got := queryString(t, xa, "SELECT COUNT(*) FROM t WHERE x = 10"); got != "1" {
		t.Fatalf("the XA transaction's row: %s", got)
	}
	if _, err := handler.ExecContext(ctx, "HANDLER t CLOSE"); err != nil {
		t.Fatal(err)
	}
	proxytest.Eventually(t, 5*time.Second, "the HANDLER session to move after HANDLER CLOSE", func() bool {
		return queryString(t, handler, "SELECT CURRENT_USER()") == userB+"@%"
	})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	proxytest.Eventually(t, 5*time.Second, "the cursor session to move after COM_STMT_CLOSE", func() bool {
		return whoGM() == userB+"@%"
	})
	proxytest.Eventually(t, 5*time.Second, "the drain to complete", func() bool {
		st := p.Status(t).Backends[0]
		return len(st.PinnedSessions) == 0 && st.Drain.Complete
	})
}
