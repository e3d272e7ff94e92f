package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestPgbenchUnderAlternatingRotation runs pgbench (TPC-B-like, 16
// clients) while the credential alternates between two users every 500 ms
// (or when the previous drain is done, if that takes longer):
// the next user's password is changed in the database, then the file.
func TestPgbenchUnderAlternatingRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	for _, mode := range []string{"prepared", "simple"} {
		t.Run(mode, func(t *testing.T) {
			pg := testenv.PG(t)
			db, userA, passA, userB, _ := twoUsers(t, pg)
			p := proxytest.Start(t, pg, userA, passA)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			bench := p.PG.Bin("pgbench")
			if out, err := testenv.Command(ctx, bench, p.Env(db), "-i", "-s", "1", "-q").CombinedOutput(); err != nil {
				t.Fatalf("pgbench -i: %v\n%s", err, out)
			}
			pg.ExecIn(t, db, fmt.Sprintf("GRANT ALL ON ALL TABLES IN SCHEMA public TO %s", userB))

			stop := p.Alternate(t, 500*time.Millisecond, [2]string{userA, userB}, func(user, pw string) {
				// Like credswap's own rotation, change a user's password only
				// once the drain away from it is done: on a loaded machine,
				// adoption could otherwise lag so far that every credential the
				// proxy held was already changed again.
				p.Settled(user, 10*time.Second)
				pg.Exec(t, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", user, pw))
			})
			out, err := testenv.Command(ctx, bench, p.Env(db), "-c", "16", "-j", "2", "-T", "20", "-M", mode).CombinedOutput()
			n := stop()
			if err != nil || !strings.Contains(string(out), "number of failed transactions: 0 (0.000%)") {
				// Who waited for what, to tell a slow machine from a stuck session.
				conn := pg.Connect(t, "postgres")
				var activity string
				conn.QueryRow(ctx, `SELECT coalesce(string_agg(pid || ' ' || usename || ' ' || state || ' ' || coalesce(wait_event_type || ':' || wait_event, '-') ||
					' xact ' || coalesce(now() - xact_start, '0')::text || ' blocked by ' || pg_blocking_pids(pid)::text || ' ' || left(query, 60), E'\n'), '')
					FROM pg_stat_activity WHERE datname = $1`, db).Scan(&activity)
				conn.Close(ctx)
				t.Logf("database sessions after pgbench:\n%s", activity)
			}
			if err != nil {
				t.Fatalf("pgbench: %v\n%s", err, out)
			}
			checkPgbench(t, string(out))
			st := p.Status(t).Backends[0]
			t.Logf("%d rotations, generation %d, switches %v", n, st.Credential.Current.Generation, st.Drain.Results)
			if st.Credential.Current.Generation < uint64(n/2) {
				t.Fatalf("only %d generations adopted for %d rotations", st.Credential.Current.Generation, n)
			}
			current := st.Credential.Current.Username
			retired := userA
			if current == userA {
				retired = userB
			}
			// Backends exit asynchronously after their connection closes;
			// on a loaded machine that can take seconds.
			var left string
			defer func() {
				if t.Failed() && left != "" {
					t.Logf("backends of %s: %s", retired, left)
				}
			}()
			proxytest.Eventually(t, 15*time.Second, "no backend of the retired user", func() bool {
				conn := pg.Connect(t, "postgres")
				defer conn.Close(ctx)
				left = ""
				conn.QueryRow(ctx, "SELECT coalesce(string_agg(pid || ' ' || state || ' since ' || backend_start::text || ' ' || query, '; '), '') FROM pg_stat_activity WHERE usename = $1", retired).Scan(&left)
				return left == ""
			})
			if strings.Contains(p.Logs.String(), `"level":"error"`) {
				t.Errorf("errors logged:\n%s", grep(p.Logs.String(), `"level":"error"`))
			}
		})
	}
}
