package postgres_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// The memory tests run in both relay modes: plaintext sessions in the
// epoll loops, TLS sessions in the goroutine relay.
var relayModes = []struct {
	name   string
	useTLS bool
}{{"loop relay", false}, {"goroutine relay over TLS", true}}

// memProxy starts a proxy with a TLS certificate (so that both relay modes
// can be used) and the given partial-message memory, max_message_size and
// wait bound (0: the defaults).
func memProxy(t *testing.T, ca *testenv.CA, budget, maxMsg config.ByteSize, wait time.Duration) (*proxytest.Proxy, string) {
	t.Helper()
	opts := []proxytest.Option{withTLS(t, ca, false), func(c *config.Config) {
		if budget > 0 {
			c.Limits.MaxPartialMessageMemory = budget
		}
		if maxMsg > 0 {
			c.Backends[0].Limits.MaxMessageSize = maxMsg
		}
		if wait > 0 {
			c.Limits.PartialMessageMemoryWait = config.Duration(wait)
		}
	}}
	p, db, _ := setup(t, opts...)
	return p, db
}

// pgConnect logs in through the proxy with pgconn, over TLS (the goroutine
// relay) or not (a relay loop).
func pgConnect(t *testing.T, p *proxytest.Proxy, db string, ca *testenv.CA, useTLS bool) *pgconn.PgConn {
	t.Helper()
	dsn := p.ConnString(db)
	if useTLS {
		dsn = strings.Replace(dsn, "sslmode=disable", "sslmode=verify-full", 1) + " host=localhost"
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Fallbacks = nil
	if useTLS {
		cfg.TLSConfig = ca.ClientTLSConfig("localhost")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting through the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// rawSession logs in with pgconn and takes its connection over, to send
// messages byte by byte.
func rawSession(t *testing.T, p *proxytest.Proxy, db string, ca *testenv.CA, useTLS bool) net.Conn {
	t.Helper()
	hc, err := pgConnect(t, p, db, ca, useTLS).Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Conn.Close() })
	return hc.Conn
}

// queryMessage is a Query message for sql.
func queryMessage(sql string) []byte {
	msg := binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+len(sql)+1))
	return append(append(msg, sql...), 0)
}

// lengthQuery is a query of exactly n bytes (plus the terminating NUL)
// answering the length of the string literal that makes up most of it.
func lengthQuery(n int) (sql string, want string) {
	const pre, post = "SELECT length('", "')"
	lit := n - len(pre) - len(post)
	return pre + strings.Repeat("x", lit) + post, strconv.Itoa(lit)
}

// TestDeclaredLengthHoldsNoMemory: 20 authenticated sessions each start a
// Query that declares 60 MiB and send a few bytes of it. The proxy's heap
// (this test process runs it) grows by far less than the declared 1.2 GiB,
// and nothing is taken from the partial-message budget; other sessions
// keep working.
func TestDeclaredLengthHoldsNoMemory(t *testing.T) {
	for _, m := range relayModes {
		t.Run(m.name, func(t *testing.T) { testDeclaredLengthHoldsNoMemory(t, m.useTLS) })
	}
}

func testDeclaredLengthHoldsNoMemory(t *testing.T, useTLS bool) {
	ca := testenv.TestCA(t)
	p, db := memProxy(t, ca, 0, 0, 0)
	const sessions, declared = 20, 60 << 20
	conns := make([]net.Conn, sessions)
	for i := range conns {
		conns[i] = rawSession(t, p, db, ca, useTLS)
	}
	before := proxytest.HeapAlloc()
	// Three steps, each read by the proxy before the next: the relay has
	// acted on the declared length by the time the last one is read.
	hdr := binary.BigEndian.AppendUint32([]byte{'Q'}, declared+4)
	for _, step := range [][]byte{append(hdr, "SELECT "...), []byte("'"), []byte("x")} {
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
	t.Logf("heap growth with %d sessions each declaring %d MiB: %.1f MiB", sessions, declared>>20, float64(growth)/(1<<20))
	if growth > 32<<20 {
		t.Errorf("heap grew by %d MiB for messages that sent 9 bytes each", growth>>20)
	}
	if used := p.Backend().Memory().Used(); used != 0 {
		t.Errorf("partial-message memory in use: %d bytes", used)
	}
	other := p.Connect(t, db)
	var n int
	if err := other.QueryRow(context.Background(), "SELECT 42").Scan(&n); err != nil || n != 42 {
		t.Fatalf("another session: %d, %v", n, err)
	}
}

// TestPartialMessageMemoryBudget runs with 4 MiB for partial messages. A
// session that stalls in the middle of a 3 MiB query holds most of it; a
// second session sending a 3 MiB query then waits, unread, while others
// keep working, and completes once the first one leaves. With a wait bound
// of 1 s, a session that cannot get memory in time gets FATAL 53200,
// counted and logged once, and nobody else is affected: the stalled
// session even finishes its query afterwards.
func TestPartialMessageMemoryBudget(t *testing.T) {
	for _, m := range relayModes {
		t.Run(m.name, func(t *testing.T) {
			t.Run("waits", func(t *testing.T) { testBudgetWaits(t, m.useTLS) })
			t.Run("ended past the wait bound", func(t *testing.T) { testBudgetEnds(t, m.useTLS) })
		})
	}
}

const (
	budget    = 4 << 20
	bigQuery  = 3 << 20
	stallPart = bigQuery * 5 / 6
)

// stall starts a bigQuery-byte query on a raw session and sends only
// stallPart bytes of it, which the proxy reads (and holds).
func stall(t *testing.T, p *proxytest.Proxy, db string, ca *testenv.CA, useTLS bool) (c net.Conn, rest []byte, want string) {
	t.Helper()
	c = rawSession(t, p, db, ca, useTLS)
	sql, want := lengthQuery(bigQuery)
	msg := queryMessage(sql)
	if _, err := c.Write(msg[:stallPart]); err != nil {
		t.Fatal(err)
	}
	p.WaitRead(t, c)
	return c, msg[stallPart:], want
}

func testBudgetWaits(t *testing.T, useTLS bool) {
	ca := testenv.TestCA(t)
	p, db := memProxy(t, ca, budget, budget, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	staller, _, _ := stall(t, p, db, ca, useTLS)

	waiter := pgConnect(t, p, db, ca, useTLS)
	sql, want := lengthQuery(bigQuery)
	type result struct {
		got string
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := waiter.Exec(ctx, sql).ReadAll()
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{got: string(res[0].Rows[0][0])}
	}()
	proxytest.Eventually(t, 30*time.Second, "the second session to wait for memory", func() bool {
		return strings.Contains(p.Logs.String(), "memory for partially received client messages is used up")
	})

	// Meanwhile other sessions work, with messages up to a relay buffer.
	other := p.Connect(t, db)
	var n int
	medium := strings.Repeat("y", 20<<10)
	if err := other.QueryRow(ctx, "SELECT length($1::text)", medium).Scan(&n); err != nil || n != len(medium) {
		t.Fatalf("another session: %d, %v", n, err)
	}
	if err := p.Connect(t, db).QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("a new session: %v", err)
	}
	select {
	case r := <-done:
		t.Fatalf("the second session finished while the memory was in use: %+v", r)
	default:
	}

	staller.Close() // its memory goes back: the waiting session goes on
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

func testBudgetEnds(t *testing.T, useTLS bool) {
	ca := testenv.TestCA(t)
	p, db := memProxy(t, ca, budget, budget, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	staller, rest, stallWant := stall(t, p, db, ca, useTLS)

	// The victim sends a whole 3 MiB query and reads what comes back.
	victim := rawSession(t, p, db, ca, useTLS)
	sql, _ := lengthQuery(bigQuery)
	go victim.Write(queryMessage(sql)) // blocks while the proxy does not read; fails once it closed
	victim.SetReadDeadline(time.Now().Add(time.Minute))
	answer, _ := io.ReadAll(victim)
	var fatal *pgproto3.ErrorResponse
	for len(answer) >= 5 {
		n := 1 + int(binary.BigEndian.Uint32(answer[1:5]))
		if n > len(answer) {
			break
		}
		if answer[0] == 'E' {
			fatal = &pgproto3.ErrorResponse{}
			if err := fatal.Decode(answer[5:n]); err != nil {
				t.Fatal(err)
			}
		}
		answer = answer[n:]
	}
	if fatal == nil || fatal.Severity != "FATAL" || fatal.Code != "53200" {
		t.Fatalf("the session past the wait bound got %+v, want FATAL 53200", fatal)
	}
	t.Logf("FATAL %s: %s", fatal.Code, fatal.Message)
	if got := p.Metric(t, `credswap_client_errors_total{backend="pg",code="out_of_memory"}`); got != 1 {
		t.Errorf("out_of_memory errors counted: %v", got)
	}
	if got := strings.Count(p.Logs.String(), "out of memory"); got != 1 {
		t.Errorf("%d log lines about the session ended out of memory, want 1:\n%s", got, p.Logs.Tail(20))
	}

	// Nobody else noticed: a new session works, and the stalled one
	// finishes its query.
	var n int
	if err := p.Connect(t, db).QueryRow(ctx, "SELECT 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("a new session: %d, %v", n, err)
	}
	if _, err := staller.Write(rest); err != nil {
		t.Fatal(err)
	}
	staller.SetReadDeadline(time.Now().Add(time.Minute))
	fe := pgproto3.NewFrontend(staller, staller)
	var got string
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("the stalled session's answer: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			got = string(m.Values[0])
		case *pgproto3.ErrorResponse:
			t.Fatalf("the stalled session's query: %s %s", m.Code, m.Message)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if got != stallWant {
		t.Fatalf("the stalled session's query answered %q, want %q", got, stallWant)
	}
	proxytest.Eventually(t, 10*time.Second, "the budget to be free", func() bool { return p.Backend().Memory().Used() == 0 })
}

// TestLargeMessagesRoundTrip moves a 20 MiB bytea through the proxy with a
// 64 MiB partial-message budget (the max_message_size): as a simple Query
// (about 40 MiB of hex text, which the relay reads whole), in a Parse of
// the same text, and as a binary Bind parameter (streamed); each reads
// back exactly.
func TestLargeMessagesRoundTrip(t *testing.T) {
	for _, m := range relayModes {
		t.Run(m.name, func(t *testing.T) { testLargeMessagesRoundTrip(t, m.useTLS) })
	}
}

func testLargeMessagesRoundTrip(t *testing.T, useTLS bool) {
	ca := testenv.TestCA(t)
	p, db := memProxy(t, ca, 64<<20, 64<<20, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dsn := p.ConnString(db)
	if useTLS {
		dsn = strings.Replace(dsn, "sslmode=disable", "sslmode=verify-full", 1) + " host=localhost"
	}
	var tlsCfg = ca.ClientTLSConfig("localhost")
	if !useTLS {
		tlsCfg = nil
	}
	c, err := connect(ctx, dsn, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	data := make([]byte, 20<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if _, err := c.Exec(ctx, "CREATE TABLE blobs (id int PRIMARY KEY, b bytea)"); err != nil {
		t.Fatal(err)
	}
	hexLit := fmt.Sprintf(`'\x%x'::bytea`, data)
	for i, step := range []struct {
		name string
		run  func(id int) error
	}{
		{"simple Query", func(id int) error {
			_, err := c.Exec(ctx, "INSERT INTO blobs VALUES ($1, $2)", pgx.QueryExecModeSimpleProtocol, id, data)
			return err
		}},
		{"Parse", func(id int) error {
			_, err := c.Exec(ctx, fmt.Sprintf("INSERT INTO blobs VALUES (%d, %s)", id, hexLit), pgx.QueryExecModeExec)
			return err
		}},
		{"Bind", func(id int) error {
			_, err := c.Exec(ctx, "INSERT INTO blobs VALUES ($1, $2)", id, data)
			return err
		}},
	} {
		id := i + 1
		if err := step.run(id); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		var back []byte
		if err := c.QueryRow(ctx, "SELECT b FROM blobs WHERE id = $1", id).Scan(&back); err != nil {
			t.Fatalf("%s: reading back: %v", step.name, err)
		}
		if !bytes.Equal(back, data) {
			t.Fatalf("%s: read back %d bytes that differ from the %d written", step.name, len(back), len(data))
		}
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM blobs").Scan(&n); err != nil || n != 3 {
		t.Fatalf("after the large messages: %d rows, %v", n, err)
	}
	proxytest.Eventually(t, 10*time.Second, "the budget to be free", func() bool { return p.Backend().Memory().Used() == 0 })
}
