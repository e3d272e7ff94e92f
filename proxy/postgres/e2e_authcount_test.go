package postgres_test

import (
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
)

// TestAuthFailureCount: credswap_client_auth_failures_total counts wrong
// passwords only. A client that leaves in the middle of the exchange (psql
// does, to prompt for a password) counts as client_disconnected, one that
// stops answering as handshake_timeout.
func TestAuthFailureCount(t *testing.T) {
	p, db, _ := setup(t, func(c *config.Config) {
		c.Backends[0].Limits.HandshakeTimeout = config.Duration(500 * time.Millisecond)
	})
	const authFailures = `credswap_client_auth_failures_total{backend="pg"}`
	clientErr := func(code string) string {
		return `credswap_client_errors_total{backend="pg",code="` + code + `"}`
	}
	waitFor := func(series string, want float64) {
		t.Helper()
		proxytest.Eventually(t, 10*time.Second, series+" to reach "+strconv.FormatFloat(want, 'f', -1, 64), func() bool {
			return p.Metric(t, series) == want
		})
	}
	// notAuthFailure waits until the proxy counted the event as code (the
	// n-th time) or as an authentication failure, and fails in the latter
	// case.
	notAuthFailure := func(code string, n float64) {
		t.Helper()
		var got float64
		proxytest.Eventually(t, 10*time.Second, "the proxy to count the event", func() bool {
			got = p.Metric(t, authFailures)
			return got > 0 || p.Metric(t, clientErr(code)) == n
		})
		if got > 0 {
			t.Fatalf("counted as an authentication failure (%s = %v), want %s", authFailures, got, code)
		}
	}
	// startAuth sends a StartupMessage and reads the SASL request: the
	// client is in the middle of logging in.
	startAuth := func() (net.Conn, *pgproto3.Frontend) {
		t.Helper()
		c, err := net.Dial("tcp", net.JoinHostPort(p.Host, strconv.Itoa(p.Port)))
		if err != nil {
			t.Fatal(err)
		}
		fe := pgproto3.NewFrontend(c, c)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters: map[string]string{"user": p.ClientUser, "database": db}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		msg, err := fe.Receive()
		if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok || err != nil {
			t.Fatalf("want the SASL request, got %T %v", msg, err)
		}
		return c, fe
	}

	// Gone after the SASL request, as psql without a password.
	c, _ := startAuth()
	c.Close()
	notAuthFailure("client_disconnected", 1)
	// Gone after the client-first message.
	c, fe := startAuth()
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=rOprNGfwEbeRWgbNEkqO")})
	fe.Flush()
	if msg, err := fe.Receive(); err != nil {
		t.Fatalf("want the server-first message, got %T %v", msg, err)
	}
	c.Close()
	notAuthFailure("client_disconnected", 2)
	// Silent until the handshake timeout: the proxy says why and closes.
	c, fe = startAuth()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg, err := fe.Receive()
	if e, ok := msg.(*pgproto3.ErrorResponse); !ok || err != nil || e.Code != "08006" {
		t.Fatalf("answer to a silent client: %#v %v", msg, err)
	}
	io.Copy(io.Discard, c) // until the proxy closes
	c.Close()
	notAuthFailure("handshake_timeout", 1)

	// A wrong password is an authentication failure.
	cfg := p.PgxConfig(t, db)
	cfg.Password = "wrong-" + proxytest.Random(4)
	if conn, err := pgx.ConnectConfig(context.Background(), cfg); err == nil {
		conn.Close(context.Background())
		t.Fatal("a wrong password logged in")
	}
	waitFor(authFailures, 1)
	waitFor(clientErr("client_auth_failed"), 1)
	if got := p.Metric(t, clientErr("client_disconnected")); got != 2 {
		t.Fatalf("client_disconnected = %v after a wrong password, want 2", got)
	}
}
