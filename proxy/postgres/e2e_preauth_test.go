package postgres_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
)

// TestHandshakeFloodKeepsLoginsWorking: connections that never log in
// (some send nothing, some only a StartupMessage, from one address, from
// another, and from twenty more) do not take session slots, and valid
// logins from psql and pgx keep working while the flood reconnects as soon
// as it is closed. Before handshakes were counted apart, 40 of those
// connections took every session slot and psql got 53300.
func TestHandshakeFloodKeepsLoginsWorking(t *testing.T) {
	p, db, _ := setup(t, func(c *config.Config) {
		l := &c.Backends[0].Limits
		l.MaxClientConns = 40
		l.MaxHandshakes = 64
		l.MaxHandshakesPerSource = 16
	})
	addr := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	startup, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": p.ClientUser, "database": db}}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	var many []string
	for i := 1; i <= 10; i++ {
		many = append(many, fmt.Sprintf("127.0.1.%d", i))
	}
	silent := proxytest.StartFlood(t, addr, []string{"127.0.0.2"}, 100, nil)
	started := proxytest.StartFlood(t, addr, []string{"127.0.0.3"}, 100, startup)
	spread := proxytest.StartFlood(t, addr, many, 20, startup)
	proxytest.Eventually(t, 30*time.Second, "the flood to fill every handshake turn", func() bool {
		return p.Metric(t, `credswap_client_handshakes{backend="pg"}`) == 64
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var open []*pgconn.PgConn
	defer func() {
		for _, c := range open {
			c.Close(context.Background())
		}
	}()
	for i := range 20 {
		c, err := pgconn.Connect(ctx, p.ConnString(db))
		if err != nil {
			t.Fatalf("login %d during the flood: %v", i+1, err)
		}
		open = append(open, c) // each holds a session slot
		if i%10 == 0 {
			if out, err := psql(t, p, db, "", "-c", "SELECT 'through'"); err != nil || strings.TrimSpace(out) != "through" {
				t.Fatalf("psql login during the flood: %v\n%s", err, out)
			}
		}
	}
	for _, f := range []*proxytest.Flood{silent, started, spread} {
		f.Stop()
	}
	if n := p.Metric(t, `credswap_handshakes_evicted_total{backend="pg"}`); n == 0 {
		t.Error("no handshake was evicted: the flood never filled the turns")
	}
	// The CLI's session ends a moment after the CLI exits.
	proxytest.Eventually(t, 30*time.Second, "the 20 logins kept open to be the only sessions", func() bool {
		return p.Metric(t, `credswap_client_sessions{backend="pg"}`) == 20
	})
	t.Logf("flood: %d connections opened, %d closed by the proxy", silent.Dials.Load()+started.Dials.Load()+spread.Dials.Load(),
		silent.Closed.Load()+started.Closed.Load()+spread.Closed.Load())
}

// TestLoginThrottling: after five wrong passwords from one address, every
// further login from it waits before it is answered, and after ten for one
// user name, logins as that user wait from any address; one audit line
// says so, and a right password still logs in.
func TestLoginThrottling(t *testing.T) {
	p, db, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	guess := func(src, user string) error {
		cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s password=wrong-guess dbname=%s sslmode=disable",
			p.Host, p.Port, user, db))
		if err != nil {
			t.Fatal(err)
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		cfg.DialFunc = d.DialContext
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err == nil {
			c.Close(ctx)
		}
		return err
	}
	const sourceDelays = `credswap_login_delays_total{backend="pg",scope="source"}`
	const userDelays = `credswap_login_delays_total{backend="pg",scope="user"}`
	for i := range 5 {
		if err := guess("127.0.0.2", "nobody"); err == nil || !strings.Contains(err.Error(), "28P01") {
			t.Fatalf("guess %d: %v, want 28P01", i+1, err)
		}
	}
	if n := p.Metric(t, sourceDelays); n != 0 {
		t.Fatalf("%v delayed logins after five failures, want 0", n)
	}
	guess("127.0.0.2", "nobody")
	if n := p.Metric(t, sourceDelays); n != 1 {
		t.Fatalf("%v delayed logins after the sixth attempt, want 1", n)
	}
	// Guessing one user's password from many addresses.
	for i := range 11 {
		guess(fmt.Sprintf("127.0.2.%d", i+1), p.ClientUser)
	}
	if n := p.Metric(t, userDelays); n == 0 {
		t.Fatal("guesses of one user from ten addresses were never delayed")
	}
	// The application still logs in with its password (after the wait).
	c, err := pgconn.Connect(ctx, p.ConnString(db))
	if err != nil {
		t.Fatalf("valid login while the user is throttled: %v", err)
	}
	c.Close(ctx)
	logs := p.Logs.String()
	for _, want := range []string{`"scope":"source","client_address":"127.0.0.2"`, `"scope":"user","user":"` + p.ClientUser + `"`} {
		if n := strings.Count(logs, want); n != 1 {
			t.Errorf("%d log lines with %s, want 1\n%s", n, want, p.Logs.Tail(20))
		}
	}
}
