package testenv_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/internal/testenv"
)

func TestVaultStarts(t *testing.T) {
	t.Parallel()
	v := testenv.VaultServer(t)
	if again := testenv.VaultServer(t); again != v {
		t.Fatal("VaultServer returned a different server on the second call")
	}
	if !strings.HasPrefix(v.Addr, "http://127.0.0.1:") || v.Port == 0 || v.Token == "" {
		t.Fatalf("Addr %q, Port %d, Token empty %v", v.Addr, v.Port, v.Token == "")
	}
	if filepath.Base(v.Binary) != "vault" || !strings.Contains(v.Binary, "v1.4.0-") {
		t.Errorf("Binary = %q, want .../v1.4.0-KEY/vault", v.Binary)
	}
	if err := v.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
	var health struct {
		Version string `json:"version"`
		Sealed  bool   `json:"sealed"`
	}
	v.Do(t, http.MethodGet, "sys/health", nil, &health)
	if health.Version != "1.4.0" || health.Sealed {
		t.Errorf("health = %+v, want version 1.4.0, unsealed", health)
	}
	var self struct {
		Data struct {
			Policies []string `json:"policies"`
		} `json:"data"`
	}
	v.Do(t, http.MethodGet, "/v1/auth/token/lookup-self", nil, &self)
	if len(self.Data.Policies) != 1 || self.Data.Policies[0] != "root" {
		t.Errorf("root token policies = %v, want [root]", self.Data.Policies)
	}
	// A wrong token is refused with a *VaultError.
	err := v.Call(t.Context(), "not-a-token", http.MethodGet, "auth/token/lookup-self", nil, nil)
	if !testenv.IsVaultStatus(err, http.StatusForbidden) {
		t.Errorf("lookup-self with a wrong token: %v, want 403", err)
	}
}

func TestVaultBuildCached(t *testing.T) {
	t.Parallel()
	bin := testenv.VaultBinary(t)
	again, err := testenv.BuildVault(t.Context())
	if err != nil || again != bin {
		t.Fatalf("second BuildVault = %q, %v; want %q", again, err, bin)
	}
	// No temp files of a build are left next to the binary.
	entries, err := os.ReadDir(filepath.Dir(bin))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "vault" {
			t.Errorf("stray file %s in %s", e.Name(), filepath.Dir(bin))
		}
	}
}

func TestVaultKV2(t *testing.T) {
	t.Parallel()
	v := testenv.VaultServer(t)
	mount := v.UniqueMount(t, "kv")
	v.EnableKV2(t, mount)
	if got := v.KVPut(t, mount, "orders/db", map[string]any{"username": "a", "password": "p1"}); got != 1 {
		t.Errorf("first version = %d, want 1", got)
	}
	if got := v.KVPut(t, mount, "orders/db", map[string]any{"username": "a", "password": "p2"}); got != 2 {
		t.Errorf("second version = %d, want 2", got)
	}
	data, version := v.KVGet(t, mount, "orders/db")
	if version != 2 || data["username"] != "a" || data["password"] != "p2" {
		t.Errorf("KVGet = %v, version %d; want password p2, version 2", data, version)
	}
	// Older versions stay readable, as credswap's consumers of KV v2 expect.
	var old struct {
		Data struct {
			Data map[string]any `json:"data"`
		} `json:"data"`
	}
	v.Do(t, http.MethodGet, mount+"/data/orders/db?version=1", nil, &old)
	if old.Data.Data["password"] != "p1" {
		t.Errorf("version 1 = %v, want password p1", old.Data.Data)
	}
	// The dev server's own KV v2 mount works too.
	path := v.UniqueMount(t, "path")
	if got := v.KVPut(t, "secret", path, map[string]any{"k": "v"}); got != 1 {
		t.Errorf("secret/%s version = %d, want 1", path, got)
	}
	v.Do(t, http.MethodDelete, "secret/metadata/"+path, nil, nil)

	err := v.Call(t.Context(), v.Token, http.MethodGet, mount+"/data/missing", nil, nil)
	if !testenv.IsVaultStatus(err, http.StatusNotFound) {
		t.Errorf("missing secret: %v, want 404", err)
	}
}

// connectAs logs in to db over TCP with scram-sha-256 and returns the connection, closed at cleanup.
func connectAs(t *testing.T, pg *testenv.Postgres, user, password, db string) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := pg.ConnConfig(user, password, db)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err == nil {
		t.Cleanup(func() { conn.Close(context.Background()) })
	}
	return conn, err
}

func wantAuthFailure(t *testing.T, err error, what string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Errorf("%s: err = %v, want SQLSTATE 28P01", what, err)
	}
}

func TestVaultDynamicPostgresCreds(t *testing.T) {
	t.Parallel()
	pg := testenv.PG(t)
	v := testenv.VaultServer(t)
	db := pg.CreateDatabase(t)
	pg.ExecIn(t, db, "CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2)")
	mount := v.UniqueMount(t, "database")
	v.EnableDatabase(t, mount)
	v.ConfigurePostgres(t, mount, "pg", pg, "app")
	v.CreateDynamicRole(t, mount, "app", "pg", time.Hour, 2*time.Hour)

	creds := v.DynamicCreds(t, mount, "app")
	if creds.LeaseDuration != time.Hour || !strings.HasPrefix(creds.LeaseID, mount+"/creds/app/") {
		t.Errorf("lease %q for %v, want %s/creds/app/... for 1h", creds.LeaseID, creds.LeaseDuration, mount)
	}
	conn, err := connectAs(t, pg, creds.Username, creds.Password, db)
	if err != nil {
		t.Fatalf("login with dynamic credentials: %v", err)
	}
	if got := queryString(t, conn, "SELECT current_user || ':' || count(*) FROM items"); got != creds.Username+":2" {
		t.Errorf("session: %q, want %s:2 (pg_read_all_data)", got, creds.Username)
	}
	if _, err := conn.Exec(t.Context(), "INSERT INTO items VALUES (3)"); err != nil {
		t.Errorf("insert (pg_write_all_data): %v", err)
	}
	super := pg.Connect(t, "postgres")
	if got := queryString(t, super, "SELECT (rolvaliduntil IS NOT NULL AND rolcanlogin)::text FROM pg_roles WHERE rolname = $1", creds.Username); got != "true" {
		t.Errorf("role: valid until set and can login = %s, want true", got)
	}

	// A second credential is a different user; the role is not limited to one.
	other := v.DynamicCreds(t, mount, "app")
	if other.Username == creds.Username {
		t.Error("two credentials share a username")
	}

	v.RevokeLease(t, creds.LeaseID)
	if got := queryString(t, super, "SELECT count(*)::text FROM pg_roles WHERE rolname = $1", creds.Username); got != "0" {
		t.Errorf("role %s still exists after revoke", creds.Username)
	}
	_, err = connectAs(t, pg, creds.Username, creds.Password, db)
	wantAuthFailure(t, err, "login after revoke")
	// The revocation ended the open session.
	if _, err := conn.Exec(t.Context(), "SELECT 1"); err == nil {
		t.Error("session of a revoked user still works")
	}
	// The other lease is untouched.
	if _, err := connectAs(t, pg, other.Username, other.Password, db); err != nil {
		t.Errorf("login with the other credential after revoking the first: %v", err)
	}
}

func TestVaultStaticRoleRotation(t *testing.T) {
	t.Parallel()
	pg := testenv.PG(t)
	v := testenv.VaultServer(t)
	user, initial := pg.CreateUser(t, "static")
	mount := v.UniqueMount(t, "database")
	v.EnableDatabase(t, mount)
	v.ConfigurePostgres(t, mount, "pg", pg)
	v.CreateStaticRole(t, mount, "orders", "pg", user, time.Hour)

	first := v.StaticCreds(t, mount, "orders")
	if first.Username != user || first.Password == "" || first.Password == initial || first.LastRotation.IsZero() {
		t.Fatalf("static creds = %s, new password %v, last rotation %v", first.Username, first.Password != initial, first.LastRotation)
	}
	if _, err := connectAs(t, pg, user, first.Password, "postgres"); err != nil {
		t.Fatalf("login with the static credential: %v", err)
	}
	_, err := connectAs(t, pg, user, initial, "postgres")
	wantAuthFailure(t, err, "login with the password from before the static role")

	v.Do(t, http.MethodPost, mount+"/rotate-role/orders", nil, nil)
	second := v.StaticCreds(t, mount, "orders")
	if second.Password == first.Password || !second.LastRotation.After(first.LastRotation) {
		t.Fatalf("rotate-role: password changed %v, last rotation %v -> %v",
			second.Password != first.Password, first.LastRotation, second.LastRotation)
	}
	if _, err := connectAs(t, pg, user, second.Password, "postgres"); err != nil {
		t.Fatalf("login after rotation: %v", err)
	}
	_, err = connectAs(t, pg, user, first.Password, "postgres")
	wantAuthFailure(t, err, "login with the rotated-out password")
}

func TestVaultAppRoleAndTokens(t *testing.T) {
	t.Parallel()
	v := testenv.VaultServer(t)
	roleID, secretID := v.EnableAppRole(t)
	var login struct {
		Auth struct {
			ClientToken string   `json:"client_token"`
			Policies    []string `json:"policies"`
		} `json:"auth"`
	}
	if err := v.Call(t.Context(), "", http.MethodPost, "auth/approle/login",
		map[string]string{"role_id": roleID, "secret_id": secretID}, &login); err != nil {
		t.Fatal(err)
	}
	token := login.Auth.ClientToken
	if token == "" || !strings.Contains(strings.Join(login.Auth.Policies, ","), testenv.VaultTestPolicy) {
		t.Fatalf("approle login: token empty %v, policies %v", token == "", login.Auth.Policies)
	}
	path := v.UniqueMount(t, "approle")
	if err := v.Call(t.Context(), token, http.MethodPost, "secret/data/"+path, map[string]any{"data": map[string]string{"a": "b"}}, nil); err != nil {
		t.Errorf("write with the approle token: %v", err)
	}
	if err := v.Call(t.Context(), token, http.MethodDelete, "secret/metadata/"+path, nil, nil); err != nil {
		t.Errorf("delete with the approle token: %v", err)
	}
	err := v.Call(t.Context(), "", http.MethodPost, "auth/approle/login",
		map[string]string{"role_id": roleID, "secret_id": "wrong"}, nil)
	if !testenv.IsVaultStatus(err, http.StatusBadRequest, http.StatusForbidden) {
		t.Errorf("login with a wrong secret_id: %v, want 400 or 403", err)
	}
	// A second role on the same server has its own ids.
	if roleID2, _ := v.EnableAppRole(t); roleID2 == roleID {
		t.Error("two EnableAppRole calls returned the same role_id")
	}

	var self struct {
		Data struct {
			TTL       int  `json:"ttl"`
			Renewable bool `json:"renewable"`
		} `json:"data"`
	}
	renewable := v.CreateToken(t, time.Hour, true)
	if err := v.Call(t.Context(), renewable, http.MethodGet, "auth/token/lookup-self", nil, &self); err != nil {
		t.Fatal(err)
	}
	if !self.Data.Renewable || self.Data.TTL <= 3500 || self.Data.TTL > 3600 {
		t.Errorf("renewable token: %+v, want renewable with a TTL of about 3600 s", self.Data)
	}
	if err := v.Call(t.Context(), renewable, http.MethodPost, "auth/token/renew-self", map[string]string{"increment": "2h"}, nil); err != nil {
		t.Errorf("renew-self: %v", err)
	}
	fixed := v.CreateToken(t, 30*time.Second, false)
	err = v.Call(t.Context(), fixed, http.MethodPost, "auth/token/renew-self", nil, nil)
	if !testenv.IsVaultStatus(err, http.StatusBadRequest) {
		t.Errorf("renew-self of a non-renewable token: %v, want 400", err)
	}
}

func TestVaultPauseResume(t *testing.T) {
	t.Parallel()
	v := testenv.StartTestVault(t)
	if shared := testenv.VaultServer(t); shared.Port == v.Port || shared.Token == v.Token {
		t.Fatal("private server shares its port or token with the shared one")
	}
	version := v.KVPut(t, "secret", "kept", map[string]any{"n": "1"})

	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	err := v.Health(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("health of a paused server: %v, want a timeout", err)
	}
	if err := v.Resume(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := v.Health(ctx); err != nil {
		t.Fatalf("health after Resume: %v", err)
	}
	if _, got := v.KVGet(t, "secret", "kept"); got != version {
		t.Errorf("secret version after Resume = %d, want %d (state kept)", got, version)
	}

	// Stop works on a paused server, is idempotent and removes the dir.
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := v.Stop(); err != nil {
		t.Fatalf("Stop of a paused server: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop of a paused server took %v", d)
	}
	if err := v.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := os.Stat(v.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir after Stop: %v, want it gone", err)
	}
	if err := v.Health(t.Context()); err == nil {
		t.Error("server still answers after Stop")
	}
	if err := v.Resume(); err == nil {
		t.Error("Resume after Stop succeeded")
	}
}

// Not parallel: it sets VAULT_* variables in the process environment, which the server must not see.
func TestVaultCleanEnvironment(t *testing.T) {
	t.Setenv("VAULT_API_ADDR", "http://leaked.invalid:1")
	t.Setenv("VAULT_DEV_ROOT_TOKEN_ID", "leaked")
	t.Setenv("VAULT_TOKEN", "leaked")
	v := testenv.StartTestVault(t)
	if v.Token == "leaked" {
		t.Error("root token taken from the environment")
	}
	// The server prints its API address at start; VAULT_API_ADDR would have replaced it.
	log, err := os.ReadFile(v.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "Api Address: "+v.Addr+"\n") || strings.Contains(string(log), "leaked") {
		t.Errorf("the server saw VAULT_* variables; its log starts:\n%s", log[:min(len(log), 1500)])
	}
	if _, err := os.Stat(filepath.Join(v.Dir, "home", ".vault-token")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token helper file: %v, want none (-dev-no-store-token)", err)
	}
}

func TestVaultMariaDBDynamicCredentials(t *testing.T) {
	v := testenv.VaultServer(t)
	m := testenv.MariaDBServer(t)
	db := m.CreateDatabase(t)
	mount := v.UniqueMount(t, "mdb")
	v.EnableDatabase(t, mount)
	v.ConfigureMariaDB(t, mount, "maria", m, "app")
	v.CreateMariaDBDynamicRole(t, mount, "app", "maria", db, time.Minute, 2*time.Minute)
	c := v.DynamicCreds(t, mount, "app")
	if c.Username == "" || c.Password == "" || c.LeaseID == "" {
		t.Fatalf("credential: %+v", c.Username)
	}
	out, err := m.Command(context.Background(), "-h", "127.0.0.1", "-P", strconv.Itoa(m.Port), "-u", c.Username, "-p"+c.Password, "-N", "-e", "SELECT CURRENT_USER()", db).CombinedOutput()
	if err != nil || !strings.Contains(string(out), c.Username) {
		t.Fatalf("login with the dynamic MariaDB user: %v\n%s", err, out)
	}
	v.RevokeLease(t, c.LeaseID)
	if out, err := m.Command(context.Background(), "-h", "127.0.0.1", "-P", strconv.Itoa(m.Port), "-u", c.Username, "-p"+c.Password, "-e", "SELECT 1").CombinedOutput(); err == nil {
		t.Fatalf("the revoked user still logs in: %s", out)
	}
}
