package postgres_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// withVault points the proxy's credential at Vault (the other fields of
// the option are set by the test).
func withVault(v *testenv.Vault, auth config.VaultAuth, cred config.Credential) proxytest.Option {
	return func(c *config.Config) {
		c.Vault = config.Vault{Address: v.Addr, Timeout: config.Duration(5 * time.Second), Auth: auth}
		if cred.RefreshInterval == 0 {
			cred.RefreshInterval = config.Duration(500 * time.Millisecond)
		}
		c.Backends[0].Credential = cred
	}
}

func rootAuth(v *testenv.Vault) config.VaultAuth {
	return config.VaultAuth{Method: "token", Token: v.Token}
}

func TestVaultKVv2(t *testing.T) {
	pg := testenv.PG(t)
	v := testenv.VaultServer(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	mount := v.UniqueMount(t, "kv")
	v.EnableKV2(t, mount)
	v.KVPut(t, mount, "orders/db", map[string]any{"username": userA, "password": passA})
	p := proxytest.Start(t, pg, "unused", "unused", withVault(v, rootAuth(v), config.Credential{
		Source: "vault-kv", Mount: mount, Path: "orders/db", KVVersion: 2, UsernameKey: "username", PasswordKey: "password",
	}))
	ctx := context.Background()
	c := p.Connect(t, db)
	var who string
	if c.QueryRow(ctx, "SELECT session_user").Scan(&who); who != userA {
		t.Fatalf("before: %s", who)
	}
	if _, err := c.Exec(ctx, "SET application_name = 'kv-test'"); err != nil {
		t.Fatal(err)
	}
	v.KVPut(t, mount, "orders/db", map[string]any{"username": userB, "password": passB})
	proxytest.Eventually(t, 5*time.Second, "version 2 to be adopted and the session to move", func() bool {
		return p.Backend().Store.Current().Cred.Username == userB && len(p.Backend().Sessions.Behind(2)) == 0
	})
	var app string
	c.QueryRow(ctx, "SELECT session_user, current_setting('application_name')").Scan(&who, &app)
	if who != userB || app != "kv-test" {
		t.Fatalf("after the new KV version: %s %s", who, app)
	}
	if st := p.Status(t).Backends[0].Credential.Current; st.Version != "v2" || st.Source != "vault-kv" {
		t.Fatalf("status: %+v", st)
	}
}

// TestVaultDynamicUnderLoad runs pgbench through the proxy on dynamic
// users that live 10 s (30 s at most); the proxy replaces each before it
// expires and revokes it once drained.
func TestVaultDynamicUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	pg := testenv.PG(t)
	v := testenv.VaultServer(t)
	db := pg.CreateDatabase(t)
	mount := v.UniqueMount(t, "db")
	v.EnableDatabase(t, mount)
	v.ConfigurePostgres(t, mount, "pg", pg, "orders")
	v.CreateDynamicRole(t, mount, "orders", "pg", 10*time.Second, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The tables belong to the superuser; dynamic users read and write them.
	initEnv := pg.ClientEnv(pg.SuperUser, pg.SuperPassword, db, "disable")
	if out, err := testenv.Command(ctx, pg.Bin("pgbench"), initEnv, "-i", "-s", "1", "-q").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	p := proxytest.Start(t, pg, "unused", "unused", withVault(v, rootAuth(v), config.Credential{
		Source: "vault-db", Mount: mount, Role: "orders", RefreshInterval: config.Duration(5 * time.Second),
	}))
	out, err := testenv.Command(ctx, pg.Bin("pgbench"), p.Env(db), "-c", "8", "-j", "2", "-T", "60", "-M", "prepared").CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench: %v\n%s", err, out)
	}
	checkPgbench(t, string(out))
	st := p.Status(t).Backends[0]
	t.Logf("generation %d after 60 s, drain %+v", st.Credential.Current.Generation, st.Drain.Results)
	if st.Credential.Current.Generation < 6 {
		t.Fatalf("only %d generations in 60 s of 10 s leases", st.Credential.Current.Generation)
	}
	// Every lease but the current one is revoked once its sessions are gone.
	var list struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	proxytest.Eventually(t, 15*time.Second, "only the current lease to be left", func() bool {
		list.Data.Keys = nil
		err := v.Call(ctx, v.Token, "LIST", "sys/leases/lookup/"+mount+"/creds/orders", nil, &list)
		return err == nil && len(list.Data.Keys) == 1
	})
	cur := p.Backend().Store.Current().Cred.LeaseID
	if !strings.HasSuffix(cur, list.Data.Keys[0]) {
		t.Fatalf("the lease left is %s, the current one is %s", list.Data.Keys[0], cur)
	}
}

func TestVaultStaticRole(t *testing.T) {
	pg := testenv.PG(t)
	v := testenv.VaultServer(t)
	user, _ := pg.CreateUser(t, "static")
	db := pg.CreateDatabase(t)
	pg.Exec(t, fmt.Sprintf("GRANT ALL ON DATABASE %s TO %s", db, user))
	mount := v.UniqueMount(t, "db")
	v.EnableDatabase(t, mount)
	v.ConfigurePostgres(t, mount, "pg", pg, "orders-static")
	v.CreateStaticRole(t, mount, "orders-static", "pg", user, time.Hour)
	p := proxytest.Start(t, pg, "unused", "unused", withVault(v, rootAuth(v), config.Credential{
		Source: "vault-db", Mount: mount, StaticRole: "orders-static",
	}))
	ctx := context.Background()
	c := p.Connect(t, db)
	if _, err := c.Exec(ctx, "SET search_path = pg_catalog, public"); err != nil {
		t.Fatal(err)
	}
	v.Do(t, http.MethodPost, mount+"/rotate-role/orders-static", map[string]any{}, nil)
	proxytest.Eventually(t, 5*time.Second, "the rotated password to be adopted and the session to move", func() bool {
		return p.Backend().Store.Current().N == 2 && len(p.Backend().Sessions.Behind(2)) == 0
	})
	var path string
	if err := c.QueryRow(ctx, "SHOW search_path").Scan(&path); err != nil || path != "pg_catalog, public" {
		t.Fatalf("session after the static rotation: %q %v", path, err)
	}
	if u := sessionUser(t, p, db); u != user {
		t.Fatalf("new session as %s", u)
	}
}

func TestVaultAppRoleAndTokenFile(t *testing.T) {
	pg := testenv.PG(t)
	v := testenv.VaultServer(t)
	db, userA, passA, _, _ := twoUsers(t, pg)
	mount := v.UniqueMount(t, "kv")
	v.EnableKV2(t, mount)
	v.KVPut(t, mount, "app", map[string]any{"username": userA, "password": passA})
	kv := config.Credential{Source: "vault-kv", Mount: mount, Path: "app", KVVersion: 2, UsernameKey: "username", PasswordKey: "password"}

	roleID, secretID := v.EnableAppRole(t)
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	os.WriteFile(secretFile, []byte(secretID+"\n"), 0o600)
	p := proxytest.Start(t, pg, "unused", "unused", withVault(v, config.VaultAuth{
		Method: "approle", Mount: testenv.VaultAppRoleMount, RoleID: roleID, SecretIDFile: secretFile}, kv))
	if u := sessionUser(t, p, db); u != userA {
		t.Fatalf("approle: %s", u)
	}
	if strings.Contains(p.Logs.String(), secretID) {
		t.Fatal("the secret_id appears in the log")
	}

	// A Vault Agent sink: the token file is replaced, the old token revoked.
	tokenFile := filepath.Join(t.TempDir(), "token")
	tokA := v.CreateToken(t, time.Hour, true)
	os.WriteFile(tokenFile, []byte(tokA), 0o600)
	p2 := proxytest.Start(t, pg, "unused", "unused", withVault(v, config.VaultAuth{Method: "token_file", Path: tokenFile}, kv))
	tokB := v.CreateToken(t, time.Hour, true)
	tmp := tokenFile + ".new"
	os.WriteFile(tmp, []byte(tokB+"\n"), 0o600)
	time.Sleep(10 * time.Millisecond) // a new modification time
	os.Rename(tmp, tokenFile)
	v.Do(t, http.MethodPost, "auth/token/revoke", map[string]any{"token": tokA}, nil)
	before := p2.Backend().Store.Status().LastRefresh
	proxytest.Eventually(t, 5*time.Second, "a refresh with the new token", func() bool {
		st := p2.Backend().Store.Status()
		return st.LastRefresh.After(before) && !st.Failing
	})
	for _, tok := range []string{tokA, tokB} {
		if strings.Contains(p2.Logs.String(), tok) {
			t.Fatal("a Vault token appears in the log")
		}
	}
}

// TestVaultUnreachable stops Vault for 10 s under load: clients see no
// error, the backend is degraded meanwhile, and it recovers after.
func TestVaultUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	pg := testenv.PG(t)
	v := testenv.StartTestVault(t)
	db, userA, passA, _, _ := twoUsers(t, pg)
	v.EnableKV2(t, "kv")
	v.KVPut(t, "kv", "app", map[string]any{"username": userA, "password": passA})
	p := proxytest.Start(t, pg, "unused", "unused", withVault(v, rootAuth(v), config.Credential{
		Source: "vault-kv", Mount: "kv", Path: "app", KVVersion: 2, UsernameKey: "username", PasswordKey: "password",
		RefreshInterval: config.Duration(300 * time.Millisecond),
	}), func(c *config.Config) { c.Vault.Timeout = config.Duration(time.Second) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := testenv.Command(ctx, pg.Bin("pgbench"), p.Env(db), "-i", "-s", "1", "-q").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	var wg sync.WaitGroup
	var out []byte
	var benchErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, benchErr = testenv.Command(ctx, pg.Bin("pgbench"), p.Env(db), "-c", "4", "-j", "2", "-T", "16", "-S", "-C").CombinedOutput()
	}()
	time.Sleep(2 * time.Second)
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	var ready struct {
		Ready    bool                `json:"ready"`
		Degraded map[string][]string `json:"degraded"`
	}
	proxytest.Eventually(t, 8*time.Second, "readyz to report degraded", func() bool {
		ready.Degraded = nil
		code := p.AdminDo(t, "GET", "/readyz", &ready)
		return code == 200 && ready.Ready && len(ready.Degraded["pg"]) > 0
	})
	time.Sleep(10*time.Second - 2*time.Second)
	if err := v.Resume(); err != nil {
		t.Fatal(err)
	}
	proxytest.Eventually(t, 10*time.Second, "recovery", func() bool {
		ready.Degraded = nil
		p.AdminDo(t, "GET", "/readyz", &ready)
		return ready.Ready && len(ready.Degraded) == 0
	})
	wg.Wait()
	if benchErr != nil {
		t.Fatalf("pgbench (new connection per transaction) while Vault was down: %v\n%s", benchErr, out)
	}
	checkPgbench(t, string(out))
}

func TestVaultKVv1(t *testing.T) {
	pg := testenv.PG(t)
	v := testenv.VaultServer(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	mount := v.UniqueMount(t, "kv1")
	v.Do(t, http.MethodPost, "sys/mounts/"+mount, map[string]any{"type": "kv", "options": map[string]any{"version": "1"}}, nil)
	t.Cleanup(func() { v.Call(context.Background(), v.Token, http.MethodDelete, "sys/mounts/"+mount, nil, nil) })
	v.Do(t, http.MethodPost, mount+"/orders", map[string]any{"user": userA, "pass": passA}, nil)
	p := proxytest.Start(t, pg, "unused", "unused", withVault(v, config.VaultAuth{Method: "token", Token: v.CreateToken(t, time.Hour, true)}, config.Credential{
		Source: "vault-kv", Mount: mount, Path: "orders", KVVersion: 1, UsernameKey: "user", PasswordKey: "pass",
	}))
	c := p.Connect(t, db)
	v.Do(t, http.MethodPost, mount+"/orders", map[string]any{"user": userB, "pass": passB}, nil)
	var who string
	proxytest.Eventually(t, 5*time.Second, "the KV v1 change to reach the live session", func() bool {
		return c.QueryRow(context.Background(), "SELECT session_user").Scan(&who) == nil && who == userB
	})
}
