package mysql_test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestVaultDynamicUnderSysbench runs sysbench oltp_read_write through the
// proxy on MariaDB users from Vault's database secrets engine that live
// 10 s (30 s at most): the proxy takes a new user before each lease ends,
// moves every session to it and revokes the old lease once drained.
// sysbench sees no error and no reconnect, and afterwards only the
// current lease and its user are left.
func TestVaultDynamicUnderSysbench(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	bin := sysbenchBin(t)
	m := testenv.MariaDBServer(t)
	v := testenv.VaultServer(t)
	db := m.CreateDatabase(t)
	mount := v.UniqueMount(t, "db")
	v.EnableDatabase(t, mount)
	v.ConfigureMariaDB(t, mount, "maria", m, "orders")
	v.CreateMariaDBDynamicRole(t, mount, "orders", "maria", db, 10*time.Second, 30*time.Second)
	p := proxytest.StartMySQL(t, m, "unused", "unused", nativeAuth, func(c *config.Config) {
		c.Vault = config.Vault{Address: v.Addr, Timeout: config.Duration(5 * time.Second), Auth: config.VaultAuth{Method: "token", Token: v.Token}}
		c.Backends[0].Credential = config.Credential{Source: "vault-db", Mount: mount, Role: "orders", RefreshInterval: config.Duration(5 * time.Second)}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"--db-driver=mysql", "--mysql-host=" + p.Host, "--mysql-port=" + strconv.Itoa(p.Port),
		"--mysql-user=" + p.ClientUser, "--mysql-password=" + p.ClientPassword, "--mysql-db=" + db,
		"--tables=2", "--table-size=5000", "--rand-type=uniform", "oltp_read_write"}
	if out, err := exec.CommandContext(ctx, bin, append(args, "prepare")...).CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, append(args, "--threads=8", "--time=45", "--report-interval=0", "run")...).CombinedOutput()
	if err != nil {
		t.Fatalf("sysbench run: %v\n%s", err, lastLines(string(out), 40))
	}
	summary := string(out)
	for _, re := range []struct {
		what string
		n    string
	}{{"ignored errors", firstGroup(sysbenchErrors.FindStringSubmatch(summary))}, {"reconnects", firstGroup(sysbenchReconnects.FindStringSubmatch(summary))}} {
		if re.n != "0" {
			t.Fatalf("sysbench %s: %q\n%s", re.what, re.n, summary)
		}
	}
	st := p.Status(t).Backends[0]
	t.Logf("%s transactions, generation %d after 45 s, drains %v", firstGroup(sysbenchTxns.FindStringSubmatch(summary)), st.Credential.Current.Generation, st.Drain.Results)
	if st.Credential.Current.Generation < 4 {
		t.Fatalf("only %d generations in 45 s of 10 s leases", st.Credential.Current.Generation)
	}
	// The proxy keeps taking a new user every ~7 s, so the checks run
	// together until they hold for one current credential.
	var list struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	var cur creds.Credential
	var why string
	defer func() {
		if t.Failed() {
			t.Logf("last state: %s", why)
		}
	}()
	proxytest.Eventually(t, 20*time.Second, "only the current lease, its user and its connections to be left", func() bool {
		cur = p.Backend().Store.Current().Cred
		list.Data.Keys = nil
		if err := v.Call(ctx, v.Token, "LIST", "sys/leases/lookup/"+mount+"/creds/orders", nil, &list); err != nil || len(list.Data.Keys) != 1 {
			why = fmt.Sprintf("leases %v %v", list.Data.Keys, err)
			return false
		}
		if !strings.HasSuffix(cur.LeaseID, list.Data.Keys[0]) {
			why = "the lease left is not the current one"
			return false
		}
		// Vault's revocation drops the user but MariaDB keeps its open
		// connections: the proxy must have closed them all itself.
		users := m.Query(t, "SELECT COALESCE(GROUP_CONCAT(DISTINCT User), '') FROM mysql.user WHERE User LIKE 'v-%'")
		conns := m.Query(t, "SELECT COALESCE(GROUP_CONCAT(DISTINCT USER), '') FROM information_schema.PROCESSLIST WHERE USER LIKE 'v-%'")
		why = "users " + users + "; connections of " + conns
		return cur.Username == p.Backend().Store.Current().Cred.Username && users == cur.Username && (conns == "" || conns == cur.Username)
	})
	t.Logf("left: %s", why)
	if !strings.HasPrefix(cur.Username, "v-") {
		t.Fatalf("dynamic user %q does not have Vault's v- prefix the checks rely on", cur.Username)
	}
	if strings.Contains(p.Logs.String(), cur.Password) {
		t.Fatal("the dynamic password appears in the log")
	}
}

func firstGroup(m []string) string {
	if len(m) < 2 {
		return ""
	}
	return m[1]
}
