package mysql_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gosql "github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/app"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/rotate"
)

// TestUpstreamImpostor: a server on the upstream address that switches
// the login to mysql_clear_password, or asks for caching_sha2_password full
// authentication or sha256_password and hands out its own RSA key, gets no
// password from the proxy, also inside TLS that does not verify the
// server and when another key is pinned. A client's session login is
// broken off at once (not retried until connect_timeout) and the client
// gets the usual "Can't connect"; the test login, a KILL's login
// (go-mysql) and a rotation's administrative login (go-sql-driver) fail
// with ErrUpstreamAuthRefused; the impostor, which decrypts what is
// encrypted to its key, never sees the backend, admin or new password.
// With upstream_auth any it gets the password: the check sees a leak.
func TestUpstreamImpostor(t *testing.T) {
	ca := testenv.TestCA(t)
	cert, err := ca.IssueTLS("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	otherKey := writeKey(t, newKey(t))
	tests := []struct {
		name  string
		kind  proxytest.ImpostorKind
		tls   bool
		auth  string // upstream_auth; "" is the default
		pin   string // upstream_rsa_public_key_file
		leaks bool
	}{
		{"clear_password switch", proxytest.MySQLClearSwitch, false, "", "", false},
		{"clear_password switch inside TLS require", proxytest.MySQLClearSwitch, true, "", "", false},
		{"full authentication with its own key", proxytest.MySQLFullAuth, false, "", "", false},
		{"full authentication inside TLS require", proxytest.MySQLFullAuth, true, "", "", false},
		{"full authentication with another key pinned", proxytest.MySQLFullAuth, false, "", otherKey, false},
		{"sha256_password with its own key", proxytest.MySQLSHA256, false, "", "", false},
		{"sha256_password with another key pinned", proxytest.MySQLSHA256, false, "", otherKey, false},
		{"clear_password switch with any", proxytest.MySQLClearSwitch, false, "any", "", true},
		{"full authentication with any", proxytest.MySQLFullAuth, false, "any", "", true},
		{"full authentication inside TLS require with any", proxytest.MySQLFullAuth, true, "any", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := proxytest.ImpostorOptions{Kind: tt.kind}
			if tt.tls {
				opts.TLS = serverTLS
			}
			imp := proxytest.StartImpostor(t, opts)
			password := "backend-" + proxytest.Random(12)
			p := proxytest.StartUpstream(t, "mysql", imp.Addr(), "orders_app", password, func(c *config.Config) {
				b := &c.Backends[0]
				if tt.tls {
					b.UpstreamTLS = config.UpstreamTLS{Mode: "require"}
				}
				if tt.auth != "" {
					b.UpstreamAuth = tt.auth
				}
				b.UpstreamRSAPublicKeyFile = tt.pin
				// A refusal that was retried would keep the client
				// waiting this long.
				b.Limits.ConnectTimeout = config.Duration(10 * time.Minute)
			})
			d, err := app.NewMySQLDialer(p.Config.Backends[0])
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
			db, err := sql.Open("mysql", p.DSN("orders", ""))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			err = db.PingContext(ctx)
			var myErr *gosql.MySQLError
			if !errors.As(err, &myErr) || myErr.Number != 1053 || !strings.HasPrefix(myErr.Message, "Can't connect to the database server through the proxy") {
				t.Fatalf("client through the proxy: want 1053 Can't connect to the database server through the proxy, got %v", err)
			}

			// A KILL's login and a rotation's.
			if c, err := d.Connect(ctx, cred); !errors.Is(err, proxy.ErrUpstreamAuthRefused) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("Connect (KILL): want ErrUpstreamAuthRefused, got %v", err)
			}
			admin := creds.Credential{Username: "admin", Password: "admin-" + proxytest.Random(12)}
			next := "next-" + proxytest.Random(12)
			rot := rotate.MySQL{Addr: imp.Addr(), Login: d.LoginGuard(), Timeout: 10 * time.Second}
			if err := rot.SetPassword(ctx, admin, "orders_app", next, false); !errors.Is(err, proxy.ErrUpstreamAuthRefused) {
				t.Fatalf("rotation SetPassword: want ErrUpstreamAuthRefused, got %v", err)
			}

			if imp.Asked() < 4 {
				t.Fatalf("the impostor asked %d times for a password, want at least 4 (session, test login, KILL, rotation)", imp.Asked())
			}
			got := imp.Received()
			for name, secret := range map[string]string{"backend": password, "admin": admin.Password, "new": next} {
				if bytes.Contains(got, []byte(secret)) {
					t.Errorf("the impostor received the %s password", name)
				}
			}
			if !bytes.Contains(got, []byte("orders_app")) || !bytes.Contains(got, []byte("admin")) {
				t.Error("the impostor's record lacks the user names: it did not see the logins")
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

// TestUpstreamPinnedKey: with the server's key in
// upstream_rsa_public_key_file, caching_sha2_password full authentication
// and sha256_password log in, the password encrypted to that key (the
// server here holds the key's private half and checks the password).
func TestUpstreamPinnedKey(t *testing.T) {
	for _, kind := range []proxytest.ImpostorKind{proxytest.MySQLFullAuth, proxytest.MySQLSHA256} {
		password := "backend-" + proxytest.Random(12)
		srv := proxytest.StartImpostor(t, proxytest.ImpostorOptions{Kind: kind, Accept: password})
		bc := config.Backend{Name: "my", Protocol: "mysql", Upstream: srv.Addr(), UpstreamAuth: "scramble",
			UpstreamRSAPublicKeyFile: filepath.Join(t.TempDir(), "db.pem")}
		if err := os.WriteFile(bc.UpstreamRSAPublicKeyFile, srv.PublicKeyPEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		bc.Limits.ConnectTimeout = config.Duration(10 * time.Second)
		d, err := app.NewMySQLDialer(bc)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Verify(context.Background(), creds.Credential{Username: "orders_app", Password: password}); err != nil {
			t.Fatalf("kind %d: login with the pinned key: %v", kind, err)
		}
	}
}

// TestUpstreamAuthScramble: the default upstream_auth, scramble, logs in to
// a real MariaDB (mysql_native_password).
func TestUpstreamAuthScramble(t *testing.T) {
	p, db, user := setup(t)
	if got := p.Config.Backends[0].UpstreamAuth; got != "scramble" {
		t.Fatalf("default upstream_auth = %q, want scramble", got)
	}
	c := conn(t, p, db, "")
	if got := queryString(t, c, "SELECT CURRENT_USER()"); !strings.HasPrefix(got, user+"@") {
		t.Fatalf("CURRENT_USER() = %q, want %s@...", got, user)
	}
}

func newKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeKey writes k's public key as PEM to a temporary file.
func writeKey(t *testing.T, k *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "db.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}
