package testenv_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/internal/testenv"
)

// mariadbRun runs sql with the mariadb client as user over TCP to 127.0.0.1 (plus extra client
// arguments) and returns its trimmed output, or the client's error as a *testenv.MariaDBError.
func mariadbRun(t *testing.T, m *testenv.MariaDB, user, password, sql string, extra ...string) (string, error) {
	t.Helper()
	args := []string{"--protocol=TCP", "-h", "127.0.0.1", "-P", strconv.Itoa(m.Port), "-u", user,
		"--batch", "--skip-column-names", "--connect-timeout=10"}
	if password != "" {
		args = append(args, "-p"+password) // a bare -p would prompt
	}
	// Later arguments win, so extra may replace the host, e.g. with "localhost" for TLS.
	args = append(args, extra...)
	args = append(args, "-e", sql)
	out, err := m.Command(t.Context(), args...).CombinedOutput()
	if err != nil {
		if myErr := testenv.ParseMariaDBError(out); myErr != nil {
			return "", myErr
		}
		return "", fmt.Errorf("mariadb: %w: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func TestMariaDBStarts(t *testing.T) {
	t.Parallel()
	m := testenv.MariaDBServer(t)
	if again := testenv.MariaDBServer(t); again != m {
		t.Fatal("MariaDBServer returned a different server on the second call")
	}
	if !strings.HasPrefix(m.Addr(), "127.0.0.1:") || m.Port == 0 || m.RootPassword == "" {
		t.Fatalf("Addr() = %q, RootPassword empty %v", m.Addr(), m.RootPassword == "")
	}
	got := strings.Split(m.Query(t, `SELECT @@port, @@bind_address, @@socket, @@datadir, @@skip_name_resolve,
		@@max_connections, @@log_bin, @@innodb_flush_log_at_trx_commit, @@innodb_buffer_pool_size,
		@@have_ssl, @@character_set_server, @@system_time_zone, @@version LIKE '%MariaDB%'`), "\t")
	want := []string{strconv.Itoa(m.Port), "127.0.0.1", m.Socket, m.DataDir + "/", "1",
		"500", "0", "0", strconv.Itoa(64 << 20),
		"YES", "utf8mb4", "UTC", "1"}
	if !slices.Equal(got, want) {
		t.Errorf("server settings:\n got %q\nwant %q", got, want)
	}

	// root has the password for the socket, 127.0.0.1 and '%', and no account is left without one.
	if got, want := m.Query(t, `SELECT Host, plugin, authentication_string = PASSWORD(`+"'"+m.RootPassword+"'"+`)
		FROM mysql.user WHERE User = 'root' ORDER BY Host`), "%\tmysql_native_password\t1\n"+
		"127.0.0.1\tmysql_native_password\t1\nlocalhost\tmysql_native_password\t1"; got != want {
		t.Errorf("root accounts:\n%s\nwant\n%s", got, want)
	}
	if got := m.Query(t, `SELECT COUNT(*) FROM mysql.global_priv
		WHERE JSON_VALUE(Priv, '$.authentication_string') = '' AND NOT IFNULL(JSON_VALUE(Priv, '$.account_locked'), 0)`); got != "0" {
		t.Errorf("%s unlocked accounts without a password", got)
	}
	// root logs in over TCP with the password, and is refused without it.
	if got, err := mariadbRun(t, m, "root", m.RootPassword, "SELECT CURRENT_USER()"); err != nil || got != "root@127.0.0.1" {
		t.Errorf("root over TCP: %q, %v", got, err)
	}
	if _, err := mariadbRun(t, m, "root", "", "SELECT 1"); !testenv.IsMariaDBError(err, 1045) {
		t.Errorf("root over TCP without a password: %v, want error 1045", err)
	}
}

func TestMariaDBUserOverTCP(t *testing.T) {
	t.Parallel()
	m := testenv.MariaDBServer(t)
	db := m.CreateDatabase(t)
	user, password := m.CreateUser(t, "App")
	if !strings.HasPrefix(user, "app_") || strings.ToLower(user) != user {
		t.Errorf("user %q: want lowercase with prefix app_", user)
	}
	if got := m.Query(t, "SELECT plugin FROM mysql.user WHERE User = '"+user+"' AND Host = '%'"); got != "mysql_native_password" {
		t.Errorf("plugin of %s@%%: %q, want mysql_native_password", user, got)
	}

	// No privileges until Grant.
	_, err := mariadbRun(t, m, user, password, "SELECT 1", "-D", db)
	if !testenv.IsMariaDBError(err, 1044) {
		t.Errorf("login to %s before Grant: %v, want error 1044", db, err)
	}
	m.Grant(t, user, db)
	got, err := mariadbRun(t, m, user, password,
		"CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2); SELECT CONCAT(CURRENT_USER(), ' ', DATABASE(), ' ', COUNT(*)) FROM t",
		"-D", db)
	if err != nil {
		t.Fatalf("login as %s over TCP: %v", user, err)
	}
	if want := user + "@% " + db + " 2"; got != want {
		t.Errorf("session printed %q, want %q", got, want)
	}

	_, err = mariadbRun(t, m, user, "wrong", "SELECT 1")
	var myErr *testenv.MariaDBError
	if !errors.As(err, &myErr) || myErr.Code != 1045 || myErr.SQLState != "28000" {
		t.Fatalf("wrong password: err = %v, want ERROR 1045 (28000)", err)
	}
}

func TestMariaDBTLS(t *testing.T) {
	t.Parallel()
	m := testenv.MariaDBServer(t)
	user, password := m.CreateUser(t, "tls")
	const sql = "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'"

	verified := []string{"-h", "localhost", "--ssl", "--ssl-ca=" + m.CA.CertFile, "--ssl-verify-server-cert"}
	got, err := mariadbRun(t, m, user, password, sql, verified...)
	if err != nil {
		t.Fatalf("TLS verified against localhost: %v", err)
	}
	if !strings.HasPrefix(got, "TLSv1.") {
		t.Errorf("Ssl_version = %q, want TLSv1.x", got)
	}

	// A client that trusts another CA must refuse the server.
	other := testenv.TestCA(t)
	_, err = mariadbRun(t, m, user, password, sql, "-h", "localhost", "--ssl", "--ssl-ca="+other.CertFile, "--ssl-verify-server-cert")
	if !testenv.IsMariaDBError(err, 2026) {
		t.Errorf("TLS trusting another CA: %v, want error 2026", err)
	}
	// And a plaintext login still works (TLS is offered, not required).
	if got, err := mariadbRun(t, m, user, password, sql, "--skip-ssl"); err != nil || got != "" {
		t.Errorf("plaintext login: Ssl_version %q, err %v; want empty, nil", got, err)
	}
}

// heldSession is a mariadb client kept connected by an open stdin.
type heldSession struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// holdSession logs in as user over TCP with extra arguments, runs sql and waits until it printed
// "ready"; the session then stays open until the test ends or the server kills it.
func holdSession(t *testing.T, m *testenv.MariaDB, user, password, sql string, extra ...string) *heldSession {
	t.Helper()
	args := append([]string{"--protocol=TCP", "-h", "127.0.0.1", "-P", strconv.Itoa(m.Port), "-u", user, "-p" + password,
		"--batch", "--skip-column-names", "--unbuffered", "--skip-reconnect"}, extra...)
	// Not t.Context: the session must outlive the subtest that opens it.
	cmd := m.Command(context.Background(), args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &heldSession{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	if _, err := io.WriteString(stdin, sql+"; SELECT 'ready';\n"); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := s.out.ReadString('\n')
		if err != nil {
			t.Fatalf("held session ended before printing ready: %v", err)
		}
		if line == "ready\n" {
			return s
		}
	}
}

// end closes the session's stdin and waits for the client to exit.
func (s *heldSession) end() {
	s.stdin.Close()
	timer := time.AfterFunc(10*time.Second, func() { s.cmd.Process.Kill() })
	defer timer.Stop()
	_ = s.cmd.Wait() // fails when the server killed the session
}

func TestMariaDBCleanup(t *testing.T) {
	t.Parallel()
	m := testenv.MariaDBServer(t)
	var db, user string
	var sessions []*heldSession
	t.Cleanup(func() {
		for _, s := range sessions {
			s.end()
		}
	})

	t.Run("create", func(t *testing.T) {
		// The user before the database: cleanup drops the database first, while the user's
		// session in it holds an open transaction (and so a metadata lock) on one of its tables.
		var password string
		user, password = m.CreateUser(t, "owner")
		db = m.CreateDatabase(t)
		m.Grant(t, user, db)
		m.ExecIn(t, db, "CREATE TABLE t (id int) ENGINE=InnoDB")
		sessions = append(sessions,
			holdSession(t, m, user, password, "BEGIN; INSERT INTO t VALUES (1)", "-D", db),
			holdSession(t, m, user, password, "SELECT 1"), // no default database: ended by the user's drop
		)
		if got := m.Query(t, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '"+user+"'"); got != "2" {
			t.Fatalf("%s sessions of %s, want 2", got, user)
		}
	})

	if got := m.Query(t, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '"+db+"'"); got != "0" {
		t.Errorf("database %s still exists", db)
	}
	if got := m.Query(t, "SELECT COUNT(*) FROM mysql.global_priv WHERE User = '"+user+"'"); got != "0" {
		t.Errorf("account %s still exists", user)
	}
	if got := m.Query(t, "SELECT COUNT(*) FROM mysql.db WHERE User = '"+user+"'"); got != "0" {
		t.Errorf("grants of %s still exist", user)
	}
	if got := m.Query(t, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '"+user+"'"); got != "0" {
		t.Errorf("%s sessions of %s left", got, user)
	}
}

func TestMariaDBOddUserName(t *testing.T) {
	t.Parallel()
	m := testenv.MariaDBServer(t)
	user, password := m.CreateUser(t, `It's a \ `+"`name`")
	if !strings.HasPrefix(user, `it's a \ `+"`name`_") {
		t.Errorf("user %q", user)
	}
	if got, err := mariadbRun(t, m, user, password, "SELECT CURRENT_USER()"); err != nil || got != `it's a \\ `+"`name`_"+user[len(user)-12:]+"@%" {
		// Batch output escapes the backslash.
		t.Errorf("login as %q: %q, %v", user, got, err)
	}
}

// Not parallel: it sets MYSQL_* variables and HOME in the process environment, which Command must
// not pass on.
func TestMariaDBCommandCleanEnvironment(t *testing.T) {
	m := testenv.MariaDBServer(t)
	user, password := m.CreateUser(t, "cli")
	home := t.TempDir()
	cnf := "[client]\npassword=" + password + "\n"
	if err := os.WriteFile(filepath.Join(home, ".my.cnf"), []byte(cnf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("MYSQL_PWD", password)
	t.Setenv("MYSQL_HOST", "203.0.113.1")
	t.Setenv("MYSQL_TCP_PORT", "1")

	cmd := m.Command(t.Context(), "--version")
	if len(cmd.Args) < 2 || cmd.Args[1] != "--no-defaults" {
		t.Errorf("Command args = %q, want --no-defaults first", cmd.Args)
	}
	for _, kv := range cmd.Env {
		if strings.HasPrefix(kv, "MYSQL_") {
			t.Errorf("Command passes on %s", kv)
		}
	}
	// Without -p the password could come only from MYSQL_PWD or ~/.my.cnf: neither may be used.
	out, err := m.Command(t.Context(), "--protocol=TCP", "-h", m.Host, "-P", strconv.Itoa(m.Port), "-u", user, "-e", "SELECT 1").CombinedOutput()
	if myErr := testenv.ParseMariaDBError(out); err == nil || myErr == nil || myErr.Code != 1045 || !strings.Contains(myErr.Message, "using password: NO") {
		t.Errorf("login without -p: %v, %q; want error 1045 using password: NO", err, out)
	}
	if got, err := mariadbRun(t, m, user, password, "SELECT 1"); err != nil || got != "1" {
		t.Errorf("login with -p: %q, %v", got, err)
	}
}

func TestMariaDBSecondServerSideBySide(t *testing.T) {
	t.Parallel()
	m := testenv.MariaDBServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	other, err := testenv.StartMariaDB(ctx, testenv.MariaDBOptions{ExtraConfig: []string{"max_allowed_packet = 32M"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Stop() }) // in case of an early failure; Stop is idempotent
	if other.Port == m.Port || other.DataDir == m.DataDir || other.Socket == m.Socket || other.RootPassword == m.RootPassword {
		t.Fatalf("second server shares port, dir, socket or password with the first: %+v vs %+v", other, m)
	}
	if got := other.Query(t, "SELECT @@max_allowed_packet"); got != strconv.Itoa(32<<20) {
		t.Errorf("max_allowed_packet = %s, want 32M from ExtraConfig", got)
	}
	if got, err := mariadbRun(t, other, "root", other.RootPassword, "SELECT @@port"); err != nil || got != strconv.Itoa(other.Port) {
		t.Errorf("root over TCP on the second server: %q, %v", got, err)
	}
	// The shared server still answers, and does not know the second one's password.
	if got := m.Query(t, "SELECT 'ok'"); got != "ok" {
		t.Errorf("shared server: %q", got)
	}
	if _, err := mariadbRun(t, m, "root", other.RootPassword, "SELECT 1"); !testenv.IsMariaDBError(err, 1045) {
		t.Errorf("shared server with the second's root password: %v, want error 1045", err)
	}

	if err := other.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := other.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(other.DataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("server dir after Stop: %v, want it gone", err)
	}
	if _, err := mariadbRun(t, other, "root", other.RootPassword, "SELECT 1"); !testenv.IsMariaDBError(err, 2002) {
		t.Errorf("login after Stop: %v, want error 2002 (cannot connect)", err)
	}
}

func TestMariaDBPrivateServer(t *testing.T) {
	t.Parallel()
	testenv.MariaDBServer(t) // skips or fails like the others when MariaDB is missing
	var dir string
	t.Run("private", func(t *testing.T) {
		m := testenv.StartTestMariaDB(t, testenv.MariaDBOptions{})
		dir = filepath.Dir(m.DataDir)
		user, password := m.CreateUser(t, "private")
		if _, err := mariadbRun(t, m, user, password, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("server dir after the test's cleanup: %v, want it gone", err)
	}
}

func TestMariaDBStartFailureReportsLog(t *testing.T) {
	t.Parallel()
	testenv.MariaDBServer(t) // skips or fails like the others when MariaDB is missing
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	m, err := testenv.StartMariaDB(ctx, testenv.MariaDBOptions{ExtraConfig: []string{"credswap_no_such_setting = 1"}})
	if err == nil {
		m.Stop()
		t.Fatal("StartMariaDB succeeded with an invalid setting")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "credswap_no_such_setting") {
		t.Errorf("error does not carry the server log: %v", err)
	}
}

func TestParseMariaDBError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		out  string
		want *testenv.MariaDBError
	}{
		{"ERROR 1045 (28000): Access denied for user 'a'@'127.0.0.1' (using password: YES)\n",
			&testenv.MariaDBError{Code: 1045, SQLState: "28000", Message: "Access denied for user 'a'@'127.0.0.1' (using password: YES)"}},
		{"--------------\nSELECT x\n--------------\n\nERROR 1054 (42S22) at line 3: Unknown column 'x' in 'field list'\n",
			&testenv.MariaDBError{Code: 1054, SQLState: "42S22", Message: "Unknown column 'x' in 'field list'"}},
		{"some warning\nERROR 2002 (HY000): Can't connect to server on '127.0.0.1' (115)\r\n",
			&testenv.MariaDBError{Code: 2002, SQLState: "HY000", Message: "Can't connect to server on '127.0.0.1' (115)"}},
		{"Enter password: ERROR 1045 (28000): Access denied for user 'root'@'127.0.0.1' (using password: NO)\n",
			&testenv.MariaDBError{Code: 1045, SQLState: "28000", Message: "Access denied for user 'root'@'127.0.0.1' (using password: NO)"}},
		{"1\nready\n", nil},
		{"a line with ERROR 1045 (28000): inside it\n", nil},
	} {
		got := testenv.ParseMariaDBError([]byte(tc.out))
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("ParseMariaDBError(%q) = %+v, want %+v", tc.out, got, tc.want)
		}
	}
	err := fmt.Errorf("wrapped: %w", &testenv.MariaDBError{Code: 1045, SQLState: "28000"})
	if !testenv.IsMariaDBError(err, 1044, 1045) || testenv.IsMariaDBError(err, 2002) || testenv.IsMariaDBError(errors.New("x"), 1045) {
		t.Error("IsMariaDBError does not see through wrapping or matches the wrong code")
	}
}
