package rotate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/rotate"
)

// alternating creates the alternating-users setup of docs/rotation.md: a
// NOLOGIN owner role owning the database, two logins that are members of it
// and act as it, and a database.
func alternating(t *testing.T, pg *testenv.Postgres) (db, userA, passA, userB string) {
	t.Helper()
	owner := "owner_" + proxytest.Random(4)
	userA, passA = pg.CreateUser(t, "rot_a")
	userB, _ = pg.CreateUser(t, "rot_b")
	db = pg.CreateDatabase(t)
	// The owner role outlives the test in the throwaway server: it owns
	// the database until testenv drops it at cleanup.
	pg.Exec(t, fmt.Sprintf("CREATE ROLE %s NOLOGIN", owner))
	pg.Exec(t, fmt.Sprintf("GRANT %s TO %s, %s", owner, userA, userB))
	pg.Exec(t, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", db, owner))
	pg.ExecIn(t, db, fmt.Sprintf("GRANT ALL ON SCHEMA public TO %s", owner))
	for _, u := range []string{userA, userB} {
		pg.Exec(t, fmt.Sprintf("ALTER ROLE %s SET role = '%s'", u, owner))
	}
	return db, userA, passA, userB
}

// adminFile writes the superuser's credential for the rotation.
func adminFile(t *testing.T, pg *testenv.Postgres) string {
	path := filepath.Join(t.TempDir(), "admin.json")
	b, _ := json.Marshal(map[string]string{"username": pg.SuperUser, "password": pg.SuperPassword})
	os.WriteFile(path, b, 0o600)
	return path
}

func withRotation(t *testing.T, r config.Rotation) proxytest.Option {
	journal := filepath.Join(t.TempDir(), "rotation.json")
	return func(c *config.Config) {
		if r.Password.Length == 0 {
			r.Password = config.PasswordPolicy{Length: 24, Alphabet: "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"}
		}
		if r.Schedule.Interval == 0 {
			r.Schedule.Interval = config.Duration(time.Hour)
		}
		if r.Publish.To == "" {
			r.Publish.To = "file"
		}
		if r.AdminCredential.Source != "" && r.AdminCredential.RefreshInterval == 0 {
			r.AdminCredential.RefreshInterval = config.Duration(time.Minute)
		}
		r.Journal = journal
		c.Backends[0].Rotation = r
		c.Backends[0].DrainDeadline = config.Duration(10 * time.Second)
	}
}

// rotateNow runs one rotation through the admin API and waits for it.
func rotateNow(t *testing.T, p *proxytest.Proxy) rotate.Record {
	t.Helper()
	var rec rotate.Record
	code := p.AdminDo(t, http.MethodPost, "/v1/backends/pg/rotate?wait=1", &rec)
	if code != http.StatusOK {
		t.Fatalf("rotate: HTTP %d %+v", code, rec)
	}
	return rec
}

func published(t *testing.T, p *proxytest.Proxy) creds.Credential {
	t.Helper()
	c, err := creds.NewFileSource(p.CredFile, creds.FileOptions{}).Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func login(ctx context.Context, pg *testenv.Postgres, c creds.Credential) error {
	cfg, err := pg.ConnConfig(c.Username, c.Password, "postgres")
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func pgbenchLoad(t *testing.T, p *proxytest.Proxy, db string, seconds int) (wait func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+60)*time.Second)
	bench := p.PG.Bin("pgbench")
	if out, err := testenv.Command(ctx, bench, p.Env(db), "-i", "-s", "1", "-q").CombinedOutput(); err != nil {
		cancel()
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	done := make(chan string, 1)
	go func() {
		out, err := testenv.Command(ctx, bench, p.Env(db), "-c", "16", "-j", "2", "-T", fmt.Sprint(seconds), "-M", "prepared").CombinedOutput()
		if err != nil {
			out = append(out, []byte("\npgbench error: "+err.Error())...)
		}
		done <- string(out)
	}()
	return func() string {
		defer cancel()
		return <-done
	}
}

func checkPgbench(t *testing.T, out string) {
	t.Helper()
	if !strings.Contains(out, "number of failed transactions: 0 (0.000%)") || strings.Contains(out, "pgbench error") {
		t.Fatalf("pgbench reported failures:\n%s", out)
	}
}

func TestAlternatingUsersUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	pg := testenv.PG(t)
	db, userA, passA, userB := alternating(t, pg)
	p := proxytest.Start(t, pg, userA, passA, withRotation(t, config.Rotation{
		Strategy: "alternating-users", Users: []string{userA, userB},
		AdminCredential: config.Credential{Source: "file", Path: adminFile(t, pg)},
	}))
	wait := pgbenchLoad(t, p, db, 20)
	ctx := context.Background()
	time.Sleep(2 * time.Second)
	var prev creds.Credential = creds.Credential{Username: userA, Password: passA}
	for i := range 3 {
		rec := rotateNow(t, p)
		if rec.State != rotate.StateSucceeded {
			t.Fatalf("rotation %d: %+v", i+1, rec)
		}
		pub := published(t, p)
		if cur := p.Backend().Store.Current().Cred; !cur.Equal(pub) {
			t.Fatalf("the proxy uses %s, the file has %s", cur.Username, pub.Username)
		}
		if err := login(ctx, pg, pub); err != nil {
			t.Fatalf("the new credential is refused: %v", err)
		}
		if err := login(ctx, pg, prev); err == nil {
			t.Fatalf("rotation %d: the retired user %s can still log in", i+1, prev.Username)
		}
		var phases []string
		for _, ph := range rec.Phases {
			phases = append(phases, ph.Name+":"+ph.Outcome)
		}
		t.Logf("rotation %d: %s → %s in %s: %s", i+1, rec.FromUser, rec.ToUser, rec.EndedAt.Sub(rec.StartedAt).Round(time.Millisecond), strings.Join(phases, " "))
		prev = pub
		time.Sleep(time.Second)
	}
	checkPgbench(t, wait())
	if logs := p.Logs.String(); strings.Contains(logs, prev.Password) {
		t.Fatal("a generated password appears in the log")
	}
}

func TestSingleUserUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	pg := testenv.PG(t)
	user, pass := pg.CreateUser(t, "single")
	db := pg.CreateDatabase(t)
	pg.Exec(t, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", db, user))
	// No admin credential: the user changes its own password.
	p := proxytest.Start(t, pg, user, pass, withRotation(t, config.Rotation{Strategy: "single-user"}))
	wait := pgbenchLoad(t, p, db, 12)
	time.Sleep(2 * time.Second)
	for range 2 {
		if rec := rotateNow(t, p); rec.State != rotate.StateSucceeded {
			t.Fatalf("rotation: %+v", rec)
		}
	}
	checkPgbench(t, wait())
	ctx := context.Background()
	if err := login(ctx, pg, published(t, p)); err != nil {
		t.Fatalf("published credential: %v", err)
	}
	if err := login(ctx, pg, creds.Credential{Username: user, Password: pass}); err == nil {
		t.Fatal("the original password still works")
	}
}

// TestRollbackWhenAdminLacksRights: the admin credential cannot change
// passwords, the rotation rolls back, clients notice nothing.
func TestRollbackWhenAdminLacksRights(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB := alternating(t, pg)
	weak, weakPass := pg.CreateUser(t, "weak")
	path := filepath.Join(t.TempDir(), "weak.json")
	b, _ := json.Marshal(map[string]string{"username": weak, "password": weakPass})
	os.WriteFile(path, b, 0o600)
	p := proxytest.Start(t, pg, userA, passA, withRotation(t, config.Rotation{
		Strategy: "alternating-users", Users: []string{userA, userB},
		AdminCredential: config.Credential{Source: "file", Path: path},
	}))
	c := p.Connect(t, db)
	rec := rotateNow(t, p)
	if rec.State != rotate.StateRolledBack || !strings.Contains(rec.Error, "apply") || !strings.Contains(rec.Error, "permission denied") {
		t.Fatalf("want a rolled-back rotation with a clear error, got %+v", rec)
	}
	var who string
	if err := c.QueryRow(context.Background(), "SELECT session_user").Scan(&who); err != nil || who != userA {
		t.Fatalf("session after the failed rotation: %q %v", who, err)
	}
	if pub := published(t, p); pub.Username != userA {
		t.Fatalf("published %s", pub.Username)
	}
	var got rotate.Record
	if code := p.AdminDo(t, http.MethodGet, "/v1/rotations/"+rec.ID, &got); code != 200 || got.State != rotate.StateRolledBack {
		t.Fatalf("GET /v1/rotations/%s: %d %+v", rec.ID, code, got)
	}
}

func TestConcurrentRotationAndSchedule(t *testing.T) {
	pg := testenv.PG(t)
	_, userA, passA, userB := alternating(t, pg)
	p := proxytest.Start(t, pg, userA, passA, withRotation(t, config.Rotation{
		Strategy: "alternating-users", Users: []string{userA, userB},
		AdminCredential: config.Credential{Source: "file", Path: adminFile(t, pg)},
	}))
	var first, second map[string]any
	if code := p.AdminDo(t, http.MethodPost, "/v1/backends/pg/rotate", &first); code != http.StatusAccepted {
		t.Fatalf("first rotation: %d", code)
	}
	if code := p.AdminDo(t, http.MethodPost, "/v1/backends/pg/rotate", &second); code != http.StatusConflict {
		t.Fatalf("second rotation at once: want 409, got %d %v", code, second)
	}
	rot := p.App.Rotator("pg")
	proxytest.Eventually(t, 30*time.Second, "the first rotation to end", func() bool { return rot.Status().Running == nil })

	// Schedule on with a 2 s interval: it rotates repeatedly; off stops it.
	put := func(body string) {
		req, _ := http.NewRequest(http.MethodPut, p.AdminURL+"/v1/backends/pg/schedule", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("PUT schedule %s: %v %v", body, err, resp)
		}
		resp.Body.Close()
	}
	gen := p.Backend().Store.Current().N
	put(`{"enabled": true, "interval": "2s"}`)
	proxytest.Eventually(t, 30*time.Second, "two scheduled rotations", func() bool {
		return p.Backend().Store.Current().N >= gen+2
	})
	put(`{"enabled": false}`)
	proxytest.Eventually(t, 30*time.Second, "the last scheduled rotation to end", func() bool { return rot.Status().Running == nil })
	stopped := p.Backend().Store.Current().N
	time.Sleep(5 * time.Second)
	if n := p.Backend().Store.Current().N; n != stopped {
		t.Fatalf("rotations continued after the schedule was turned off: generation %d → %d", stopped, n)
	}
	st := p.Status(t).Backends[0]
	if st.Rotation == nil || st.Rotation.Schedule.Enabled || st.Rotation.Last == nil || st.Rotation.Last.State != rotate.StateSucceeded {
		t.Fatalf("rotation status: %+v", st.Rotation)
	}
	if !strings.Contains(scrape(t, p), `credswap_rotations_total{backend="pg",result="succeeded",strategy="alternating-users"}`) {
		t.Fatal("rotations_total not reported")
	}
}

func scrape(t *testing.T, p *proxytest.Proxy) string {
	resp, err := http.Get(p.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}

var _ = errors.New

func TestVaultStaticStrategy(t *testing.T) {
	pg := testenv.PG(t)
	v := testenv.VaultServer(t)
	user, pass := pg.CreateUser(t, "vstatic")
	db := pg.CreateDatabase(t)
	pg.Exec(t, fmt.Sprintf("GRANT ALL ON DATABASE %s TO %s", db, user))
	mount := v.UniqueMount(t, "db")
	v.EnableDatabase(t, mount)
	v.ConfigurePostgres(t, mount, "pg", pg, "orders")
	v.CreateStaticRole(t, mount, "orders", "pg", user, time.Hour)
	p := proxytest.Start(t, pg, user, pass, func(c *config.Config) {
		c.Vault = config.Vault{Address: v.Addr, Timeout: config.Duration(5 * time.Second), Auth: config.VaultAuth{Method: "token", Token: v.Token}}
		c.Backends[0].Credential = config.Credential{Source: "vault-db", Mount: mount, StaticRole: "orders", RefreshInterval: config.Duration(time.Hour)}
	}, withRotation(t, config.Rotation{Strategy: "vault-static", Publish: config.Publish{To: "none"}}))
	c := p.Connect(t, db)
	before := p.Backend().Store.Current().Cred
	rec := rotateNow(t, p)
	if rec.State != rotate.StateSucceeded {
		t.Fatalf("vault-static rotation: %+v", rec)
	}
	after := p.Backend().Store.Current().Cred
	if after.Equal(before) || after.Username != user {
		t.Fatalf("credential after the rotation: %s (changed: %v)", after.Username, !after.Equal(before))
	}
	ctx := context.Background()
	if err := login(ctx, pg, before); err == nil {
		t.Fatal("the password before the rotation still works")
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("live session: %v", err)
	}
}

// TestPublishToVaultKV: alternating users published to a KV v2 secret with
// check-and-set; a second proxy reading the same secret adopts it too.
func TestPublishToVaultKV(t *testing.T) {
	pg := testenv.PG(t)
	v := testenv.VaultServer(t)
	db, userA, passA, userB := alternating(t, pg)
	mount := v.UniqueMount(t, "kv")
	v.EnableKV2(t, mount)
	v.KVPut(t, mount, "orders", map[string]any{"username": userA, "password": passA})
	kv := func(c *config.Config) {
		c.Vault = config.Vault{Address: v.Addr, Timeout: config.Duration(5 * time.Second), Auth: config.VaultAuth{Method: "token", Token: v.Token}}
		c.Backends[0].Credential = config.Credential{Source: "vault-kv", Mount: mount, Path: "orders", KVVersion: 2,
			UsernameKey: "username", PasswordKey: "password", RefreshInterval: config.Duration(300 * time.Millisecond)}
	}
	p := proxytest.Start(t, pg, "unused", "unused", kv, withRotation(t, config.Rotation{
		Strategy: "alternating-users", Users: []string{userA, userB}, Publish: config.Publish{To: "vault-kv"},
		AdminCredential: config.Credential{Source: "file", Path: adminFile(t, pg)}, Grace: config.Duration(time.Second),
	}))
	other := proxytest.Start(t, pg, "unused", "unused", kv)
	c := other.Connect(t, db)
	rec := rotateNow(t, p)
	if rec.State != rotate.StateSucceeded {
		t.Fatalf("rotation: %+v", rec)
	}
	data, version := v.KVGet(t, mount, "orders")
	if data["username"] != userB || version != 2 {
		t.Fatalf("published secret: version %d user %v", version, data["username"])
	}
	var who string
	proxytest.Eventually(t, 5*time.Second, "the other proxy's session to move", func() bool {
		return c.QueryRow(context.Background(), "SELECT session_user").Scan(&who) == nil && who == userB
	})
}
