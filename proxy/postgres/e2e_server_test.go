package postgres_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

func TestMaxClientConns(t *testing.T) {
	p, db, _ := setup(t, func(c *config.Config) { c.Backends[0].Limits.MaxClientConns = 2 })
	ctx := context.Background()
	p.Connect(t, db)
	p.Connect(t, db)
	_, err := pgx.Connect(ctx, p.ConnString(db))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Fatalf("third client: want 53300, got %v", err)
	}
}

// TestPoolReuse: a client that leaves returns its backend connection to the
// pool after DISCARD ALL; the next client gets it without its state.
func TestPoolReuse(t *testing.T) {
	p, db, _ := setup(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, p.ConnString(db))
	if err != nil {
		t.Fatal(err)
	}
	var pid1 uint32
	c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid1)
	for _, q := range []string{"SET search_path = pg_catalog", "PREPARE x AS SELECT 1", "CREATE TEMP TABLE tmp (x int)"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	c.Close(ctx)
	var st struct {
		Backends []struct {
			BackendConnections struct{ Idle int } `json:"backend_connections"`
		}
	}
	proxytest.Eventually(t, 5*time.Second, "the backend connection to return to the pool", func() bool {
		p.AdminDo(t, "GET", "/v1/status", &st)
		return st.Backends[0].BackendConnections.Idle == 1
	})
	c2 := p.Connect(t, db)
	var pid2 uint32
	var path string
	var prepared, temps int
	c2.QueryRow(ctx, "SELECT pg_backend_pid(), current_setting('search_path'), (SELECT count(*) FROM pg_prepared_statements), (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())").Scan(&pid2, &path, &prepared, &temps)
	if pid2 != pid1 {
		t.Fatalf("new client got backend %d, want the pooled %d", pid2, pid1)
	}
	if path != `"$user", public` || prepared != 1 || temps != 0 { // pgx prepared this query itself
		t.Fatalf("state leaked through the pool: search_path %q, prepared %d, temp tables %d", path, prepared, temps)
	}
}

// TestProtocolNegotiation: a client asking for protocol 3.2 with a _pq_
// option gets NegotiateProtocolVersion (3.0, the option unrecognized) and
// can log in.
func TestProtocolNegotiation(t *testing.T) {
	p, db, _ := setup(t)
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(p.Host, itoa(p.Port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{
		"user": p.ClientUser, "database": db, "_pq_.test_option": "on",
	}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	npv, ok := msg.(*pgproto3.NegotiateProtocolVersion)
	if !ok || npv.NewestMinorProtocol != 0 || len(npv.UnrecognizedOptions) != 1 || npv.UnrecognizedOptions[0] != "_pq_.test_option" {
		t.Fatalf("want NegotiateProtocolVersion(0, [_pq_.test_option]), got %#v", msg)
	}
	msg, err = fe.Receive()
	if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok || err != nil {
		t.Fatalf("then the SASL request, got %#v %v", msg, err)
	}
	// pgconn itself falls back to 3.0 when offered NegotiateProtocolVersion.
	cfg, _ := pgconn.ParseConfig(p.ConnString(db))
	cfg.MaxProtocolVersion = "3.2"
	pc, err := pgconn.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgconn asking for 3.2: %v", err)
	}
	pc.Close(context.Background())
}

func TestHealthAndReadiness(t *testing.T) {
	p, _, _ := setup(t)
	get := func(base, path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(p.AdminURL, path); code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
	}
	// A database that cannot be reached at start: alive, not ready.
	dead, _ := testenv.FreePort()
	down := proxytest.Start(t, p.PG, "nobody", "x", func(c *config.Config) {
		c.Backends[0].Upstream = net.JoinHostPort("127.0.0.1", itoa(dead))
	})
	if code, _ := get(down.AdminURL, "/healthz"); code != 200 {
		t.Fatalf("healthz with the database down: %d", code)
	}
	code, body := get(down.AdminURL, "/readyz")
	if code != 503 || !strings.Contains(body, "not verified") {
		t.Fatalf("readyz with the database down: %d %s", code, body)
	}
}
