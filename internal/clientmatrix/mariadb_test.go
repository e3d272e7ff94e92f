package clientmatrix_test

import (
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestMariaDBClients runs the MariaDB drivers through credswap, plainly
// and while the credential alternates.
func TestMariaDBClients(t *testing.T) {
	t.Parallel()
	runMatrix(t, []client{
		{name: "mariadb-cli", prepare: mariadbCLIClient, nativeAuth: true},
		{name: "pymysql", prepare: pythonClient("my_pymysql.py", "pymysql", "python3-pymysql")},
		{name: "mysqlclient", prepare: pythonClient("my_mysqlclient.py", "MySQLdb", "python3-mysqldb"), nativeAuth: true},
		{name: "connector-j", prepare: javaClient("/usr/share/java/mariadb-java-client.jar", "libmariadb-java", "mariadb")},
		{name: "mysql2", prepare: nodeClient("mysql2.js", "mysql2")},
	}, mariadbTarget)
}

// mariadbTarget creates two backend users with every privilege on a fresh
// database with the matrix's schema (testdata/mariadb/schema.sql), and a
// proxy whose credential is the first user. Clients log in with
// caching_sha2_password unless c.nativeAuth.
func mariadbTarget(t *testing.T, c client) *target {
	t.Helper()
	m := testenv.MariaDBServer(t)
	db := m.CreateDatabase(t)
	userA, passA := m.CreateUser(t, "cma")
	userB, passB := m.CreateUser(t, "cmb")
	m.Grant(t, userA, db)
	m.Grant(t, userB, db)
	m.ExecIn(t, db, readTestdata(t, "mariadb/schema.sql"))
	var opts []proxytest.Option
	if c.nativeAuth {
		opts = append(opts, func(cfg *config.Config) { cfg.Backends[0].Clients[0].Auth = "mysql_native_password" })
	}
	p := proxytest.StartMySQL(t, m, userA, passA, opts...)
	tg := &target{p: p, db: db, users: [2]string{userA, userB}, secrets: &secrets{}}
	tg.secrets.add("the local password", p.ClientPassword)
	tg.secrets.add("the password of "+userA, passA)
	tg.secrets.add("the password of "+userB, passB)
	tg.secrets.add("the root password", m.RootPassword)
	// root over TCP changes passwords; the password goes as a parameter
	// (interpolated by the driver), never into an error.
	rc := mysql.NewConfig()
	rc.User, rc.Passwd, rc.Net, rc.Addr = "root", m.RootPassword, "tcp", m.Addr()
	rc.InterpolateParams = true
	connector, err := mysql.NewConnector(rc)
	if err != nil {
		t.Fatal(err)
	}
	root := sql.OpenDB(connector)
	root.SetMaxOpenConns(1)
	t.Cleanup(func() { root.Close() })
	tg.setPassword = func(user, password string) error {
		_, err := root.Exec("ALTER USER ?@'%' IDENTIFIED BY ?", user, password)
		return err
	}
	return tg
}

// mariadbError matches an error line the mariadb CLI prints.
var mariadbError = regexp.MustCompile(`(?m)^ERROR (\d+) \(([0-9A-Z]{5})\)(?: at line \d+)?(?: in file: '[^']*')?: (.*)$`)

// mariadbCLIClient runs the scripts in testdata/mariadb-cli with the
// mariadb CLI, one iteration at a time (see drive). The CLI goes on after
// errors (--force); the errors it printed must be exactly those each
// iteration provokes. The large value it reads back is compared here.
func mariadbCLIClient(t *testing.T) runner {
	bin := testenv.MariaDBServer(t).ClientBin
	dir := testdata(t, "mariadb-cli")
	return func(ctx context.Context, t *testing.T, tg *target, w work) (string, error) {
		tmp := t.TempDir()
		// The login, in an option file rather than on the command line.
		cnf := fmt.Sprintf("[client]\nuser = %s\npassword = %s\nhost = %s\nport = %d\nprotocol = TCP\ndatabase = %s\n",
			tg.p.ClientUser, tg.p.ClientPassword, tg.p.Host, tg.p.Port, tg.db)
		if err := os.WriteFile(filepath.Join(tmp, "client.cnf"), []byte(cnf), 0o600); err != nil {
			return "", err
		}
		// The large values go up as literals in big.sql.
		body := bigText()
		data := make([]byte, 1536<<10)
		for i := range data {
			data[i] = byte(i)
		}
		big := fmt.Sprintf("INSERT INTO documents (name, body, data) VALUES (@a, '%s', X'%s');\n", body, hex.EncodeToString(data))
		if err := os.WriteFile(filepath.Join(tmp, "big.sql"), []byte(big), 0o600); err != nil {
			return "", err
		}
		var mu sync.Mutex
		bigOK, bigBad := 0, 0
		filter := func(line string) string {
			rest, ok := strings.CutPrefix(line, "BIG ")
			if !ok {
				return line
			}
			mu.Lock()
			defer mu.Unlock()
			if rest == body {
				bigOK++
				return fmt.Sprintf("BIG <%d bytes as sent>", len(rest))
			}
			bigBad++
			return fmt.Sprintf("BIG <%d bytes, NOT as sent (%d)>", len(rest), len(body))
		}
		// --defaults-file first: the CLI reads no other option file.
		cmd := exec.CommandContext(ctx, bin, "--defaults-file="+filepath.Join(tmp, "client.cnf"), "--default-character-set=utf8mb4",
			"--batch", "--skip-column-names", "--unbuffered", "--force", "--skip-print-query-on-error")
		cmd.Env = baseEnv()
		cmd.Dir = tmp
		s, err := startScript(cmd, filter)
		if err != nil {
			return "", err
		}
		setup := fmt.Sprintf("SET @backend_users = '%s,%s', @min_changes = %d, @body_md5 = '%x', @data_md5 = '%x';\nsource %s\n",
			tg.users[0], tg.users[1], w.changes, md5.Sum([]byte(body)), md5.Sum(data), filepath.Join(dir, "setup.sql"))
		iteration := func(i int) string {
			return fmt.Sprintf("SET @iter = %d;\nsource %s\n", i, filepath.Join(dir, "iteration.sql"))
		}
		out, err := drive(s, w, setup, iteration, "source "+filepath.Join(dir, "finish.sql")+"\n")
		if err != nil {
			return out, err
		}
		res, err := parseResult(out)
		if err != nil {
			return out, err
		}
		errs := map[string]int{}
		for _, m := range mariadbError.FindAllStringSubmatch(out, -1) {
			errs[m[1]]++
		}
		want := map[string]int{"1146": res.iterations, "1062": res.iterations, "4025": res.iterations}
		if fmt.Sprint(errs) != fmt.Sprint(want) {
			return out, fmt.Errorf("the CLI printed errors %v, want %v (a missing table, a duplicate key and a CHECK violation in each iteration)", errs, want)
		}
		mu.Lock()
		defer mu.Unlock()
		if bigOK != res.iterations || bigBad != 0 {
			return out, fmt.Errorf("the large text came back as sent %d times and differently %d times in %d iterations", bigOK, bigBad, res.iterations)
		}
		return out, nil
	}
}

// bigText is about 1.5 MiB of UTF-8 text with multi-byte characters and
// nothing an SQL string literal would need to escape.
func bigText() string {
	unit := "credswap client matrix: é ß € ✓ 😀 "
	return strings.Repeat(unit, 1536<<10/len(unit)+1)
}
