package postgres_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// withTLS gives the proxy a certificate for localhost from a test CA and
// adds an md5 user and a cleartext user.
func withTLS(t *testing.T, ca *testenv.CA, required bool) proxytest.Option {
	cert, key, err := ca.Issue(t.TempDir(), "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) {
		b := &c.Backends[0]
		b.ClientTLS = config.ClientTLS{CertFile: cert, KeyFile: key, Required: required}
		b.Clients = append(b.Clients,
			config.Client{User: "md5user", Password: "md5-secret", Auth: "md5"},
			config.Client{User: "clearuser", Password: "clear-secret", Auth: "password"},
		)
	}
}

func connect(ctx context.Context, dsn string, tlsCfg *tls.Config) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.Fallbacks = nil
	if tlsCfg != nil {
		cfg.TLSConfig = tlsCfg
	}
	return pgx.ConnectConfig(ctx, cfg)
}

func TestClientAuth(t *testing.T) {
	ca := testenv.TestCA(t)
	p, db, user := setup(t, withTLS(t, ca, false))
	base := "host=localhost port=" + itoa(p.Port) + " dbname=" + db
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	check := func(name, dsn string, tlsCfg *tls.Config) {
		t.Helper()
		c, err := connect(ctx, dsn, tlsCfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer c.Close(ctx)
		var got string
		if err := c.QueryRow(ctx, "SELECT current_user").Scan(&got); err != nil || got != user {
			t.Fatalf("%s: current_user %q, %v", name, got, err)
		}
	}
	tlsCfg := ca.ClientTLSConfig("localhost")
	check("scram plaintext", base+" user=app sslmode=disable password="+p.ClientPassword, nil)
	check("scram over TLS", base+" user=app sslmode=verify-full channel_binding=disable password="+p.ClientPassword, tlsCfg)
	check("scram-plus over TLS", base+" user=app sslmode=verify-full channel_binding=require password="+p.ClientPassword, tlsCfg)
	check("md5", base+" user=md5user sslmode=disable password=md5-secret", nil)
	check("cleartext over TLS", base+" user=clearuser sslmode=verify-full password=clear-secret", tlsCfg)

	// psql with channel binding required (libpq's SCRAM-SHA-256-PLUS).
	env := append(p.Env(db), "PGHOST=localhost", "PGSSLMODE=verify-full", "PGSSLROOTCERT="+ca.CertFile, "PGCHANNELBINDING=require")
	out, err := testenv.Command(ctx, p.PG.Bin("psql"), env, "-X", "-At", "-c", "SELECT 1").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("psql channel_binding=require: %v\n%s", err, out)
	}

	fails := []struct {
		name, dsn, code string
		// alt is another SQLSTATE a configured user could get as well.
		alt string
		tls *tls.Config
	}{
		{"wrong password", base + " user=app sslmode=disable password=nope", "28P01", "", nil},
		// An unknown user imitates a configured one chosen from its name
		// and a per-process secret: one in three times here clearuser,
		// whose cleartext method needs TLS.
		{"unknown user", base + " user=ghost sslmode=disable password=nope", "28P01", "28000", nil},
		{"md5 wrong password", base + " user=md5user sslmode=disable password=nope", "28P01", "", nil},
		{"cleartext without TLS", base + " user=clearuser sslmode=disable password=clear-secret", "28000", "", nil},
	}
	for _, f := range fails {
		_, err := connect(ctx, f.dsn, f.tls)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != f.code && (f.alt == "" || pgErr.Code != f.alt) {
			t.Errorf("%s: want SQLSTATE %s, got %v", f.name, f.code, err)
		}
	}
	if !strings.Contains(p.Logs.String(), "client_auth_failed") {
		t.Error("auth failures were not logged")
	}
}

func TestTLSRequired(t *testing.T) {
	ca := testenv.TestCA(t)
	p, db, _ := setup(t, withTLS(t, ca, true))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := connect(ctx, p.ConnString(db), nil) // sslmode=disable
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28000" || !strings.Contains(pgErr.Message, "requires TLS") {
		t.Fatalf("plaintext to a TLS-only listener: want 28000 'requires TLS', got %v", err)
	}
	c, err := connect(ctx, strings.Replace(p.ConnString(db), "sslmode=disable", "sslmode=verify-full", 1)+" host=localhost", ca.ClientTLSConfig("localhost"))
	if err != nil {
		t.Fatalf("TLS: %v", err)
	}
	c.Close(ctx)

	// Direct TLS (PostgreSQL 17's sslnegotiation=direct): ALPN postgresql.
	cfg := ca.ClientTLSConfig("localhost")
	cfg.NextProtos = []string{"postgresql"}
	pcfg, _ := pgconn.ParseConfig(strings.Replace(p.ConnString(db), "sslmode=disable", "sslmode=require", 1) + " sslnegotiation=direct")
	pcfg.TLSConfig = cfg
	pcfg.Fallbacks = nil
	pc, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		t.Fatalf("direct TLS: %v", err)
	}
	pc.Close(ctx)
}

func TestClientPasswordHashAndReload(t *testing.T) {
	pg := testenv.PG(t)
	// A SCRAM verifier produced by PostgreSQL itself.
	hashUser, hashPassword := pg.CreateUser(t, "hash")
	var verifier string
	c := pg.Connect(t, "postgres")
	if err := c.QueryRow(context.Background(), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", hashUser).Scan(&verifier); err != nil {
		t.Fatal(err)
	}
	p, db, _ := setup(t, func(c *config.Config) {
		c.Backends[0].Clients = append(c.Backends[0].Clients, config.Client{User: "hashed", PasswordHash: verifier, Auth: "scram-sha-256"})
	})
	ctx := context.Background()
	dsn := "host=127.0.0.1 port=" + itoa(p.Port) + " dbname=" + db + " sslmode=disable user=hashed password=" + hashPassword
	cc, err := connect(ctx, dsn, nil)
	if err != nil {
		t.Fatalf("login with a PostgreSQL SCRAM verifier: %v", err)
	}
	cc.Close(ctx)

	// Reload: change the local password file; new logins use the new one.
	if err := os.WriteFile(filepath.Join(p.Dir, "app-password"), []byte("rotated-local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(writeConfigCopy(t, p))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.App.Reload(ctx, cfg); err != nil {
		t.Logf("reload warnings: %v", err)
	}
	if _, err := connect(ctx, p.ConnString(db), nil); err == nil {
		t.Fatal("old local password still accepted after reload")
	}
	old := p.ClientPassword
	p.ClientPassword = "rotated-local"
	defer func() { p.ClientPassword = old }()
	cc, err = connect(ctx, p.ConnString(db), nil)
	if err != nil {
		t.Fatalf("new local password after reload: %v", err)
	}
	cc.Close(ctx)
}

// writeConfigCopy writes the proxy's configuration (same listeners) as YAML
// for config.Load.
func writeConfigCopy(t *testing.T, p *proxytest.Proxy) string {
	t.Helper()
	b := p.Config.Backends[0]
	yaml := "admin: {listen: \"127.0.0.1:0\"}\nbackends:\n  - name: pg\n    protocol: postgres\n" +
		"    listen: \"" + b.Listen + "\"\n    upstream: \"" + b.Upstream + "\"\n" +
		"    clients:\n      - {user: app, password_file: app-password}\n" +
		"    credential: {source: file, path: credential.json, refresh_interval: 1h}\n"
	path := filepath.Join(p.Dir, "reload.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func itoa(n int) string { return strconv.Itoa(n) }
