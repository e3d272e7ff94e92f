package mysql_test

import (
	"context"
	"database/sql"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
)

// TestAuthFailureCount: credswap_client_auth_failures_total counts wrong
// passwords only. A client that leaves in the middle of the handshake
// counts as client_disconnected, one that stops answering as
// handshake_timeout, and a connection closed before it sent anything (a
// port probe) not at all.
func TestAuthFailureCount(t *testing.T) {
	p, db, _ := setup(t, nativeAuth, func(c *config.Config) {
		c.Backends[0].Limits.HandshakeTimeout = config.Duration(500 * time.Millisecond)
	})
	const authFailures = `credswap_client_auth_failures_total{backend="my"}`
	clientErr := func(code string) string {
		return `credswap_client_errors_total{backend="my",code="` + code + `"}`
	}
	others := []string{authFailures, clientErr("protocol_violation"), clientErr("client_auth_failed")}
	// expect waits until the proxy counted the event as code (the n-th
	// time) or as anything else in others, and fails in the latter case.
	expect := func(code string, n float64) {
		t.Helper()
		counted := func() string {
			for _, s := range others {
				if p.Metric(t, s) > 0 {
					return s
				}
			}
			return ""
		}
		proxytest.Eventually(t, 10*time.Second, "the proxy to count the event", func() bool {
			return counted() != "" || p.Metric(t, clientErr(code)) == n
		})
		if s := counted(); s != "" {
			t.Fatalf("counted in %s = %v, want only %s", s, p.Metric(t, s), code)
		}
	}
	// greeted connects and reads the server's greeting.
	greeted := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", net.JoinHostPort(p.Host, strconv.Itoa(p.Port)))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, int(hdr[0])|int(hdr[1])<<8|int(hdr[2])<<16)); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// A port probe: connected, read the greeting, left.
	greeted().Close()
	proxytest.Eventually(t, 10*time.Second, "the probe to be handled", func() bool {
		return strings.Count(p.Logs.String(), `"msg":"client left during the handshake"`) == 1
	})
	for _, s := range append(others, clientErr("client_disconnected")) {
		if v := p.Metric(t, s); v != 0 {
			t.Fatalf("a port probe counted in %s = %v", s, v)
		}
	}

	// Left in the middle of its handshake response.
	c := greeted()
	c.Write([]byte{100, 0, 0, 1, 0x8d, 0xa6, 0xff, 0x01, 0, 0, 0, 1})
	c.Close()
	expect("client_disconnected", 1)

	// Silent until the handshake timeout: the proxy says why and closes.
	c = greeted()
	b, _ := io.ReadAll(c)
	c.Close()
	if len(b) < 5 || b[4] != 0xff || !strings.Contains(string(b), "timed out") {
		t.Fatalf("answer to a silent client: %q", b)
	}
	expect("handshake_timeout", 1)

	// A wrong password is an authentication failure.
	sdb, err := sql.Open("mysql", strings.Replace(p.DSN(db, ""), ":"+p.ClientPassword+"@", ":wrong-"+proxytest.Random(4)+"@", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	if err := sdb.PingContext(context.Background()); err == nil || !strings.Contains(err.Error(), "1045") {
		t.Fatalf("a wrong password: %v", err)
	}
	proxytest.Eventually(t, 10*time.Second, "the authentication failure to be counted", func() bool {
		return p.Metric(t, authFailures) == 1 && p.Metric(t, clientErr("client_auth_failed")) == 1
	})
	if v := p.Metric(t, clientErr("client_disconnected")); v != 1 {
		t.Fatalf("client_disconnected = %v after a wrong password, want 1", v)
	}
}
