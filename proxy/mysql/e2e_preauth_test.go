package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
)

// TestHandshakeFloodKeepsLoginsWorking: connections that never log in
// (some read the greeting and send nothing, some send half a handshake
// response, from one address, another and ten more) do not take session
// slots, and go-sql-driver and the mariadb CLI keep logging in while the
// flood reconnects. Before handshakes were counted apart, 40 of those
// connections took every slot and a valid login got 1040.
func TestHandshakeFloodKeepsLoginsWorking(t *testing.T) {
	p, db, _ := setup(t, func(c *config.Config) {
		l := &c.Backends[0].Limits
		l.MaxClientConns = 40
		l.MaxHandshakes = 64
		l.MaxHandshakesPerSource = 16
	})
	addr := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	// A packet header announcing 200 bytes, and 10 of them.
	partial := append([]byte{200, 0, 0, 1}, make([]byte, 10)...)
	var many []string
	for i := 1; i <= 10; i++ {
		many = append(many, fmt.Sprintf("127.0.1.%d", i))
	}
	floods := []*proxytest.Flood{
		proxytest.StartFlood(t, addr, []string{"127.0.0.2"}, 100, nil),
		proxytest.StartFlood(t, addr, []string{"127.0.0.3"}, 100, partial),
		proxytest.StartFlood(t, addr, many, 20, partial),
	}
	proxytest.Eventually(t, 30*time.Second, "the flood to fill every handshake turn", func() bool {
		return p.Metric(t, `credswap_client_handshakes{backend="my"}`) == 64
	})

	var open []*sql.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	sdb, err := sql.Open("mysql", p.DSN(db, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 20 {
		c, err := sdb.Conn(ctx)
		if err == nil {
			err = c.PingContext(ctx)
		}
		if err != nil {
			t.Fatalf("login %d during the flood: %v", i+1, err)
		}
		open = append(open, c) // each holds a session slot
		if i%10 == 0 {
			if out, err := cli(t, p, db, "", "-e", "SELECT 'through'"); err != nil || strings.TrimSpace(out) != "through" {
				t.Fatalf("mariadb CLI login during the flood: %v\n%s", err, out)
			}
		}
	}
	for _, f := range floods {
		f.Stop()
	}
	if n := p.Metric(t, `credswap_handshakes_evicted_total{backend="my"}`); n == 0 {
		t.Error("no handshake was evicted: the flood never filled the turns")
	}
	// The CLI's session ends a moment after the CLI exits.
	proxytest.Eventually(t, 30*time.Second, "the 20 logins kept open to be the only sessions", func() bool {
		return p.Metric(t, `credswap_client_sessions{backend="my"}`) == 20
	})
}

// TestLoginThrottling: after five wrong passwords from one address every
// further login from it waits before it is answered (once logged), and
// the right password still logs in.
func TestLoginThrottling(t *testing.T) {
	p, db, _ := setup(t)
	const delays = `credswap_login_delays_total{backend="my",scope="source"}`
	for i := range 6 {
		if _, err := pingAs(dsnAs(p, "nobody", "wrong-guess", db, "")); err == nil || !strings.Contains(err.Error(), "1045") {
			t.Fatalf("guess %d: %v, want 1045", i+1, err)
		}
		if want := float64(max(i-4, 0)); p.Metric(t, delays) != want {
			t.Fatalf("after attempt %d: %v delayed logins, want %v", i+1, p.Metric(t, delays), want)
		}
	}
	if _, err := pingAs(p.DSN(db, "")); err != nil {
		t.Fatalf("valid login while its address is throttled: %v", err)
	}
	if n := strings.Count(p.Logs.String(), "login throttling engaged"); n != 1 {
		t.Errorf("%d lines saying throttling engaged, want 1", n)
	}
}
