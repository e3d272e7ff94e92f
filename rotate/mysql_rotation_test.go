package rotate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/rotate"
)

// mariaAdminFile writes MariaDB root's credential for the rotation.
func mariaAdminFile(t *testing.T, m *testenv.MariaDB) string {
	path := filepath.Join(t.TempDir(), "admin.json")
	b, _ := json.Marshal(map[string]string{"username": "root", "password": m.RootPassword})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mysqlNative makes the proxy's local login mysql_native_password: sysbench
// (libmariadb) cannot do caching_sha2_password's full authentication over
// plaintext TCP.
func mysqlNative(c *config.Config) { c.Backends[0].Clients[0].Auth = "mysql_native_password" }

var (
	sysbenchIgnored    = regexp.MustCompile(`(?m)^\s*ignored errors:\s+(\d+)`)
	sysbenchReconnects = regexp.MustCompile(`(?m)^\s*reconnects:\s+(\d+)`)
	sysbenchTxns       = regexp.MustCompile(`(?m)^\s*transactions:\s+(\d+)`)
)

// sysbenchLoad prepares sysbench's oltp_read_write tables in db through the
// proxy and runs 16 threads for seconds in the background; wait returns
// its output.
func sysbenchLoad(t *testing.T, p *proxytest.Proxy, db string, seconds int) (wait func() string) {
	t.Helper()
	bin, err := exec.LookPath("sysbench")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("sysbench is not installed (scripts/deps.sh installs it): %v", err)
		}
		t.Skip("sysbench is not installed (scripts/deps.sh installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+120)*time.Second)
	args := []string{"--db-driver=mysql", "--mysql-host=" + p.Host, "--mysql-port=" + strconv.Itoa(p.Port),
		"--mysql-user=" + p.ClientUser, "--mysql-password=" + p.ClientPassword, "--mysql-db=" + db,
		"--tables=2", "--table-size=5000", "--rand-type=uniform", "oltp_read_write"}
	if out, err := exec.CommandContext(ctx, bin, append(args, "prepare")...).CombinedOutput(); err != nil {
		cancel()
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	done := make(chan string, 1)
	go func() {
		out, err := exec.CommandContext(ctx, bin, append(args, "--threads=16", "--time="+strconv.Itoa(seconds), "--report-interval=0", "run")...).CombinedOutput()
		if err != nil {
			out = append(out, []byte("\nsysbench error: "+err.Error())...)
		}
		done <- string(out)
	}()
	return func() string {
		defer cancel()
		return <-done
	}
}

// checkSysbench fails unless sysbench ran transactions with no error and
// no reconnect.
func checkSysbench(t *testing.T, out string) {
	t.Helper()
	for _, c := range []struct {
		what string
		re   *regexp.Regexp
	}{{"ignored errors", sysbenchIgnored}, {"reconnects", sysbenchReconnects}} {
		m := c.re.FindStringSubmatch(out)
		if m == nil || m[1] != "0" {
			t.Fatalf("sysbench %s not 0:\n%s", c.what, out)
		}
	}
	if strings.Contains(out, "FATAL") || strings.Contains(out, "sysbench error") {
		t.Fatalf("sysbench failed:\n%s", out)
	}
	if m := sysbenchTxns.FindStringSubmatch(out); m == nil || m[1] == "0" {
		t.Fatalf("sysbench ran no transaction:\n%s", out)
	}
}

func rotateBackend(t *testing.T, p *proxytest.Proxy, name string) rotate.Record {
	t.Helper()
	var rec rotate.Record
	if code := p.AdminDo(t, http.MethodPost, "/v1/backends/"+name+"/rotate?wait=1", &rec); code != http.StatusOK {
		t.Fatalf("rotate: HTTP %d %+v", code, rec)
	}
	return rec
}

func phaseSummary(rec rotate.Record) string {
	var phases []string
	for _, ph := range rec.Phases {
		phases = append(phases, ph.Name+":"+ph.Outcome)
	}
	return strings.Join(phases, " ")
}

// TestMariaDBRotationsUnderSysbench rotates a MariaDB backend with
// alternating-users and with dual-password (MariaDB's authentication
// alternatives) while sysbench oltp_read_write runs through the proxy:
// sysbench sees no error and no reconnect; after every rotation the new
// credential logs in and the retired one is refused.
func TestMariaDBRotationsUnderSysbench(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	m := testenv.MariaDBServer(t)
	verifier := rotate.MySQL{Addr: m.Addr()}
	ctx := context.Background()

	t.Run("alternating-users", func(t *testing.T) {
		db := m.CreateDatabase(t)
		userA, passA := m.CreateUser(t, "alt_a")
		userB, _ := m.CreateUser(t, "alt_b")
		m.Grant(t, userA, db)
		m.Grant(t, userB, db)
		m.Exec(t, fmt.Sprintf("ALTER USER '%s'@'%%' ACCOUNT LOCK", userB))
		p := proxytest.StartMySQL(t, m, userA, passA, mysqlNative, withRotation(t, config.Rotation{
			Strategy: "alternating-users", Users: []string{userA, userB},
			AdminCredential: config.Credential{Source: "file", Path: mariaAdminFile(t, m)},
		}))
		wait := sysbenchLoad(t, p, db, 15)
		time.Sleep(2 * time.Second)
		prev := creds.Credential{Username: userA, Password: passA}
		for i := range 3 {
			rec := rotateBackend(t, p, "my")
			if rec.State != rotate.StateSucceeded {
				t.Fatalf("rotation %d: %+v", i+1, rec)
			}
			t.Logf("rotation %d: %s → %s in %s: %s", i+1, rec.FromUser, rec.ToUser, rec.EndedAt.Sub(rec.StartedAt).Round(time.Millisecond), phaseSummary(rec))
			pub := published(t, p)
			if err := verifier.Verify(ctx, pub); err != nil {
				t.Fatalf("the new credential is refused: %v", err)
			}
			if err := verifier.Verify(ctx, prev); err == nil {
				t.Fatalf("rotation %d: the retired user %s can still log in", i+1, prev.Username)
			}
			if n := m.Query(t, fmt.Sprintf("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '%s'", prev.Username)); n != "0" {
				t.Fatalf("rotation %d: %s connections of the retired user remain", i+1, n)
			}
			prev = pub
			time.Sleep(time.Second)
		}
		checkSysbench(t, wait())
		if strings.Contains(p.Logs.String(), prev.Password) {
			t.Fatal("a generated password appears in the log")
		}
	})

	t.Run("dual-password", func(t *testing.T) {
		db := m.CreateDatabase(t)
		user, pass := m.CreateUser(t, "dual")
		m.Grant(t, user, db)
		p := proxytest.StartMySQL(t, m, user, pass, mysqlNative, withRotation(t, config.Rotation{
			Strategy:        "dual-password",
			AdminCredential: config.Credential{Source: "file", Path: mariaAdminFile(t, m)},
		}))
		wait := sysbenchLoad(t, p, db, 15)
		time.Sleep(2 * time.Second)
		prev := creds.Credential{Username: user, Password: pass}
		for i := range 3 {
			rec := rotateBackend(t, p, "my")
			if rec.State != rotate.StateSucceeded {
				t.Fatalf("rotation %d: %+v", i+1, rec)
			}
			t.Logf("rotation %d in %s: %s", i+1, rec.EndedAt.Sub(rec.StartedAt).Round(time.Millisecond), phaseSummary(rec))
			pub := published(t, p)
			if pub.Username != user || pub.Password == prev.Password {
				t.Fatalf("rotation %d published %s with the same password: %v", i+1, pub.Username, pub.Password == prev.Password)
			}
			if err := verifier.Verify(ctx, pub); err != nil {
				t.Fatalf("the new password is refused: %v", err)
			}
			if err := verifier.Verify(ctx, prev); err == nil {
				t.Fatalf("rotation %d: the old password still works after retire", i+1)
			}
			prev = pub
			time.Sleep(time.Second)
		}
		checkSysbench(t, wait())
		if strings.Contains(p.Logs.String(), prev.Password) {
			t.Fatal("a generated password appears in the log")
		}
	})
}
