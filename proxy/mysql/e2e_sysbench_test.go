package mysql_test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// sysbenchBin returns the sysbench program; it is missing on machines
// without scripts/deps.sh, which skips the test unless CI=true.
func sysbenchBin(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("sysbench")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("sysbench is not installed (scripts/deps.sh installs it): %v", err)
		}
		t.Skipf("sysbench is not installed (scripts/deps.sh installs it)")
	}
	return bin
}

var (
	sysbenchErrors     = regexp.MustCompile(`(?m)^\s*ignored errors:\s+(\d+)`)
	sysbenchReconnects = regexp.MustCompile(`(?m)^\s*reconnects:\s+(\d+)`)
	sysbenchTxns       = regexp.MustCompile(`(?m)^\s*transactions:\s+(\d+)`)
)

// TestSysbenchUnderAlternatingRotation runs sysbench oltp_read_write (16
// threads, 20 s, server-side prepared statements) through the proxy while
// the credential alternates every 500 ms between two users: the next
// user's password is changed in the database, then the file. sysbench
// must report no error and no reconnect.
func TestSysbenchUnderAlternatingRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	bin := sysbenchBin(t)
	m := testenv.MariaDBServer(t)
	db, userA, passA, userB, _ := twoUsers(t, m)
	// sysbench uses libmariadb, which cannot do caching_sha2_password's
	// full authentication over plaintext TCP (nativeAuth).
	p := proxytest.StartMySQL(t, m, userA, passA, nativeAuth)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"--db-driver=mysql", "--mysql-host=" + p.Host, "--mysql-port=" + strconv.Itoa(p.Port),
		"--mysql-user=" + p.ClientUser, "--mysql-password=" + p.ClientPassword, "--mysql-db=" + db,
		// Uniform keys: sysbench's default "special" distribution makes the
		// database itself report deadlocks now and then (ignored errors),
		// with or without the proxy.
		"--tables=4", "--table-size=10000", "--rand-type=uniform", "oltp_read_write"}
	if out, err := exec.CommandContext(ctx, bin, append(args, "prepare")...).CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}

	stop := p.Alternate(t, 500*time.Millisecond, [2]string{userA, userB}, func(user, pw string) {
		// Like credswap's own rotation, change a user's password only
		// once the drain away from it is done: on a loaded machine,
		// adoption could otherwise lag so far that every credential the
		// proxy held was already changed again.
		p.Settled(user, 10*time.Second)
		m.Exec(t, fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'", user, pw))
	})
	out, err := exec.CommandContext(ctx, bin, append(args, "--threads=16", "--time=20", "--report-interval=0", "run")...).CombinedOutput()
	n := stop()
	if err != nil {
		t.Fatalf("sysbench run: %v\n%s", err, lastLines(string(out), 40))
	}
	summary := string(out)
	for _, c := range []struct {
		what string
		re   *regexp.Regexp
	}{{"ignored errors", sysbenchErrors}, {"reconnects", sysbenchReconnects}} {
		mm := c.re.FindStringSubmatch(summary)
		if mm == nil {
			t.Fatalf("no %q in the sysbench summary:\n%s", c.what, summary)
		}
		if mm[1] != "0" {
			t.Errorf("sysbench reports %s %s:\n%s", c.what, mm[1], summary)
		}
	}
	if strings.Contains(summary, "FATAL") || strings.Contains(summary, "ALERT") {
		t.Errorf("sysbench reported failures:\n%s", lastLines(summary, 40))
	}
	st := p.Status(t).Backends[0]
	txns := ""
	if mm := sysbenchTxns.FindStringSubmatch(summary); mm != nil {
		txns = mm[1]
	}
	t.Logf("%s transactions, %d rotations, generation %d, switches %v", txns, n, st.Credential.Current.Generation, st.Drain.Results)
	if st.Credential.Current.Generation < uint64(n/2) {
		t.Fatalf("only %d generations adopted for %d rotations", st.Credential.Current.Generation, n)
	}
	current := st.Credential.Current.Username
	retired := userA
	if current == userA {
		retired = userB
	}
	proxytest.Eventually(t, 10*time.Second, "no backend connection of the retired user", func() bool {
		return m.Query(t, fmt.Sprintf("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '%s'", retired)) == "0"
	})
	logs := p.Logs.String()
	if strings.Contains(logs, `"level":"error"`) {
		t.Errorf("errors logged:\n%s", grepLines(logs, `"level":"error"`))
	}
	// libmariadb sends parameter types only with a statement's first
	// EXECUTE: after a switch the proxy adds the remembered ones.
	if !strings.Contains(logs, "added remembered parameter types") {
		t.Errorf("no EXECUTE needed remembered parameter types: sysbench did not run prepared statements across switches")
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
