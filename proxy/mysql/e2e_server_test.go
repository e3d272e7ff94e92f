package mysql_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

func TestMaxClientConns(t *testing.T) {
	p, db, _ := setup(t, func(c *config.Config) { c.Backends[0].Limits.MaxClientConns = 2 })
	conn(t, p, db, "")
	conn(t, p, db, "")
	_, err := pingAs(p.DSN(db, ""))
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 1040 {
		t.Fatalf("third client: want 1040, got %v", err)
	}
}

// TestPoolReuse: a client that leaves returns its backend connection to
// the pool after COM_RESET_CONNECTION; the next client gets it without
// its state.
func TestPoolReuse(t *testing.T) {
	p, db, _ := setup(t)
	sdb := open(t, p, db, "")
	sdb.SetMaxIdleConns(0)
	ctx := context.Background()
	c, err := sdb.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"SET @x = 5", "SET SESSION sql_mode = 'ANSI'", "CREATE TEMPORARY TABLE tmp (x INT)", "PREPARE p FROM 'SELECT 1'"} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	thread := queryString(t, c, "SELECT CONNECTION_ID()")
	c.Close() // go-sql-driver sends COM_QUIT: SetMaxIdleConns(0)
	proxytest.Eventually(t, 5*time.Second, "the backend connection to return to the pool", func() bool {
		return p.Status(t).Backends[0].BackendConnections.Idle == 1
	})
	c2 := conn(t, p, db, "")
	if got := queryString(t, c2, "SELECT CONNECTION_ID()"); got != thread {
		t.Fatalf("new client got thread %s, want the pooled %s", got, thread)
	}
	if got := queryString(t, c2, "SELECT CONCAT_WS(',', COALESCE(@x, 'none'), @@SESSION.sql_mode = @@GLOBAL.sql_mode, DATABASE())"); got != "none,1,"+db {
		t.Fatalf("state leaked through the pool: %s", got)
	}
	if _, err := c2.ExecContext(ctx, "SELECT * FROM tmp"); err == nil {
		t.Fatal("temporary table leaked through the pool")
	}
	if _, err := c2.ExecContext(ctx, "EXECUTE p"); err == nil {
		t.Fatal("prepared statement leaked through the pool")
	}
}

// TestBadInput sends malformed traffic while a healthy session keeps
// working.
func TestBadInput(t *testing.T) {
	p, db, _ := setup(t, func(c *config.Config) {
		c.Backends[0].Limits.MaxMessageSize = 64 << 10
		c.Backends[0].Limits.HandshakeTimeout = config.Duration(2 * time.Second)
	})
	healthy := conn(t, p, db, "")
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int
			if err := healthy.QueryRowContext(ctx, "SELECT 1").Scan(&n); err != nil {
				errs <- err
				return
			}
		}
	}()
	addr := net.JoinHostPort(p.Host, itoa(p.Port))
	// raw reads the greeting, sends payload, and returns what came back
	// until the proxy closed the connection, and how long that took.
	raw := func(payload []byte) ([]byte, time.Duration) {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		greeting := make([]byte, 4096)
		if n, err := conn.Read(greeting); err != nil || n < 5 || greeting[4] != 10 {
			t.Fatalf("no greeting: %v %q", err, greeting[:n])
		}
		start := time.Now()
		conn.Write(payload)
		var out []byte
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				return out, time.Since(start)
			}
		}
	}
	isErr := func(out []byte, code uint16) bool {
		return len(out) >= 7 && out[4] == 0xff && uint16(out[5])|uint16(out[6])<<8 == code
	}
	// Garbage: an HTTP request read as a packet header announcing 5 MB.
	if out, took := raw([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); !isErr(out, 1043) || took > time.Second {
		t.Errorf("garbage: %q after %s", out, took)
	}
	// A handshake response announcing 16 MB.
	if out, took := raw([]byte{0xff, 0xff, 0xff, 1, 0, 0}); !isErr(out, 1043) || took > time.Second {
		t.Errorf("oversized handshake packet: %q after %s", out, took)
	}
	// A truncated handshake response, then silence: the handshake timeout.
	if out, took := raw([]byte{40, 0, 0, 1, 0x8d, 0xa6}); took > 4*time.Second {
		t.Errorf("truncated handshake: %q after %s", out, took)
	}
	// Disconnect mid-handshake.
	c, _ := net.Dial("tcp", addr)
	c.Write([]byte{40, 0, 0})
	c.Close()

	// After login, a command above max_message_size: ERR 1153, and the
	// session ends.
	big := open(t, p, db, "maxAllowedPacket=4194304")
	_, err := big.ExecContext(ctx, "SELECT ?", strings.Repeat("x", 100<<10))
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 1153 || !strings.Contains(myErr.Message, "max_message_size") {
		t.Errorf("oversized command: %v", err)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("healthy session failed: %v", err)
	default:
	}
	if got := queryString(t, healthy, "SELECT 2"); got != "2" {
		t.Fatalf("healthy session after bad input: %s", got)
	}
}

// TestNoSecretsInLogs runs logins (good and bad), a credential change and
// a failed adoption at debug level and searches the log for passwords.
func TestNoSecretsInLogs(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	p := proxytest.StartMySQL(t, m, userA, passA, withUsers)
	queryString(t, conn(t, p, db, ""), "SELECT 1")
	wrongClient := "wrong-" + proxytest.Random(6)
	pingAs(dsnAs(p, p.ClientUser, wrongClient, db, ""))
	pingAs(dsnAs(p, "nat", "nat-secret", db, ""))
	wrongBackend := "badpw-" + proxytest.Random(6)
	p.WriteCredential(t, userB, wrongBackend)
	proxytest.Eventually(t, 5*time.Second, "failed adoption", func() bool { return p.Backend().Store.Status().Failing })
	p.WriteCredential(t, userB, passB)
	proxytest.Eventually(t, 5*time.Second, "adoption", func() bool { return p.Backend().Store.Current().Cred.Username == userB })
	if who, err := pingAs(p.DSN(db, "")); err != nil || who != userB+"@%" {
		t.Fatalf("after adoption: %q %v", who, err)
	}
	logs := p.Logs.String()
	for _, secret := range []string{passA, passB, wrongBackend, p.ClientPassword, wrongClient, "nat-secret"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a password appears in the log")
		}
	}
	if !strings.Contains(logs, userB) {
		t.Fatalf("log has no trace of the adoption:\n%s", p.Logs.Tail(20))
	}
}

// TestChangeUser sends COM_CHANGE_USER (go-mysql's client has no helper
// for it, so the packet is built here): the proxy authenticates the new
// local user, resets the backend connection and answers OK; a wrong
// password ends the session with 1045.
func TestChangeUser(t *testing.T) {
	p, db, user := setup(t, withUsers)
	addr := net.JoinHostPort(p.Host, itoa(p.Port))
	connect := func() *client.Conn {
		c, err := client.Connect(addr, "sha2a", "sha2a-secret", db, func(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	changeUser := func(c *client.Conn, user, password, db string) error {
		payload := []byte{0, 0, 0, 0, 0x11}
		payload = append(payload, user...)
		payload = append(payload, 0, 0) // empty auth response: the proxy always switches
		payload = append(payload, db...)
		payload = append(payload, 0, 45, 0)
		payload = append(payload, gomysql.AUTH_NATIVE_PASSWORD...)
		payload = append(payload, 0)
		c.ResetSequence()
		if err := c.WritePacket(payload); err != nil {
			return err
		}
		sw, err := c.ReadPacket()
		if err != nil {
			return err
		}
		if sw[0] != 0xfe {
			return fmt.Errorf("want an AuthSwitchRequest, got %x", sw)
		}
		plugin, rest, _ := bytes.Cut(sw[1:], []byte{0})
		salt := rest[:20]
		var resp []byte
		if string(plugin) == gomysql.AUTH_NATIVE_PASSWORD {
			resp = gomysql.CalcNativePassword(salt, []byte(password))
		} else {
			resp = gomysql.CalcCachingSha2Password(salt, []byte(password))
		}
		if err := c.WritePacket(append([]byte{0, 0, 0, 0}, resp...)); err != nil {
			return err
		}
		for {
			pkt, err := c.ReadPacket()
			if err != nil {
				return err
			}
			switch pkt[0] {
			case 0x01: // caching_sha2 fast authentication succeeded
				continue
			case 0x00:
				return nil
			default:
				return c.HandleErrorPacket(pkt)
			}
		}
	}
	c := connect()
	if _, err := c.Execute("SET @x = 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Execute("PREPARE s FROM 'SELECT 1'"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct{ name, password string }{{"nat", "nat-secret"}, {"sha2b", "sha2b-secret"}} {
		if err := changeUser(c, u.name, u.password, db); err != nil {
			t.Fatalf("change user to %s: %v", u.name, err)
		}
		r, err := c.Execute("SELECT CONCAT_WS(',', CURRENT_USER(), COALESCE(@x, 'none'), DATABASE())")
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := r.GetString(0, 0); got != user+"@%,none,"+db {
			t.Fatalf("after change user to %s: %s", u.name, got)
		}
	}
	if _, err := c.Execute("EXECUTE s"); err == nil {
		t.Fatal("prepared statement survived COM_CHANGE_USER")
	}
	var names []string
	for _, s := range p.Backend().Sessions.Snapshot() {
		names = append(names, s.Info().User)
	}
	if fmt.Sprint(names) != "[sha2b]" {
		t.Fatalf("session users in status: %v", names)
	}
	c2 := connect()
	err := changeUser(c2, "nat", "wrong", db)
	var myErr *gomysql.MyError
	if !errors.As(err, &myErr) || myErr.Code != 1045 {
		t.Fatalf("change user with a wrong password: %v", err)
	}
	if _, err := c2.Execute("SELECT 1"); err == nil {
		t.Fatal("the session survived a failed COM_CHANGE_USER")
	}
}
