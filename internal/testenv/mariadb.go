package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MariaDBBinDirEnv is the environment variable naming one directory that holds all three MariaDB
// programs testenv runs (mariadbd, mariadb-install-db and mariadb), instead of looking them up.
const MariaDBBinDirEnv = "CREDSWAP_MARIADB_BINDIR"

const (
	// mariadbDirPrefix names the temp dir of every MariaDB server, so leftovers can be found and
	// removed.
	mariadbDirPrefix = "credswap-mariadb-"
	// mariadbPidFile in that dir holds the pid of the server, next to ownerFile. testenv writes it
	// as soon as the server is forked; mariadbd's own pid file appears only later in its start.
	mariadbPidFile = "server.pid"

	mariadbReadyTimeout   = 60 * time.Second // from exec to the first root login over TCP
	mariadbStopTimeout    = 10 * time.Second // SIGTERM (normal shutdown) before SIGKILL
	mariadbLockWait       = 20               // lock_wait_timeout (s) of cleanup statements, below cleanupTimeout
	mariadbConnectTimeout = 2                // --connect-timeout (s) of a readiness login
)

// MariaDBOptions tunes a MariaDB server; the zero value is the default.
type MariaDBOptions struct {
	// ExtraConfig lines appended to the [mariadbd] group of the server's option file, after
	// testenv's own settings (so they win), e.g. "max_allowed_packet = 32M". mariadb-install-db
	// reads the same file, so settings fixed when the data dir is created (innodb_page_size,
	// lower_case_table_names) work too.
	ExtraConfig []string
}

// MariaDB is a running throwaway MariaDB server. Its fields are set by StartMariaDB and never
// change; its methods are safe for concurrent use.
type MariaDB struct {
	Host         string // "127.0.0.1"
	Port         int    // TCP port on Host
	Socket       string // path of the unix socket; the helpers log in as root over it
	DataDir      string // the server's data directory
	ConfigFile   string // the server's option file (--defaults-file), with ExtraConfig at the end
	LogFile      string // the server's error log (--log-error), also its stdout and stderr
	RootPassword string // password of root@localhost, root@'127.0.0.1' and root@'%' (mysql_native_password)
	ServerBin    string // the mariadbd program
	InstallDBBin string // the mariadb-install-db program
	ClientBin    string // the mariadb command-line client
	CA           *CA    // signed the server certificate; verify with CA.CertFile and host "localhost"

	baseDir  string        // temp dir holding everything above; removed by Stop
	rootFile string        // client option file: root over the socket, with the password
	proc     *os.Process   // mariadbd, leader of its own process group; nil when not running
	done     chan struct{} // closed once mariadbd has exited and waitErr is set; nil with proc
	waitErr  error         // mariadbd's exit status; read only after done is closed
	logOff   int64         // offset in LogFile where the current start attempt began
	stop     func() error  // sync.OnceValue of shutdown
}

// Addr returns the TCP address of the server, "127.0.0.1:port".
func (m *MariaDB) Addr() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// StartMariaDB creates a data dir with mariadb-install-db in a temp dir and starts mariadbd on
// a free loopback port.
//
// The server listens on 127.0.0.1 and on a unix socket, resolves no host names, offers TLS with a
// certificate for "localhost", 127.0.0.1 and ::1 from a fresh CA, defaults to utf8mb4, allows
// 500 connections, and trades durability for speed (no binary log,
// innodb_flush_log_at_trx_commit=0). root has a random password ([MariaDB.RootPassword]) for
// root@localhost (the socket), root@'127.0.0.1' and root@'%', all with every privilege and
// GRANT OPTION; no unlocked account is left without a password. It runs with a clean environment
// (nothing MYSQL_* is inherited) and reads no option file but its own, as root when testenv
// runs as root (--user=root). ctx bounds the start only: the server runs until [MariaDB.Stop]
// (or [Main]) stops it. Missing programs are reported as a *MissingError; start failures carry
// the tail of the server log.
func StartMariaDB(ctx context.Context, opts MariaDBOptions) (*MariaDB, error) {
	progs, err := mariadbPrograms()
	if err != nil {
		return nil, err
	}
	root := os.TempDir()
	// The socket path must fit in sockaddr_un (~107 bytes); /tmp always works.
	if len(root) > 60 {
		root = "/tmp"
	}
	removeMariaDBLeftovers(root)

	base, err := os.MkdirTemp(root, mariadbDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("testenv: create mariadb dir: %w", err)
	}
	m := &MariaDB{
		Host:         "127.0.0.1",
		Socket:       filepath.Join(base, "mariadbd.sock"),
		DataDir:      filepath.Join(base, "data"),
		ConfigFile:   filepath.Join(base, "my.cnf"),
		LogFile:      filepath.Join(base, "mariadbd.log"),
		ServerBin:    progs.server,
		InstallDBBin: progs.installDB,
		ClientBin:    progs.client,
		baseDir:      base,
		rootFile:     filepath.Join(base, "root.cnf"),
	}
	m.stop = sync.OnceValue(m.shutdown)
	if err := m.setup(ctx, opts); err != nil {
		return nil, errors.Join(err, m.Stop())
	}
	register(m)
	return m, nil
}

// setup writes the configuration, creates the data dir and starts the server, retrying with a
// new port when another process took the chosen one.
func (m *MariaDB) setup(ctx context.Context, opts MariaDBOptions) error {
	if err := os.WriteFile(filepath.Join(m.baseDir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	password, err := randomHex(16)
	if err != nil {
		return err
	}
	m.RootPassword = password

	tlsDir := filepath.Join(m.baseDir, "tls")
	if err := os.Mkdir(tlsDir, 0o700); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	if m.CA, err = NewCA(tlsDir); err != nil {
		return err
	}
	certFile, keyFile, err := m.CA.Issue(tlsDir, "localhost", "127.0.0.1", "::1")
	if err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(m.baseDir, "tmp"), 0o700); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	if err := os.WriteFile(m.ConfigFile, m.config(certFile, keyFile, opts), 0o600); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	rootConf := "# Written by credswap testenv: root over the unix socket, for the helpers.\n" +
		"[client]\n" +
		"user = root\n" +
		"password = " + m.RootPassword + "\n" +
		"socket = " + m.Socket + "\n" +
		"protocol = socket\n"
	if err := os.WriteFile(m.rootFile, []byte(rootConf), 0o600); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	if err := m.installDB(ctx); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		if m.Port, err = FreePort(); err != nil {
			return err
		}
		err := m.start(ctx)
		if err == nil || attempt == startAttempts || !m.lostPortRace() {
			return err
		}
	}
}

// config returns the server's option file. The port is not in it: it changes with each start
// attempt and goes on the command line.
func (m *MariaDB) config(certFile, keyFile string, opts MariaDBOptions) []byte {
	var b strings.Builder
	b.WriteString("# Written by credswap testenv.\n[mariadbd]\n")
	for _, kv := range [][2]string{
		{"datadir", m.DataDir},
		{"socket", m.Socket},
		{"bind-address", m.Host},
		{"pid-file", filepath.Join(m.baseDir, "mariadbd.pid")},
		{"log-error", m.LogFile},
		{"tmpdir", filepath.Join(m.baseDir, "tmp")},
		{"skip-name-resolve", ""},
		{"ssl-cert", certFile},
		{"ssl-key", keyFile},
		{"ssl-ca", m.CA.CertFile}, // for accounts with REQUIRE X509 and client certificates from CA
		{"character-set-server", "utf8mb4"},
		{"collation-server", "utf8mb4_general_ci"},
		{"max-connections", "500"},
		// Tests and proxies abort handshakes on purpose; the default (100) would block 127.0.0.1.
		{"max-connect-errors", "4294967295"},
		{"innodb-buffer-pool-size", "64M"},
		{"innodb-flush-log-at-trx-commit", "0"},
		{"skip-log-bin", ""},
	} {
		if kv[1] == "" {
			fmt.Fprintf(&b, "%s\n", kv[0])
		} else {
			fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
		}
	}
	if len(opts.ExtraConfig) > 0 {
		b.WriteString("# ExtraConfig\n")
	}
	for _, line := range opts.ExtraConfig {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// installDB creates the data dir. The bootstrap also sets root's password: mariadb-install-db's
// "normal" method leaves passwordless root accounts (localhost, the host name, 127.0.0.1, ::1),
// which must never be reachable once the server listens, so they are replaced before it first
// starts. The SQL holding the password goes through a file removed right after.
func (m *MariaDB) installDB(ctx context.Context) error {
	pw := quoteMyString(m.RootPassword)
	var sql strings.Builder
	sql.WriteString(`DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';
DELETE FROM mysql.proxies_priv WHERE User = 'root' AND Host <> 'localhost';
-- The bootstrap runs without grant tables; loading them makes account statements work.
FLUSH PRIVILEGES;
`)
	fmt.Fprintf(&sql, "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD(%s);\n", pw)
	for _, host := range []string{"127.0.0.1", "%"} {
		fmt.Fprintf(&sql, "CREATE USER root@'%s' IDENTIFIED VIA mysql_native_password USING PASSWORD(%s);\n", host, pw)
		fmt.Fprintf(&sql, "GRANT ALL PRIVILEGES ON *.* TO root@'%s' WITH GRANT OPTION;\n", host)
	}
	sqlFile := filepath.Join(m.baseDir, "bootstrap.sql")
	if err := os.WriteFile(sqlFile, []byte(sql.String()), 0o600); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	defer os.Remove(sqlFile)

	args := []string{
		"--defaults-file=" + m.ConfigFile,
		"--datadir=" + m.DataDir,
		"--auth-root-authentication-method=normal",
		"--skip-test-db",
		"--extra-file=" + sqlFile,
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	cmd := exec.CommandContext(ctx, m.InstallDBBin, args...)
	cmd.Dir = m.baseDir
	cmd.Env = m.serverEnv()
	// The script runs mariadbd --bootstrap as its child: on cancellation kill the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		// The bootstrap writes its errors to log-error, and then the script's output only says
		// it failed; the script's own errors (before the bootstrap) are in its output.
		if fi, statErr := os.Stat(m.LogFile); statErr == nil && fi.Size() > 0 {
			return fmt.Errorf("testenv: mariadb-install-db: %w; log:\n%s", err, m.LogTail())
		}
		return fmt.Errorf("testenv: mariadb-install-db: %w\n%s", err, tail(out, 20))
	}
	return nil
}

// start launches mariadbd and waits until root can log in over TCP.
func (m *MariaDB) start(ctx context.Context) error {
	logf, err := os.OpenFile(m.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("testenv: open mariadb log: %w", err)
	}
	if fi, err := logf.Stat(); err == nil {
		m.logOff = fi.Size()
	}
	args := []string{"--defaults-file=" + m.ConfigFile} // must come first; no other option file is read
	if os.Geteuid() == 0 {
		args = append(args, "--user=root") // mariadbd refuses to run as root without it
	}
	args = append(args, "--port="+strconv.Itoa(m.Port))
	cmd := exec.Command(m.ServerBin, args...)
	cmd.Dir = m.baseDir
	cmd.Env = m.serverEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own process group: a Ctrl-C aimed at the test binary's group does not reach it before
	// the test binary can stop it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setMariaDBDeathSignal(cmd.SysProcAttr)

	proc, done, err := startServer(cmd, logf, &m.waitErr)
	if err != nil {
		return fmt.Errorf("testenv: start mariadbd: %w", err)
	}
	m.proc, m.done = proc, done
	_ = os.WriteFile(filepath.Join(m.baseDir, mariadbPidFile), []byte(strconv.Itoa(m.proc.Pid)), 0o644)
	if err := m.waitReady(ctx); err != nil {
		err = errors.Join(err, m.terminate())
		m.proc, m.done = nil, nil
		return err
	}
	return nil
}

// waitReady logs in as root over TCP with the mariadb client until it works, the server exits,
// 60 s pass or ctx ends. A login refused by another server that answers on the port is retried:
// ours will exit on its bind failure. Only our server knows the random root password.
func (m *MariaDB) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, mariadbReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*mariadbConnectTimeout*time.Second)
		err := m.loginTCP(attemptCtx)
		cancelAttempt()
		if err == nil {
			return nil
		}
		select {
		case <-m.done:
			return fmt.Errorf("testenv: mariadbd exited during start (%v); log:\n%s", m.waitErr, m.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("testenv: mariadb not ready on %s: %w (last login attempt: %v); log:\n%s",
				m.Addr(), context.Cause(ctx), err, m.LogTail())
		case <-tick.C:
		}
	}
}

// loginTCP runs "SELECT 1" as root over TCP.
func (m *MariaDB) loginTCP(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, m.ClientBin,
		"--defaults-file="+m.rootFile,
		"--protocol=TCP", "--host="+m.Host, "--port="+strconv.Itoa(m.Port),
		"--connect-timeout="+strconv.Itoa(mariadbConnectTimeout),
		"--batch", "--skip-column-names", "--execute=SELECT 1",
	)
	cmd.Env = clientEnv()
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if myErr := ParseMariaDBError(out); myErr != nil {
			return myErr
		}
		return fmt.Errorf("mariadb client: %w: %s", err, tail(out, 3))
	}
	return nil
}

// lostPortRace reports whether the last start failed because the port was taken, judging by the
// server log (the only place mariadbd reports it).
func (m *MariaDB) lostPortRace() bool {
	log := m.LogTail()
	return strings.Contains(log, "Bind on TCP/IP port") || strings.Contains(log, "Address already in use")
}

// LogTail returns the last lines of the server log written since the latest start attempt.
func (m *MariaDB) LogTail() string {
	return logTail(m.LogFile, m.logOff)
}

// Restart stops the server with a normal shutdown (SIGTERM), as an operator's restart would
// (MariaDB 10.11 closes every client connection, idle or running a statement, without an error
// packet), and starts it again on the same port and data directory. Only for servers a test
// started for itself ([StartTestMariaDB]): it must not run concurrently with Stop or another
// Restart.
func (m *MariaDB) Restart(ctx context.Context) error {
	if err := m.terminate(); err != nil {
		return err
	}
	m.proc, m.done = nil, nil
	return m.start(ctx)
}

// Stop shuts the server down (SIGTERM, SIGKILL after 10 s) and removes its directories. It is
// idempotent; later calls return the first result. It reports an error when the server had to be
// killed or had exited on its own before Stop.
func (m *MariaDB) Stop() error { return m.stop() }

func (m *MariaDB) shutdown() error {
	unregister(m)
	var errs []error
	if m.done != nil {
		select {
		case <-m.done:
			errs = append(errs, fmt.Errorf("testenv: mariadbd on %s had exited before Stop (%v); log:\n%s", m.Addr(), m.waitErr, m.LogTail()))
		default:
			errs = append(errs, m.terminate())
		}
	}
	if err := os.RemoveAll(m.baseDir); err != nil {
		errs = append(errs, fmt.Errorf("testenv: remove mariadb dir: %w", err))
	}
	return errors.Join(errs...)
}

// terminate sends the process group SIGTERM (mariadbd's normal shutdown), kills it after
// mariadbStopTimeout and waits for the server to exit.
func (m *MariaDB) terminate() error {
	if m.proc == nil {
		return nil
	}
	pgid := m.proc.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("testenv: signal mariadbd: %w", err)
	}
	timer := time.NewTimer(mariadbStopTimeout)
	defer timer.Stop()
	select {
	case <-m.done:
		return nil
	case <-timer.C:
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("testenv: kill mariadbd: %w", err)
	}
	<-m.done
	return fmt.Errorf("testenv: mariadbd on %s ignored SIGTERM for %v and was killed", m.Addr(), mariadbStopTimeout)
}

// serverEnv is the whole environment of mariadb-install-db and mariadbd. Nothing MYSQL_* is
// inherited: MYSQL_TCP_PORT, MYSQL_UNIX_PORT and MYSQL_HOME would change the server's defaults.
func (m *MariaDB) serverEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + m.baseDir,
		"LANG=C",
		"TZ=UTC", // the server's system_time_zone, keeping test output stable
	}
}

// removeMariaDBLeftovers removes MariaDB dirs in root whose starter and server are both gone,
// which happens when a test binary dies without calling Stop. Dirs of live owners or live
// servers, and dirs without an owner file, are kept.
func removeMariaDBLeftovers(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, mariadbDirPrefix+"*"))
	for _, dir := range dirs {
		owner, err := readPid(filepath.Join(dir, ownerFile))
		if err != nil || owner == os.Getpid() || processAlive(owner) {
			continue
		}
		if pid, err := readPid(filepath.Join(dir, mariadbPidFile)); err == nil && processAlive(pid) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

// mariadbProgs are the paths of the MariaDB programs testenv runs.
type mariadbProgs struct{ server, installDB, client string }

// mariadbPrograms finds mariadbd, mariadb-install-db and mariadb: all in $CREDSWAP_MARIADB_BINDIR
// if set; else each on PATH, then in /usr/sbin, /usr/local/sbin, /usr/bin and /usr/local/bin
// (mariadbd lives in an sbin dir, often not on a user's PATH). It returns a *MissingError naming
// the first one missing.
func mariadbPrograms() (mariadbProgs, error) {
	names := [3]string{"mariadbd", "mariadb-install-db", "mariadb"}
	var paths [3]string
	if dir := os.Getenv(MariaDBBinDirEnv); dir != "" {
		for i, name := range names {
			paths[i] = filepath.Join(dir, name)
			if !isExecutable(paths[i]) {
				return mariadbProgs{}, &MissingError{What: fmt.Sprintf("MariaDB program %q", name), Hint: "not in " + MariaDBBinDirEnv + "=" + dir}
			}
		}
		return mariadbProgs{paths[0], paths[1], paths[2]}, nil
	}
	fallback := []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"}
	for i, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			paths[i] = p
			continue
		}
		for _, dir := range fallback {
			if p := filepath.Join(dir, name); isExecutable(p) {
				paths[i] = p
				break
			}
		}
		if paths[i] == "" {
			return mariadbProgs{}, &MissingError{
				What: fmt.Sprintf("MariaDB program %q", name),
				Hint: "looked on PATH and in " + strings.Join(fallback, ", ") + "; install the MariaDB server and client or set " + MariaDBBinDirEnv,
			}
		}
	}
	return mariadbProgs{paths[0], paths[1], paths[2]}, nil
}

// The state below ties the shared MariaDB server to the lifetime of the test binary, like the
// PostgreSQL state in shared.go; nothing outside this file touches it.
var sharedMariaDB struct {
	once sync.Once
	m    *MariaDB
	err  error
}

// MariaDBServer returns the MariaDB server shared by every test of this binary, started on first
// use. TestMain must call [Main]. If the MariaDB programs are missing the test fails when CI is
// "true" and is skipped otherwise; a server that fails to start fails the test with the tail of
// its log. Tests must not stop or reconfigure the shared server: make databases and users with
// [MariaDB.CreateDatabase] and [MariaDB.CreateUser] instead, and use [StartTestMariaDB] for a
// server of their own.
func MariaDBServer(t testing.TB) *MariaDB {
	t.Helper()
	if !mainActive.Load() {
		t.Fatal("testenv.MariaDBServer: TestMain must call testenv.Main(m) (or testenv.Run) so the shared server is stopped at the end")
	}
	sharedMariaDB.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), sharedStartTimeout)
		defer cancel()
		sharedMariaDB.m, sharedMariaDB.err = StartMariaDB(ctx, MariaDBOptions{})
	})
	if sharedMariaDB.err != nil {
		skipOrFail(t, sharedMariaDB.err)
	}
	return sharedMariaDB.m
}

// StartTestMariaDB starts a private server with [StartMariaDB] for a test that needs its own
// (for example with ExtraConfig, or to stop it), stopped at cleanup. Missing programs skip or
// fail the test as in [MariaDBServer].
func StartTestMariaDB(t testing.TB, opts MariaDBOptions) *MariaDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), sharedStartTimeout)
	defer cancel()
	m, err := StartMariaDB(ctx, opts)
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Error(err)
		}
	})
	return m
}

// quoteMyString quotes s as a MariaDB string literal under the default sql_mode (backslash
// escapes on).
func quoteMyString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`, "\x00", `\0`).Replace(s) + "'"
}

// quoteMyIdent quotes s as a MariaDB identifier.
func quoteMyIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// myAccount is the account 'user'@'%' as SQL.
func myAccount(user string) string { return quoteMyString(user) + "@'%'" }
