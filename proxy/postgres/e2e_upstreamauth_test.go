package postgres_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/app"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/rotate"
)

// TestUpstreamImpostor: a server on the upstream address that asks for the
// password in cleartext or as md5, or asks for nothing at all, gets no
// password from the proxy. A client's session login is broken off at once
// (not retried until connect_timeout) and the client gets the usual
// "could not connect"; the test login and a rotation's administrative
// login fail with ErrUpstreamAuthRefused; neither the backend, the admin
// nor the new password reaches the impostor, also inside TLS that does not
// verify the server. With upstream_auth any it gets the password: the
// check sees a leak.
func TestUpstreamImpostor(t *testing.T) {
	ca := testenv.TestCA(t)
	cert, err := ca.IssueTLS("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	tests := []struct {
		name  string
		kind  proxytest.ImpostorKind
		tls   bool
		auth  string // upstream_auth; "" is the default
		leaks bool
	}{
		{"cleartext", proxytest.PGCleartext, false, "", false},
		{"cleartext inside TLS require", proxytest.PGCleartext, true, "", false},
		{"md5", proxytest.PGMD5, false, "", false},
		{"trust", proxytest.PGTrust, false, "", false},
		{"cleartext with md5 allowed", proxytest.PGCleartext, false, "md5", false},
		{"cleartext with any", proxytest.PGCleartext, false, "any", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := proxytest.ImpostorOptions{Kind: tt.kind}
			if tt.tls {
				opts.TLS = serverTLS
			}
			imp := proxytest.StartImpostor(t, opts)
			password := "backend-" + proxytest.Random(12)
			p := proxytest.StartUpstream(t, "postgres", imp.Addr(), "orders_app", password, func(c *config.Config) {
				b := &c.Backends[0]
				if tt.tls {
					b.UpstreamTLS = config.UpstreamTLS{Mode: "require"}
				}
				if tt.auth != "" {
					b.UpstreamAuth = tt.auth
				}
				// A refusal that was retried would keep the client
				// waiting this long.
				b.Limits.ConnectTimeout = config.Duration(10 * time.Minute)
			})
			bc := p.Config.Backends[0]
			d, err := app.NewDialer(bc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cred := creds.Credential{Username: "orders_app", Password: password}

			if tt.leaks {
				d.Verify(ctx, cred)
				if !bytes.Contains(imp.Received(), []byte(password)) {
					t.Fatal("with upstream_auth any the impostor did not get the password: the check cannot see a leak")
				}
				return
			}

			// The test login (credential adoption, credswap check).
			err = d.Verify(ctx, cred)
			if bytes.Contains(imp.Received(), []byte(password)) {
				t.Fatal("the impostor received the backend password")
			}
			if !errors.Is(err, proxy.ErrUpstreamAuthRefused) || !errors.Is(err, proxy.ErrPermanent) {
				t.Fatalf("Verify: want ErrUpstreamAuthRefused and ErrPermanent, got %v", err)
			}

			// A client through the proxy.
			_, err = pgx.ConnectConfig(ctx, p.PgxConfig(t, "orders"))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "08001" || pgErr.Message != "could not connect to the database server" {
				t.Fatalf("client through the proxy: want 08001 could not connect to the database server, got %v", err)
			}

			// A rotation's administrative login.
			admin := creds.Credential{Username: "admin", Password: "admin-" + proxytest.Random(12)}
			next := "next-" + proxytest.Random(12)
			err = rotate.Postgres{Dialer: d}.SetPassword(ctx, admin, "orders_app", next, false)
			if !errors.Is(err, proxy.ErrUpstreamAuthRefused) {
				t.Fatalf("rotation SetPassword: want ErrUpstreamAuthRefused, got %v", err)
			}

			if imp.Asked() < 3 {
				t.Fatalf("the impostor asked %d times for a password, want at least 3 (session, test login, rotation)", imp.Asked())
			}
			got := imp.Received()
			for name, secret := range map[string]string{"backend": password, "admin": admin.Password, "new": next} {
				if bytes.Contains(got, []byte(secret)) {
					t.Errorf("the impostor received the %s password", name)
				}
			}
			if !bytes.Contains(got, []byte("orders_app")) {
				t.Error("the impostor's record lacks the user name: it did not see the logins")
			}
			logs := p.Logs.String()
			if !strings.Contains(logs, "broke off a backend login") || !strings.Contains(logs, `"audit":true`) {
				t.Errorf("no audit line about the broken-off login in the log:\n%s", p.Logs.Tail(20))
			}
			if strings.Contains(logs, password) {
				t.Error("the log contains the backend password")
			}
		})
	}
}

// TestUpstreamAuthSCRAM: the default upstream_auth, scram-sha-256, logs in
// to a real PostgreSQL whose users have SCRAM passwords.
func TestUpstreamAuthSCRAM(t *testing.T) {
	p, db, user := setup(t)
	if got := p.Config.Backends[0].UpstreamAuth; got != "scram-sha-256" {
		t.Fatalf("default upstream_auth = %q, want scram-sha-256", got)
	}
	var who string
	if err := p.Connect(t, db).QueryRow(context.Background(), "SELECT session_user").Scan(&who); err != nil || who != user {
		t.Fatalf("session_user = %q, %v; want %s", who, err, user)
	}
}

// TestUpstreamAuthMD5: against a real PostgreSQL that stores the backend
// user's password as md5, the default refuses the md5 request, saying how
// to fix it, and upstream_auth md5 logs in.
func TestUpstreamAuthMD5(t *testing.T) {
	pg := testenv.StartTestPostgres(t, testenv.PostgresOptions{
		ExtraConfig: []string{"password_encryption = 'md5'"},
		HostAuth:    "md5",
	})
	user, password := pg.CreateUser(t, "md5")
	db := pg.CreateDatabase(t)

	strict := proxytest.Start(t, pg, user, password)
	d, err := app.NewDialer(strict.Config.Backends[0])
	if err != nil {
		t.Fatal(err)
	}
	err = d.Verify(context.Background(), creds.Credential{Username: user, Password: password})
	if !errors.Is(err, proxy.ErrUpstreamAuthRefused) || !strings.Contains(err.Error(), "upstream_auth md5") {
		t.Fatalf("default upstream_auth against md5: want a refusal naming upstream_auth md5, got %v", err)
	}
	_, err = pgx.ConnectConfig(context.Background(), strict.PgxConfig(t, db))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08001" {
		t.Fatalf("client through the default proxy: want 08001, got %v", err)
	}

	p := proxytest.Start(t, pg, user, password, func(c *config.Config) { c.Backends[0].UpstreamAuth = "md5" })
	var who string
	if err := p.Connect(t, db).QueryRow(context.Background(), "SELECT session_user").Scan(&who); err != nil || who != user {
		t.Fatalf("with upstream_auth md5: session_user = %q, %v; want %s", who, err, user)
	}
}
