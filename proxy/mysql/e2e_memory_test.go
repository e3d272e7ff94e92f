package mysql_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// memSetup is setup with the given partial-message memory,
// max_message_size and wait bound (0: the defaults).
func memSetup(t *testing.T, budget, maxMsg config.ByteSize, wait time.Duration) (*proxytest.Proxy, string) {
	t.Helper()
	p, db, _ := setup(t, func(c *config.Config) {
		if budget > 0 {
			c.Limits.MaxPartialMessageMemory = budget
		}
		if maxMsg > 0 {
			c.Backends[0].Limits.MaxMessageSize = maxMsg
		}
		if wait > 0 {
			c.Limits.PartialMessageMemoryWait = config.Duration(wait)
		}
	})
	return p, db
}

// rawSession logs in with go-mysql's client, whose connection the test
// then writes bytes to itself.
func rawSession(t *testing.T, p *proxytest.Proxy, db string) *client.Conn {
	t.Helper()
	gm, err := client.Connect(fmt.Sprintf("%s:%d", p.Host, p.Port), p.ClientUser, p.ClientPassword, db,
		func(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") })
	if err != nil {
		t.Fatalf("connecting through the proxy: %v", err)
	}
	t.Cleanup(func() { gm.Conn.Conn.Close() })
	return gm
}

// queryPacket is a COM_QUERY for sql in one frame (sequence 0).
func queryPacket(sql string) []byte {
	n := 1 + len(sql)
	return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), 0, 0x03}, sql...)
}

// lengthQuery is a query of exactly n bytes answering the length of the
// string literal that makes up most of it.
func lengthQuery(n int) (sql, want string) {
	const pre, post = "SELECT LENGTH('", "')"
	lit := n - len(pre) - len(post)
	return pre + strings.Repeat("x", lit) + post, strconv.Itoa(lit)
}

// TestDeclaredLengthHoldsNoMemory: 20 authenticated sessions each start a
// COM_QUERY whose first frame declares 16 MiB (of a 60 MiB packet) and
// send a few bytes of it. The proxy's heap (this test process runs it)
// grows by far less than the declared size, nothing is taken from the
// partial-message budget, and other sessions keep working.
func TestDeclaredLengthHoldsNoMemory(t *testing.T) {
	p, db := memSetup(t, 0, 0, 0)
	const sessions = 20
	conns := make([]net.Conn, sessions)
	for i := range conns {
		conns[i] = rawSession(t, p, db).Conn.Conn
	}
	before := proxytest.HeapAlloc()
	// Three steps, each read by the proxy before the next: the relay has
	// acted on the declared length by the time the last one is read.
	for _, step := range [][]byte{append([]byte{0xff, 0xff, 0xff, 0, 0x03}, "SELECT "...), []byte("'"), []byte("x")} {
		for _, c := range conns {
			if _, err := c.Write(step); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range conns {
			p.WaitRead(t, c)
		}
	}
	growth := int64(proxytest.HeapAlloc()) - int64(before)
	t.Logf("heap growth with %d sessions each declaring a 16 MiB frame: %.1f MiB", sessions, float64(growth)/(1<<20))
	if growth > 32<<20 {
		t.Errorf("heap grew by %d MiB for commands that sent 9 bytes each", growth>>20)
	}
	if used := p.Backend().Memory().Used(); used != 0 {
		t.Errorf("partial-message memory in use: %d bytes", used)
	}
	if got := queryString(t, conn(t, p, db, ""), "SELECT 42"); got != "42" {
		t.Fatalf("another session: %s", got)
	}
}

// TestPartialMessageMemoryBudget runs with 4 MiB for partial messages. A
// session that stalls in the middle of a 3 MiB COM_QUERY holds most of
// it; a second session sending a 3 MiB query then waits, unread, while
// others keep working, and completes once the first one leaves. With a
// wait bound of 1 s, a session that cannot get memory in time gets ERR
// 1041 (ER_OUT_OF_RESOURCES, as MariaDB answers when it cannot grow a
// packet buffer), counted and logged once, and nobody else is affected:
// the stalled session even finishes its query afterwards.
func TestPartialMessageMemoryBudget(t *testing.T) {
	t.Run("waits", testBudgetWaits)
	t.Run("ended past the wait bound", testBudgetEnds)
}

const (
	budget    = 4 << 20
	bigQuery  = 3 << 20
	stallPart = bigQuery * 5 / 6
)

// stall starts a bigQuery-byte query on a raw session and sends only
// stallPart bytes of it, which the proxy reads (and holds).
func stall(t *testing.T, p *proxytest.Proxy, db string) (gm *client.Conn, rest []byte, want string) {
	t.Helper()
	gm = rawSession(t, p, db)
	sql, want := lengthQuery(bigQuery)
	pkt := queryPacket(sql)
	if _, err := gm.Conn.Conn.Write(pkt[:stallPart]); err != nil {
		t.Fatal(err)
	}
	p.WaitRead(t, gm.Conn.Conn)
	return gm, pkt[stallPart:], want
}

func testBudgetWaits(t *testing.T) {
	p, db := memSetup(t, budget, budget, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	staller, _, _ := stall(t, p, db)

	waiter := conn(t, p, db, "")
	sql, want := lengthQuery(bigQuery)
	type result struct {
		got string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = waiter.QueryRowContext(ctx, sql).Scan(&r.got)
		done <- r
	}()
	proxytest.Eventually(t, 30*time.Second, "the second session to wait for memory", func() bool {
		return strings.Contains(p.Logs.String(), "memory for partially received client messages is used up")
	})

	// Meanwhile other sessions work, with packets up to a relay buffer.
	medium := strings.Repeat("y", 20<<10)
	if got := queryString(t, conn(t, p, db, ""), "SELECT LENGTH(?)", medium); got != strconv.Itoa(len(medium)) {
		t.Fatalf("another session: %s", got)
	}
	select {
	case r := <-done:
		t.Fatalf("the second session finished while the memory was in use: %+v", r)
	default:
	}

	staller.Conn.Conn.Close() // its memory goes back: the waiting session goes on
	select {
	case r := <-done:
		if r.err != nil || r.got != want {
			t.Fatalf("the waiting session's query: %q, %v", r.got, r.err)
		}
	case <-ctx.Done():
		t.Fatal("the waiting session never finished")
	}
	proxytest.Eventually(t, 10*time.Second, "the budget to be free", func() bool { return p.Backend().Memory().Used() == 0 })
}

func testBudgetEnds(t *testing.T) {
	p, db := memSetup(t, budget, budget, time.Second)
	staller, rest, stallWant := stall(t, p, db)

	// The victim sends a whole 3 MiB query and reads what comes back.
	victim := rawSession(t, p, db)
	sql, _ := lengthQuery(bigQuery)
	go victim.Conn.Conn.Write(queryPacket(sql)) // blocks while the proxy does not read; fails once it closed
	victim.Conn.Conn.SetReadDeadline(time.Now().Add(time.Minute))
	victim.Sequence = 1
	pkt, err := victim.ReadPacket()
	if err != nil {
		t.Fatalf("the session past the wait bound got no answer: %v", err)
	}
	if len(pkt) < 9 || pkt[0] != 0xff || binary.LittleEndian.Uint16(pkt[1:]) != 1041 || string(pkt[4:9]) != "HY000" {
		t.Fatalf("the session past the wait bound got %q, want ERR 1041 (HY000)", pkt)
	}
	t.Logf("ERR %d (%s): %s", binary.LittleEndian.Uint16(pkt[1:]), pkt[4:9], pkt[9:])
	if got := p.Metric(t, `credswap_client_errors_total{backend="my",code="out_of_memory"}`); got != 1 {
		t.Errorf("out_of_memory errors counted: %v", got)
	}
	if got := strings.Count(p.Logs.String(), "out of memory"); got != 1 {
		t.Errorf("%d log lines about the session ended out of memory, want 1:\n%s", got, p.Logs.Tail(20))
	}

	// Nobody else noticed: a new session works, and the stalled one
	// finishes its query.
	if got := queryString(t, conn(t, p, db, ""), "SELECT 7"); got != "7" {
		t.Fatalf("a new session: %s", got)
	}
	if _, err := staller.Conn.Conn.Write(rest); err != nil {
		t.Fatal(err)
	}
	staller.Conn.Conn.SetReadDeadline(time.Now().Add(time.Minute))
	staller.Sequence = 1
	for found := false; !found; {
		pkt, err := staller.ReadPacket()
		if err != nil {
			t.Fatalf("the stalled session's answer: %v", err)
		}
		if len(pkt) > 0 && pkt[0] == 0xff {
			t.Fatalf("the stalled session's query: %q", pkt)
		}
		// The row: one length-encoded string.
		found = len(pkt) == 1+len(stallWant) && int(pkt[0]) == len(stallWant) && string(pkt[1:]) == stallWant
	}
	proxytest.Eventually(t, 10*time.Second, "the budget to be free", func() bool { return p.Backend().Memory().Used() == 0 })
}

// TestLargeBlobsRoundTrip moves a 20 MiB LONGBLOB of every byte value
// through the proxy with a 32 MiB partial-message budget (the
// max_message_size), on a MariaDB server of its own that allows 64 MiB
// packets: in a text COM_QUERY (its first 16 MiB frame is read whole), as
// a COM_STMT_EXECUTE parameter (the same), and as COM_STMT_SEND_LONG_DATA
// chunks (streamed); each reads back exactly.
func TestLargeBlobsRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a MariaDB server of its own")
	}
	m := testenv.StartTestMariaDB(t, testenv.MariaDBOptions{ExtraConfig: []string{"max_allowed_packet = 64M"}})
	db := m.CreateDatabase(t)
	user, password := m.CreateUser(t, "blob")
	m.Grant(t, user, db)
	p := proxytest.StartMySQL(t, m, user, password, func(c *config.Config) {
		c.Limits.MaxPartialMessageMemory = 32 << 20
		c.Backends[0].Limits.MaxMessageSize = 32 << 20
	})
	ctx := context.Background()
	data := make([]byte, 20<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	setupDB := open(t, p, db, "")
	if _, err := setupDB.ExecContext(ctx, "CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)"); err != nil {
		t.Fatal(err)
	}
	for i, mode := range []string{
		"interpolateParams=true&maxAllowedPacket=0",        // COM_QUERY
		"interpolateParams=false&maxAllowedPacket=0",       // COM_STMT_EXECUTE with the blob inline
		"interpolateParams=false&maxAllowedPacket=4194304", // COM_STMT_SEND_LONG_DATA
	} {
		sdb := open(t, p, db, mode)
		if _, err := sdb.ExecContext(ctx, "INSERT INTO blobs VALUES (?, ?)", i, data); err != nil {
			t.Fatalf("%s: insert of 20 MiB: %v", mode, err)
		}
		var back []byte
		if err := sdb.QueryRowContext(ctx, "SELECT b FROM blobs WHERE id = ?", i).Scan(&back); err != nil {
			t.Fatalf("%s: reading back: %v", mode, err)
		}
		if !bytes.Equal(back, data) {
			t.Fatalf("%s: read back %d bytes that differ from the %d written", mode, len(back), len(data))
		}
		if got := queryString(t, sdb, "SELECT 'still in sync'"); got != "still in sync" {
			t.Fatal(got)
		}
	}
	proxytest.Eventually(t, 10*time.Second, "the budget to be free", func() bool { return p.Backend().Memory().Used() == 0 })
}
