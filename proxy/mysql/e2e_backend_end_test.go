package mysql_test

import (
	"bufio"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	mysqlproxy "github.com/credswap/credswap/proxy/mysql"
)

// The tests in this file are differential: each way the database ends a
// session is applied to clients connected straight to MariaDB and to
// clients connected through credswap, and what the clients see must be
// the same. The mariadb CLI's direct connections use --skip-ssl, as
// through a proxy without client_tls (over TLS the CLI reports the lost
// connection as a TLS error instead).

// endTarget is one way of connecting: straight to MariaDB or through
// credswap.
type endTarget struct {
	name    string
	dsn     string   // go-sql-driver
	cliArgs []string // the mariadb CLI's connection arguments
}

func endTargets(m *testenv.MariaDB, p *proxytest.Proxy, db, user, password string) []endTarget {
	return []endTarget{
		{name: "direct", dsn: fmt.Sprintf("%s:%s@tcp(%s)/%s", user, password, m.Addr(), db),
			cliArgs: []string{"--protocol=TCP", "-h", m.Host, "-P", strconv.Itoa(m.Port), "-u", user, "-p" + password, "-D", db, "--skip-ssl"}},
		{name: "credswap", dsn: p.DSN(db, ""), cliArgs: p.MariaDBArgs(db)},
	}
}

// errClass names what go-sql-driver returned, for comparison.
func errClass(err error) string {
	var me *mysql.MySQLError
	switch {
	case err == nil:
		return "no error"
	case errors.Is(err, driver.ErrBadConn):
		return "driver.ErrBadConn"
	case errors.Is(err, mysql.ErrInvalidConn):
		return "mysql.ErrInvalidConn"
	case errors.As(err, &me):
		return fmt.Sprintf("server error %d (%s)", me.Number, me.SQLState[:])
	}
	return "other: " + err.Error()
}

// cliSession is the mariadb CLI in batch mode, fed statements one line at
// a time, its stdout and stderr read in order from one pipe.
type cliSession struct {
	t    *testing.T
	in   io.WriteCloser
	out  *bufio.Reader
	wait func() error
}

func startCLI(t *testing.T, m *testenv.MariaDB, args []string) *cliSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := m.Command(ctx, append(args, "--batch", "--skip-column-names", "--unbuffered")...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	c := &cliSession{t: t, in: in, out: bufio.NewReader(r), wait: func() error {
		defer cancel()
		defer r.Close()
		return cmd.Wait()
	}}
	t.Cleanup(func() { in.Close(); c.wait() })
	return c
}

// line sends sql and returns the one line it prints.
func (c *cliSession) line(sql string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.in, sql+"\n"); err != nil {
		c.t.Fatal(err)
	}
	s, err := c.out.ReadString('\n')
	if err != nil {
		c.t.Fatalf("mariadb CLI: %q: %v", s, err)
	}
	return strings.TrimSpace(s)
}

// last sends sql, ends the input and returns the rest of the output and
// how the CLI exited.
func (c *cliSession) last(sql string) string {
	c.t.Helper()
	io.WriteString(c.in, sql+"\n")
	c.in.Close()
	rest, _ := io.ReadAll(c.out)
	err := c.wait()
	return fmt.Sprintf("%s[exit: %v]", rest, err)
}

// idleClients are the three clients of one target in
// TestBackendEndsIdleSession, each with one session on the database.
type idleClients struct {
	raw     *sql.Conn // a connection held by the test
	pool    *sql.DB   // one pooled connection, checked out for each query
	cli     *cliSession
	threads []string // the three sessions' thread ids on the database
}

// TestBackendEndsIdleSession ends idle sessions on the database in three
// ways — wait_timeout, KILL CONNECTION from another session, a server
// restart — for the mariadb CLI and go-sql-driver, directly and through
// credswap. Through credswap the client connection is closed at once, as
// the database closes its own, so that the next use sees exactly what it
// sees directly: a *sql.DB replaces the dead connection before using it
// (go-sql-driver's liveness check) and the query succeeds; a held
// *sql.Conn gets the same driver error (driver.ErrBadConn after a reset,
// mysql.ErrInvalidConn after a close); the CLI prints the same output.
func TestBackendEndsIdleSession(t *testing.T) {
	m := testenv.StartTestMariaDB(t, testenv.MariaDBOptions{})
	db := m.CreateDatabase(t)
	user, password := m.CreateUser(t, "idle")
	m.Grant(t, user, db)
	p := proxytest.StartMySQL(t, m, user, password, nativeAuth)
	targets := endTargets(m, p, db, user, password)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	for _, how := range []string{"wait_timeout", "KILL", "restart"} {
		t.Run(how, func(t *testing.T) {
			clients := make([]idleClients, len(targets))
			for i, tg := range targets {
				c := &clients[i]
				sdb, err := sql.Open("mysql", tg.dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { sdb.Close() })
				if c.raw, err = sdb.Conn(ctx); err != nil {
					t.Fatalf("%s: %v", tg.name, err)
				}
				t.Cleanup(func() { c.raw.Close() })
				c.pool, err = sql.Open("mysql", tg.dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.pool.Close() })
				c.pool.SetMaxOpenConns(1)
				c.cli = startCLI(t, m, tg.cliArgs)
				// Thread ids first: a session with wait_timeout = 1 may be
				// gone a second later.
				c.threads = append(c.threads, queryString(t, c.raw, "SELECT CONNECTION_ID()"),
					queryString(t, c.pool, "SELECT CONNECTION_ID()"), c.cli.line("SELECT CONNECTION_ID();"))
				if how == "wait_timeout" {
					if _, err := c.raw.ExecContext(ctx, "SET SESSION wait_timeout = 1"); err != nil {
						t.Fatal(err)
					}
					if _, err := c.pool.ExecContext(ctx, "SET SESSION wait_timeout = 1"); err != nil {
						t.Fatal(err)
					}
					if out := c.cli.line("SET SESSION wait_timeout = 1; SELECT 'set';"); out != "set" {
						t.Fatal(out)
					}
				}
			}
			var all []string
			for _, c := range clients {
				all = append(all, c.threads...)
			}
			switch how {
			case "KILL":
				for _, id := range all {
					m.Exec(t, "KILL CONNECTION "+id)
				}
			case "restart":
				if err := m.Restart(ctx); err != nil {
					t.Fatal(err)
				}
			}
			proxytest.Eventually(t, 20*time.Second, "the database to end the sessions", func() bool {
				return m.Query(t, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID IN ("+strings.Join(all, ",")+")") == "0"
			})
			// Through credswap: the client connections are closed too,
			// before the clients use them again.
			proxytest.Eventually(t, 20*time.Second, "credswap to close the client connections", func() bool {
				return p.Backend().Sessions.Len() == 0
			})

			raw := make([]string, len(targets))
			cli := make([]string, len(targets))
			for i, tg := range targets {
				c := &clients[i]
				var n int
				raw[i] = errClass(c.raw.QueryRowContext(ctx, "SELECT 1").Scan(&n))
				if err := c.pool.QueryRowContext(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
					t.Errorf("%s: *sql.DB after its connection ended: %d, %v", tg.name, n, err)
				}
				cli[i] = c.cli.last("SELECT 3;")
				t.Logf("%s: held *sql.Conn: %s; CLI: %q", tg.name, raw[i], cli[i])
			}
			if raw[0] != raw[1] {
				t.Errorf("held *sql.Conn: directly %s, through credswap %s", raw[0], raw[1])
			}
			if cli[0] != cli[1] {
				t.Errorf("mariadb CLI: directly %q, through credswap %q", cli[0], cli[1])
			}
			if strings.Contains(cli[1], "2027") {
				t.Errorf("the CLI could not parse what credswap sent: %q", cli[1])
			}
		})
	}
	if strings.Contains(p.Logs.String(), password) {
		t.Fatal("the backend password reached the log")
	}
}

// TestBackendEndsSessionMidQuery ends sessions on the database while they
// run SELECT SLEEP(10) (KILL CONNECTION, a server restart). MariaDB closes
// the connection without an ERR; through credswap the client connection is
// closed the same way, so the mariadb CLI prints the same error as
// directly (2013 Lost connection, not 2027 Received malformed packet) and
// go-sql-driver returns the same driver error.
func TestBackendEndsSessionMidQuery(t *testing.T) {
	m := testenv.StartTestMariaDB(t, testenv.MariaDBOptions{})
	db := m.CreateDatabase(t)
	user, password := m.CreateUser(t, "midq")
	m.Grant(t, user, db)
	p := proxytest.StartMySQL(t, m, user, password, nativeAuth)
	targets := endTargets(m, p, db, user, password)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	for _, how := range []string{"KILL", "restart"} {
		t.Run(how, func(t *testing.T) {
			goErr := make([]chan error, len(targets))
			cliOut := make([]chan string, len(targets))
			for i, tg := range targets {
				sdb, err := sql.Open("mysql", tg.dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { sdb.Close() })
				c, err := sdb.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				goErr[i] = make(chan error, 1)
				go func() {
					var n int
					goErr[i] <- c.QueryRowContext(ctx, "SELECT SLEEP(10)").Scan(&n)
				}()
				cliOut[i] = make(chan string, 1)
				cmd := m.Command(ctx, append(tg.cliArgs, "--batch", "-e", "SELECT SLEEP(10)")...)
				go func() {
					out, err := cmd.CombinedOutput()
					cliOut[i] <- fmt.Sprintf("%s[exit: %v]", out, err)
				}()
			}
			var ids []string
			proxytest.Eventually(t, 20*time.Second, "four SLEEP(10) to run", func() bool {
				ids = strings.Fields(m.Query(t, "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(10)'"))
				return len(ids) == 4
			})
			// The outcomes below are errors, not SLEEP's result: the
			// clients saw the end before the statement could finish.
			if how == "KILL" {
				for _, id := range ids {
					m.Exec(t, "KILL CONNECTION "+id)
				}
			} else if err := m.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			gos := make([]string, len(targets))
			clis := make([]string, len(targets))
			for i, tg := range targets {
				gos[i] = errClass(<-goErr[i])
				clis[i] = <-cliOut[i]
				t.Logf("%s: go-sql-driver: %s; CLI: %q", tg.name, gos[i], clis[i])
			}
			if gos[0] != gos[1] {
				t.Errorf("go-sql-driver: directly %s, through credswap %s", gos[0], gos[1])
			}
			if clis[0] != clis[1] {
				t.Errorf("mariadb CLI: directly %q, through credswap %q", clis[0], clis[1])
			}
			if strings.Contains(clis[1], "2027") {
				t.Errorf("the CLI could not parse what credswap sent: %q", clis[1])
			}
		})
	}
	// The proxy still serves new sessions.
	if got := queryString(t, open(t, p, db, ""), "SELECT 'alive'"); got != "alive" {
		t.Fatal(got)
	}
}

// TestBackendEndsIdleSessionOverTLS: the watcher of idle sessions works
// on TLS backend connections too.
func TestBackendEndsIdleSessionOverTLS(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db := m.CreateDatabase(t)
	user, password := m.CreateUser(t, "tlsidle")
	m.Grant(t, user, db)
	p := proxytest.StartMySQL(t, m, user, password, func(c *config.Config) {
		c.Backends[0].UpstreamTLS = config.UpstreamTLS{Mode: "verify-full", CAFile: m.CA.CertFile, ServerName: "localhost"}
	})
	c := conn(t, p, db, "")
	m.Exec(t, "KILL CONNECTION "+queryString(t, c, "SELECT CONNECTION_ID()"))
	proxytest.Eventually(t, 20*time.Second, "credswap to close the client connection", func() bool {
		return p.Backend().Sessions.Len() == 0
	})
	var n int
	if err := c.QueryRowContext(context.Background(), "SELECT 1").Scan(&n); !errors.Is(err, mysql.ErrInvalidConn) {
		t.Fatalf("held connection after KILL: %v, want %v", err, mysql.ErrInvalidConn)
	}
}

// TestIdleWatchAndSwitches: sessions that are idle (watched) and busy
// move to a new credential while the database ends one of them; the
// others keep working and end up on the new user, and a session that
// moved is watched on its new connection.
func TestIdleWatchAndSwitches(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, passB := twoUsers(t, m)
	p := proxytest.StartMySQL(t, m, userA, passA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var busy []*sql.Conn
	for range 3 {
		busy = append(busy, conn(t, p, db, ""))
	}
	idle := conn(t, p, db, "")
	doomed := conn(t, p, db, "")
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, len(busy))
	for _, c := range busy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var n int
				if err := c.QueryRowContext(ctx, "SELECT 1").Scan(&n); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	m.Exec(t, "KILL CONNECTION "+queryString(t, doomed, "SELECT CONNECTION_ID()"))
	p.RotateTo(t, userB, passB)
	p.WaitSwitched(t, 20*time.Second)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("busy session: %v", err)
	}
	for _, c := range append(busy, idle) {
		if got := queryString(t, c, "SELECT SUBSTRING_INDEX(USER(), '@', 1)"); got != userB {
			t.Errorf("session runs as %s, want %s", got, userB)
		}
	}
	var n int
	if err := doomed.QueryRowContext(ctx, "SELECT 1").Scan(&n); !errors.Is(err, mysql.ErrInvalidConn) {
		t.Errorf("killed session: %v, want %v", err, mysql.ErrInvalidConn)
	}
	if got := p.Backend().Sessions.Len(); got != 4 {
		t.Fatalf("%d sessions, want 4", got)
	}
	m.Exec(t, "KILL CONNECTION "+queryString(t, idle, "SELECT CONNECTION_ID()"))
	proxytest.Eventually(t, 20*time.Second, "the session killed on its new connection to end", func() bool {
		return p.Backend().Sessions.Len() == 3
	})
	if err := idle.QueryRowContext(ctx, "SELECT 1").Scan(&n); !errors.Is(err, mysql.ErrInvalidConn) {
		t.Errorf("session killed after its switch: %v, want %v", err, mysql.ErrInvalidConn)
	}
}

// TestIdleWatchPanicEndsOneSession makes the watcher of one idle session
// panic when its backend connection ends: that session alone ends, with
// the internal error, the panic is logged with its stack and counted, and
// the other session goes on.
func TestIdleWatchPanicEndsOneSession(t *testing.T) {
	p, db, _ := setup(t)
	victim := conn(t, p, db, "")
	other := conn(t, p, db, "")
	h := p.App.Handler("my").(*mysqlproxy.Handler)
	h.SetFaultHook(func(point string) {
		if point == "watch" {
			panic("injected fault in watch")
		}
	})
	defer h.SetFaultHook(nil)
	p.Maria.Exec(t, "KILL CONNECTION "+queryString(t, victim, "SELECT CONNECTION_ID()"))
	proxytest.Eventually(t, 20*time.Second, "the victim's session to end", func() bool {
		return p.Backend().Sessions.Len() == 1
	})
	var n int
	err := victim.QueryRowContext(context.Background(), "SELECT 1").Scan(&n)
	var me *mysql.MySQLError
	if !errors.As(err, &me) || !strings.Contains(me.Message, "internal proxy error") {
		t.Fatalf("the session whose watcher panicked got %v, want the internal proxy error", err)
	}
	if got := queryString(t, other, "SELECT 'alive'"); got != "alive" {
		t.Fatal(got)
	}
	if met := scrape(t, p); !strings.Contains(met, `credswap_session_panics_total{backend="my"} 1`) {
		t.Fatalf("panic metric:\n%s", met)
	}
	if logs := p.Logs.String(); !strings.Contains(logs, "injected fault in watch") || !strings.Contains(logs, "idle watch") {
		t.Fatalf("the panic was not logged:\n%s", p.Logs.Tail(20))
	}
}
