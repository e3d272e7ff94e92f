package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestDrainWithinConnectionBudget: a database whose max_connections is the
// proxy's sessions plus 40. 300 idle sessions and a pgbench load go through
// the proxy while another application logs in directly every 50 ms; a
// rotation moves every session, refuses nobody (the application, pgbench,
// the sessions), and never holds more than drain_connection_budget backend
// connections beyond one per session. Before the budget, the drain dialed
// a spare for every session first: the database filled up, the warm-ups
// and the neighbour's logins were refused.
func TestDrainWithinConnectionBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const sessions, benchClients, budget = 300, 4, 8
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pg, err := testenv.StartPostgres(ctx, testenv.PostgresOptions{ExtraConfig: []string{
		fmt.Sprintf("max_connections = %d", sessions+benchClients+40),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	user, password := pg.CreateUser(t, "be")
	next, nextPassword := pg.CreateUser(t, "be")
	neighbour, neighbourPassword := pg.CreateUser(t, "other")
	db := pg.CreateDatabase(t)
	pg.Exec(t, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", db, user))
	pg.Exec(t, fmt.Sprintf("GRANT %s TO %s", user, next))
	pg.Exec(t, fmt.Sprintf("GRANT pg_read_all_stats TO %s", neighbour)) // to see other users' backends
	p := proxytest.Start(t, pg, user, password)
	if got := p.Config.Backends[0].DrainConnectionBudget; got != budget {
		t.Fatalf("default drain_connection_budget = %d, want %d", got, budget)
	}

	bench := pg.Bin("pgbench")
	if out, err := testenv.Command(ctx, bench, p.Env(db), "-i", "-s", "1", "-q").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	var conns []*pgconn.PgConn
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	for i := range sessions {
		c, err := pgconn.Connect(ctx, p.ConnString(db))
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		conns = append(conns, c)
	}

	// The neighbour logs in directly every 50 ms and records the client
	// backends the database holds.
	neighbourDSN := fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable",
		pg.Host, pg.Port, neighbour, neighbourPassword, db)
	var refused, logins atomic.Int64
	var peak atomic.Int64
	var firstErr atomic.Pointer[string]
	stopNeighbour := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopNeighbour:
				return
			case <-tick.C:
			}
			c, err := pgx.Connect(ctx, neighbourDSN)
			if err != nil {
				refused.Add(1)
				msg := err.Error()
				firstErr.CompareAndSwap(nil, &msg)
				continue
			}
			logins.Add(1)
			var n int64
			err = c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename <> $1", neighbour).Scan(&n)
			if err != nil {
				msg := "counting backends: " + err.Error()
				firstErr.CompareAndSwap(nil, &msg)
				refused.Add(1)
			} else {
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
			}
			c.Close(ctx)
		}
	}()
	proxytest.Eventually(t, 30*time.Second, "the neighbour to log in", func() bool { return logins.Load() >= 3 })
	before := peak.Load()

	benchOut := make(chan string, 1)
	go func() {
		out, err := testenv.Command(ctx, bench, p.Env(db), "-c", fmt.Sprint(benchClients), "-j", "2", "-T", "25", "-S").CombinedOutput()
		if err != nil {
			out = append(out, []byte("\npgbench: "+err.Error())...)
		}
		benchOut <- string(out)
	}()
	proxytest.Eventually(t, 30*time.Second, "pgbench to connect", func() bool {
		return p.Metric(t, `credswap_client_sessions{backend="pg"}`) >= sessions+benchClients
	})
	base := peak.Load()
	p.RotateTo(t, next, nextPassword)
	p.WaitSwitched(t, 2*time.Minute)
	checkPgbench(t, <-benchOut)
	close(stopNeighbour)
	wg.Wait()

	if n := refused.Load(); n > 0 {
		t.Errorf("the neighbour was refused %d times of %d (first: %s)", n, n+logins.Load(), *firstErr.Load())
	}
	// The proxy's backend connections before the drain: one per session
	// and the idle pool. During it, at most the budget more.
	if over := peak.Load() - max(base, before); over > budget {
		t.Errorf("the drain held %d backend connections beyond the sessions' (peak %d, before %d), want at most %d",
			over, peak.Load(), max(base, before), budget)
	}
	for i, c := range conns {
		r := c.ExecParams(ctx, "SELECT current_user", nil, nil, nil, nil).Read()
		if r.Err != nil || len(r.Rows) != 1 || string(r.Rows[0][0]) != next {
			t.Fatalf("session %d after the drain: %v %q", i, r.Err, r.Rows)
		}
	}
	if logs := p.Logs.String(); strings.Contains(logs, "warming a backend connection failed") {
		t.Error("warm-ups failed during the drain")
	}
	t.Logf("neighbour: %d logins, %d refused; client backends: %d before, %d with pgbench, peak %d",
		logins.Load(), refused.Load(), before, base, peak.Load())
}
