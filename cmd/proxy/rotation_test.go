package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credswap/credswap/admin"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/rotate"
)

// TestRotationCrashRecovery kills the proxy (SIGKILL) right after apply and
// right after publish; the restarted proxy completes the rotation, and the
// database accepts exactly the credential the proxy uses.
func TestRotationCrashRecovery(t *testing.T) {
	for _, phase := range []string{rotate.PhaseApply, rotate.PhasePublish} {
		t.Run("killed after "+phase, func(t *testing.T) { testCrashRecovery(t, phase) })
	}
}

func testCrashRecovery(t *testing.T, phase string) {
	pg := testenv.PG(t)
	owner := "owner_" + proxytest.Random(4)
	userA, passA := pg.CreateUser(t, "crash_a")
	userB, _ := pg.CreateUser(t, "crash_b")
	pg.Exec(t, fmt.Sprintf("CREATE ROLE %s NOLOGIN", owner))
	pg.Exec(t, fmt.Sprintf("GRANT %s TO %s, %s", owner, userA, userB))
	dir := t.TempDir()
	writeJSON := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	writeJSON("cred.json", map[string]string{"username": userA, "password": passA})
	writeJSON("admin.json", map[string]string{"username": pg.SuperUser, "password": pg.SuperPassword})
	os.WriteFile(filepath.Join(dir, "pw"), []byte("local\n"), 0o600)
	port, _ := testenv.FreePort()
	adminPort, _ := testenv.FreePort()
	cfg := fmt.Sprintf(`admin: {listen: 127.0.0.1:%d}
log: {level: info}
backends:
  - name: db
    protocol: postgres
    listen: 127.0.0.1:%d
    upstream: %s
    clients: [{user: app, password_file: pw}]
    credential: {source: file, path: cred.json}
    drain_deadline: 5s
    rotation:
      strategy: alternating-users
      users: [%s, %s]
      admin_credential: {source: file, path: admin.json}
      publish: {to: file}
`, adminPort, port, pg.Addr(), userA, userB)
	path := filepath.Join(dir, "credswap.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=app password=local dbname=postgres sslmode=disable", port)

	start := func(env ...string) (*exec.Cmd, chan error, *bytes.Buffer) {
		cmd := exec.Command(os.Args[0], "run", "--config", path)
		cmd.Env = append(append(os.Environ(), "CREDSWAP_TEST_RUN_MAIN=1"), env...)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			if t.Failed() {
				t.Logf("proxy output:\n%s", logs.String())
			}
		})
		ctx := context.Background()
		proxytest.Eventually(t, 15*time.Second, "the proxy to accept", func() bool {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return false
			}
			c.Close(ctx)
			return true
		})
		return cmd, exited, &logs
	}

	_, exited, _ := start("CREDSWAP_TEST_KILL_AFTER_PHASE=" + phase)
	resp, err := http.Post(adminURL+"/v1/backends/db/rotate", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the proxy was not killed after %s", phase)
	}

	start()
	var st admin.StatusResponse
	proxytest.Eventually(t, 30*time.Second, "the interrupted rotation to end", func() bool {
		r, err := http.Get(adminURL + "/v1/status")
		if err != nil {
			return false
		}
		defer r.Body.Close()
		st = admin.StatusResponse{}
		json.NewDecoder(r.Body).Decode(&st)
		rot := st.Backends[0].Rotation
		return rot != nil && rot.Running == nil && rot.Last != nil
	})
	last := st.Backends[0].Rotation.Last
	if last.State != rotate.StateSucceeded || last.Trigger != "resume" {
		t.Fatalf("after the restart: %+v", last)
	}
	using := st.Backends[0].Credential.Current.Username
	b, _ := os.ReadFile(filepath.Join(dir, "cred.json"))
	var pub map[string]string
	json.Unmarshal(b, &pub)
	if using != userB || pub["username"] != userB {
		t.Fatalf("the proxy uses %s, the file names %s, want %s", using, pub["username"], userB)
	}
	ctx := context.Background()
	loginAs := func(user, pass string) error {
		cfg, _ := pg.ConnConfig(user, pass, "postgres")
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			c.Close(ctx)
		}
		return err
	}
	if err := loginAs(userB, pub["password"]); err != nil {
		t.Fatalf("the published credential is refused: %v", err)
	}
	if err := loginAs(userA, passA); err == nil {
		t.Fatal("the retired user still logs in")
	}
	if !strings.Contains(strings.Join(phaseNames(last), " "), "verify-retired") {
		t.Fatalf("phases: %v", phaseNames(last))
	}
}

func phaseNames(r *rotate.Record) []string {
	var out []string
	for _, p := range r.Phases {
		out = append(out, p.Name+":"+p.Outcome)
	}
	return out
}
