package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The module has no MySQL driver (go.mod holds none), so every helper below runs the mariadb
// command-line client. Statements go to it on stdin, never in its arguments, so passwords in SQL
// do not show in ps; root's password comes from an option file in the server dir (mode 0600).

// MariaDBError is an error as the mariadb client prints it, such as
// "ERROR 1045 (28000): Access denied for user 'u'@'127.0.0.1' (using password: YES)". Codes below
// 2000 come from the server; 2000 and above from the client library (2002: cannot connect, 2026:
// TLS error).
type MariaDBError struct {
	Code     int    // error number, e.g. 1045 (ER_ACCESS_DENIED_ERROR)
	SQLState string // e.g. "28000"
	Message  string // the text after the code, without the "at line N" of batch mode
}

// Error returns the error as the client printed it.
func (e *MariaDBError) Error() string {
	return fmt.Sprintf("mariadb: ERROR %d (%s): %s", e.Code, e.SQLState, e.Message)
}

// mariadbErrorLine matches the line the client prints for an error: in batch mode with "at line
// N", after the prompt when -p without a password had it ask for one.
var mariadbErrorLine = regexp.MustCompile(`(?m)^(?:Enter password: )?ERROR (\d+) \(([0-9A-Za-z]{5})\)(?: at line \d+)?: (.*)$`)

// ParseMariaDBError returns the first error the mariadb client printed in out (its stderr or
// combined output), or nil if out holds none.
func ParseMariaDBError(out []byte) *MariaDBError {
	sub := mariadbErrorLine.FindSubmatch(out)
	if sub == nil {
		return nil
	}
	code, err := strconv.Atoi(string(sub[1]))
	if err != nil {
		return nil
	}
	return &MariaDBError{Code: code, SQLState: string(sub[2]), Message: strings.TrimRight(string(sub[3]), "\r")}
}

// IsMariaDBError reports whether err is a *MariaDBError with one of the given codes.
func IsMariaDBError(err error, code ...int) bool {
	var myErr *MariaDBError
	return errors.As(err, &myErr) && slices.Contains(code, myErr.Code)
}

// clientEnv is the whole environment of the mariadb client: PATH, HOME and LANG=C.UTF-8. Nothing
// MYSQL_* (MYSQL_PWD, MYSQL_HOST, MYSQL_TCP_PORT, MYSQL_UNIX_PORT, MYSQL_HOME, ...) is inherited.
func clientEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"LANG=C.UTF-8",
	}
}

// Command returns a command running the mariadb client ([MariaDB.ClientBin]) with "--no-defaults"
// and then args, so it reads no option file (~/.my.cnf included), and with a clean environment:
// PATH, HOME and LANG=C.UTF-8 only, nothing MYSQL_*. Every connection setting comes from args:
//
//	m.Command(ctx, "--protocol=TCP", "-h", m.Host, "-P", strconv.Itoa(m.Port), "-u", user, "-p"+password, "-e", "SELECT 1")
//
// "-h localhost" means the unix socket unless "--protocol=TCP" is given. For TLS verified against
// the server's certificate use "--protocol=TCP", "-h", "localhost", "--ssl",
// "--ssl-ca="+m.CA.CertFile and "--ssl-verify-server-cert". Errors the client prints can be read
// with [ParseMariaDBError].
func (m *MariaDB) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, m.ClientBin, append([]string{"--no-defaults"}, args...)...)
	cmd.Env = clientEnv()
	return cmd
}

// Exec runs sql (one or more statements separated by ";") as root over the unix socket, with no
// default database, and fails the test on error.
func (m *MariaDB) Exec(t testing.TB, sql string) {
	t.Helper()
	m.ExecIn(t, "", sql)
}

// ExecIn is [MariaDB.Exec] with database as the default database ("" for none).
func (m *MariaDB) ExecIn(t testing.TB, database, sql string) {
	t.Helper()
	if _, err := m.run(t.Context(), database, strconv.Quote(sql), sql); err != nil {
		t.Fatal(err)
	}
}

// Query runs sql as root over the unix socket, with no default database, and returns what the
// client printed in batch mode: rows on lines, columns separated by tabs, no column names, NULL as
// "NULL", without the final newline. It fails the test on error.
func (m *MariaDB) Query(t testing.TB, sql string) string {
	t.Helper()
	out, err := m.run(t.Context(), "", strconv.Quote(sql), sql)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(out, "\n")
}

// run feeds sql to the mariadb client logged in as root over the unix socket, with database as
// the default database ("" for none), and returns its output. The client stops at the first
// failing statement; its error is returned as a wrapped *MariaDBError. Errors name the statement
// by what, which must not contain secrets; the client is told not to print failing statements.
func (m *MariaDB) run(ctx context.Context, database, what, sql string) (string, error) {
	args := []string{
		"--defaults-file=" + m.rootFile, // must come first; no other option file is read
		"--batch", "--skip-column-names", "--skip-print-query-on-error",
	}
	if database != "" {
		args = append(args, "--database="+database)
	}
	cmd := exec.CommandContext(ctx, m.ClientBin, args...)
	cmd.Env = clientEnv()
	cmd.Stdin = strings.NewReader(sql)
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if myErr := ParseMariaDBError(stderr.Bytes()); myErr != nil {
			return "", fmt.Errorf("testenv: exec %s: %w", what, myErr)
		}
		return "", fmt.Errorf("testenv: exec %s: mariadb client: %w: %s", what, err, tail(stderr.Bytes(), 5))
	}
	return stdout.String(), nil
}

// CreateDatabase creates a database with a unique name and returns the name. At cleanup the
// sessions whose default database it is are killed (so an open transaction cannot block the
// drop) and it is dropped. A session that holds locks in it while using another default database
// makes the drop fail after lock_wait_timeout (20 s) instead.
func (m *MariaDB) CreateDatabase(t testing.TB) string {
	t.Helper()
	name, err := uniqueName("testdb")
	if err != nil {
		t.Fatal(err)
	}
	create := "CREATE DATABASE " + quoteMyIdent(name)
	if _, err := m.run(t.Context(), "", create, create); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := m.dropDatabase(ctx, name); err != nil {
			t.Error(err)
		}
	})
	return name
}

// dropDatabase kills the sessions using database and drops it, tolerating a database already gone.
func (m *MariaDB) dropDatabase(ctx context.Context, database string) error {
	// KILL is asynchronous: DROP DATABASE then waits (up to lock_wait_timeout) for the killed
	// sessions to roll back and release their metadata locks. Error 1094 (unknown thread) is a
	// session that ended by itself between the SELECT and its KILL.
	sql := fmt.Sprintf(`SET SESSION lock_wait_timeout = %d;
DELIMITER //
BEGIN NOT ATOMIC
  DECLARE CONTINUE HANDLER FOR 1094 BEGIN END;
  FOR s IN (SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()) DO
    KILL s.ID;
  END FOR;
END //
DELIMITER ;
DROP DATABASE IF EXISTS %s;
`, mariadbLockWait, quoteMyString(database), quoteMyIdent(database))
	_, err := m.run(ctx, "", "DROP DATABASE IF EXISTS "+quoteMyIdent(database), sql)
	return err
}

// CreateUser creates the account 'user'@'%', whose unique name starts with prefix (lowercased),
// with a random password stored as mysql_native_password, and returns its name and password. It
// has no privileges: grant them with [MariaDB.Grant]. At cleanup its sessions are killed and the
// account dropped, with its grants.
func (m *MariaDB) CreateUser(t testing.TB, prefix string) (user, password string) {
	t.Helper()
	user, err := uniqueName(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if password, err = randomHex(16); err != nil {
		t.Fatal(err)
	}
	create := "CREATE USER " + myAccount(user) + " IDENTIFIED VIA mysql_native_password USING PASSWORD("
	if _, err := m.run(t.Context(), "", create+"'…')", create+quoteMyString(password)+")"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := m.dropUser(ctx, user); err != nil {
			t.Error(err)
		}
	})
	return user, password
}

// Grant grants every privilege on database to the account 'user'@'%' (without GRANT OPTION),
// failing the test on error. Dropping the account removes the grant.
func (m *MariaDB) Grant(t testing.TB, user, database string) {
	t.Helper()
	grant := "GRANT ALL PRIVILEGES ON " + quoteMyIdent(database) + ".* TO " + myAccount(user)
	if _, err := m.run(t.Context(), "", grant, grant); err != nil {
		t.Fatal(err)
	}
}

// dropUser kills the sessions of user, drops the account (tolerating one already gone) and waits
// until its sessions are gone. MariaDB lets the sessions of a dropped account go on, so they are
// killed before the drop and once more after it, for any that logged in between.
func (m *MariaDB) dropUser(ctx context.Context, user string) error {
	kill := "KILL USER " + quoteMyString(user) + ";\n"
	sql := kill + "DROP USER IF EXISTS " + myAccount(user) + ";\n" + kill
	if _, err := m.run(ctx, "", "drop user "+myAccount(user), sql); err != nil {
		return err
	}
	count := "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = " + quoteMyString(user)
	for {
		out, err := m.run(ctx, "", count, count)
		if err != nil {
			return err
		}
		left := strings.TrimSpace(out)
		if left == "0" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testenv: sessions of %q: %s left after KILL: %w", user, left, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
