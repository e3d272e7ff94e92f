package mysql_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
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
			start := time.Now()
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
			if time.Since(start) > 8*time.Second {
				t.Errorf("the clients saw the end %s after it", time.Since(start))
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
