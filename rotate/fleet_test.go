package rotate_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/rotate"
)

// fleetPair starts proxy A, which rotates (alternating-users, publishing
// to its file), and proxy B, which reads a credential file of its own that
// the test updates: B learns the new credential only when the test says.
// B carries a pgbench load and ten idle sessions.
func fleetPair(t *testing.T, fleetDeadline time.Duration) (a, b *proxytest.Proxy, db, userA string, idle []*pgconn.PgConn, benchWait func() string) {
	t.Helper()
	pg := testenv.PG(t)
	db, userA, passA, userB := alternating(t, pg)
	a = proxytest.Start(t, pg, userA, passA, withRotation(t, config.Rotation{
		Strategy: "alternating-users", Users: []string{userA, userB},
		AdminCredential: config.Credential{Source: "file", Path: adminFile(t, pg)},
		FleetDeadline:   config.Duration(fleetDeadline),
	}))
	b = proxytest.Start(t, pg, userA, passA)
	ctx := context.Background()
	for range 10 {
		c, err := pgconn.Connect(ctx, b.ConnString(db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		idle = append(idle, c)
	}
	return a, b, db, userA, idle, pgbenchLoad(t, b, db, 25)
}

// rotateAsync starts a rotation on p and returns its outcome later.
func rotateAsync(t *testing.T, p *proxytest.Proxy) <-chan rotate.Record {
	done := make(chan rotate.Record, 1)
	go func() {
		var rec rotate.Record
		if code := p.AdminDo(t, http.MethodPost, "/v1/backends/pg/rotate?wait=1", &rec); code != http.StatusOK {
			rec.Error = fmt.Sprintf("HTTP %d %s", code, rec.Error)
		}
		done <- rec
	}()
	return done
}

// waiting returns the running rotation's fleet wait, if any.
func waiting(t *testing.T, p *proxytest.Proxy) *rotate.FleetWait {
	st := p.Status(t)
	for _, b := range st.Backends {
		if b.Rotation != nil && b.Rotation.Running != nil && b.Rotation.Running.Waiting != nil {
			return b.Rotation.Running.Waiting
		}
	}
	return nil
}

func retireDetail(rec rotate.Record) string {
	for _, ph := range rec.Phases {
		if ph.Name == rotate.PhaseRetire {
			return ph.Detail
		}
	}
	return ""
}

// TestRetireWaitsForLateProxy: proxy B learns the rotated credential 8 s
// after proxy A published it. A's retire waits until the database shows
// none of B's sessions on the old user (its status names B's address and
// pgbench while it waits), then locks the user: B's pgbench has no failed
// transaction and no aborted client, B's idle sessions all moved. Before,
// A locked the old user after its own drain and ended B's sessions
// (FATAL 57P01).
func TestRetireWaitsForLateProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	a, b, _, userA, idle, benchWait := fleetPair(t, 2*time.Minute)
	// pgbench's 16 clients are connected through B (the holders must name
	// them).
	proxytest.Eventually(t, time.Minute, "pgbench to connect through B", func() bool {
		return b.Metric(t, `credswap_client_sessions{backend="pg"}`) >= float64(len(idle)+16)
	})
	done := rotateAsync(t, a)
	var w *rotate.FleetWait
	proxytest.Eventually(t, 60*time.Second, "A's retire to wait for B's sessions", func() bool {
		w = waiting(t, a)
		return w != nil && w.Others >= len(idle)
	})
	names := fmt.Sprint(w.Holders)
	if w.User != userA || !strings.Contains(names, "127.0.0.1") || !strings.Contains(names, "pgbench") {
		t.Errorf("while waiting the status shows %+v, want %s's sessions from 127.0.0.1 incl. pgbench", w, userA)
	}
	time.Sleep(8 * time.Second) // the scenario: B learns 8 s late
	pub := published(t, a)
	b.WriteCredential(t, pub.Username, pub.Password)
	rec := <-done
	if rec.State != rotate.StateSucceeded {
		t.Fatalf("rotation: %+v", rec)
	}
	if d := retireDetail(rec); !strings.Contains(d, "no session was left") {
		t.Errorf("retire: %q", d)
	}
	checkPgbench(t, benchWait())
	for i, c := range idle {
		r := c.ExecParams(context.Background(), "SELECT session_user", nil, nil, nil, nil).Read()
		if r.Err != nil || string(r.Rows[0][0]) != pub.Username {
			t.Fatalf("B's idle session %d: %v %q", i, r.Err, r.Rows)
		}
	}
	if err := login(context.Background(), a.PG, published(t, a)); err != nil {
		t.Fatalf("the new credential is refused: %v", err)
	}
}

// TestFleetDeadlineLocksWithoutEnding: proxy B never learns the rotated
// credential (stopped, or its Secret never refreshed). At the fleet
// deadline A locks the old user but ends none of B's sessions; the record,
// the log and credswap_rotation_retired_user_sessions say how many were
// left and where. When B learns the credential later, its sessions move.
func TestFleetDeadlineLocksWithoutEnding(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	a, b, _, userA, idle, benchWait := fleetPair(t, 5*time.Second)
	rec := <-rotateAsync(t, a)
	if rec.State != rotate.StateSucceeded {
		t.Fatalf("rotation: %+v", rec)
	}
	d := retireDetail(rec)
	if !strings.Contains(d, "after the fleet deadline") || !strings.Contains(d, "127.0.0.1") {
		t.Errorf("retire: %q", d)
	}
	if rec.Waiting == nil || rec.Waiting.Others < len(idle) {
		t.Errorf("record's fleet wait: %+v", rec.Waiting)
	}
	if n := a.Metric(t, `credswap_rotation_retired_user_sessions{backend="pg"}`); n < float64(len(idle)) {
		t.Errorf("credswap_rotation_retired_user_sessions = %v, want at least %d", n, len(idle))
	}
	if !strings.Contains(a.Logs.String(), "fleet deadline passed") {
		t.Error("no log line about the fleet deadline")
	}
	// B's sessions still run on the locked user.
	for i, c := range idle {
		r := c.ExecParams(context.Background(), "SELECT session_user", nil, nil, nil, nil).Read()
		if r.Err != nil || string(r.Rows[0][0]) != userA {
			t.Fatalf("B's idle session %d after the lock: %v %q", i, r.Err, r.Rows)
		}
	}
	pub := published(t, a)
	b.WriteCredential(t, pub.Username, pub.Password)
	b.WaitSwitched(t, time.Minute)
	checkPgbench(t, benchWait())
	for i, c := range idle {
		r := c.ExecParams(context.Background(), "SELECT session_user", nil, nil, nil, nil).Read()
		if r.Err != nil || string(r.Rows[0][0]) != pub.Username {
			t.Fatalf("B's idle session %d after B learned the credential: %v %q", i, r.Err, r.Rows)
		}
	}
}
