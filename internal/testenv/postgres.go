package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// dirPrefix names the temp dir of every server, so leftovers can be found and removed.
	dirPrefix = "credswap-pg-"
	// ownerFile in that dir holds the pid of the process that started the server.
	ownerFile = "owner.pid"

	startAttempts = 3                // port races retried
	readyTimeout  = 30 * time.Second // from postgres start to the first successful login
	stopTimeout   = 10 * time.Second // fast shutdown before SIGKILL
	logTailBytes  = 4096
)

// PostgresOptions tunes a server; the zero value is the default.
type PostgresOptions struct {
	// ExtraConfig lines appended to postgresql.conf, after testenv's own settings (so they win).
	ExtraConfig []string
	// HostAuth is the pg_hba method for TCP logins (default scram-sha-256), e.g. "md5", which
	// answers with SCRAM for users whose password is stored as SCRAM and with md5 otherwise.
	HostAuth string
}

// Postgres is a running throwaway PostgreSQL server. Its fields are set by StartPostgres and
// never change; its methods are safe for concurrent use.
type Postgres struct {
	Host          string // "127.0.0.1"
	Port          int    // TCP port on Host
	SocketDir     string // directory of the unix socket (local connections are trusted)
	BinDir        string // directory of the PostgreSQL programs that run the server
	DataDir       string // the cluster's data directory
	LogFile       string // the server's log (stderr), inside DataDir
	SuperUser     string // "postgres"
	SuperPassword string // the superuser's password (scram-sha-256), for TCP logins
	CA            *CA    // signed the server certificate; verify with CA.CertFile and ServerName "localhost"

	baseDir string         // temp dir holding everything above; removed by Stop
	account *serverAccount // OS account the server runs as
	proc    *os.Process    // the postmaster; nil when not running (set by start, before p is shared)
	done    chan struct{}  // closed once the postmaster has exited and waitErr is set; nil with proc
	waitErr error          // postmaster's exit status; read only after done is closed
	logOff  int64          // offset in LogFile where the current start attempt began
	stop    func() error   // sync.OnceValue of shutdown
}

// Addr returns the TCP address of the server, "127.0.0.1:port".
func (p *Postgres) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// Bin returns the path of a program of the server's PostgreSQL installation, such as "psql" or
// "pgbench".
func (p *Postgres) Bin(name string) string { return filepath.Join(p.BinDir, name) }

// StartPostgres initializes a new cluster in a temp dir and starts it on a free loopback port.
//
// The server has ssl=on with a certificate for "localhost", 127.0.0.1 and ::1 from a fresh CA,
// password_encryption=scram-sha-256 and pg_hba rules `local all all trust`, `host all all
// 127.0.0.1/32 scram-sha-256` and `host all all ::1/128 scram-sha-256` (opts.HostAuth replaces
// scram-sha-256); it trades durability for
// speed (fsync=off). ctx bounds the start only: the server runs until [Postgres.Stop] (or [Main])
// stops it. Missing binaries or a missing "postgres" OS user (when root) are reported as a
// *MissingError. Start failures carry the tail of the server log.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	binDir, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	for _, prog := range []string{"initdb", "postgres"} {
		if !isExecutable(filepath.Join(binDir, prog)) {
			return nil, &MissingError{What: fmt.Sprintf("PostgreSQL server program %q", prog), Hint: "not in " + binDir}
		}
	}
	account, err := serverUser()
	if err != nil {
		return nil, err
	}
	root := os.TempDir()
	// The socket path must fit in sockaddr_un (~107 bytes) and the server account must be able to
	// reach the dir; /tmp always works.
	if len(root) > 60 || !account.canTraverse(root) {
		root = "/tmp"
	}
	removeLeftovers(root)

	base, err := os.MkdirTemp(root, dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("testenv: create server dir: %w", err)
	}
	p := &Postgres{
		Host:      "127.0.0.1",
		SocketDir: filepath.Join(base, "run"),
		BinDir:    binDir,
		DataDir:   filepath.Join(base, "data"),
		SuperUser: "postgres",
		baseDir:   base,
		account:   account,
	}
	p.LogFile = filepath.Join(p.DataDir, "postgres.log")
	p.stop = sync.OnceValue(p.shutdown)
	if err := p.setup(ctx, opts); err != nil {
		return nil, errors.Join(err, p.Stop())
	}
	register(p)
	return p, nil
}

// setup runs initdb, writes the configuration and starts the server, retrying with a new port
// when another process took the chosen one.
func (p *Postgres) setup(ctx context.Context, opts PostgresOptions) error {
	if err := os.WriteFile(filepath.Join(p.baseDir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	password, err := randomHex(16)
	if err != nil {
		return err
	}
	p.SuperPassword = password
	if err := p.initdb(ctx); err != nil {
		return err
	}

	tlsDir := filepath.Join(p.baseDir, "tls")
	if err := os.Mkdir(tlsDir, 0o755); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	if p.CA, err = NewCA(tlsDir); err != nil {
		return err
	}
	certFile, keyFile, err := p.CA.Issue(tlsDir, "localhost", "127.0.0.1", "::1")
	if err != nil {
		return err
	}
	if err := os.Mkdir(p.SocketDir, 0o755); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	hostAuth := opts.HostAuth
	if hostAuth == "" {
		hostAuth = "scram-sha-256"
	}
	hba := "# Written by credswap testenv.\n" +
		"local all all trust\n" +
		"host all all 127.0.0.1/32 " + hostAuth + "\n" +
		"host all all ::1/128 " + hostAuth + "\n"
	if err := os.WriteFile(filepath.Join(p.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	if err := p.account.chown(p.baseDir); err != nil {
		return fmt.Errorf("testenv: hand server dir to %s: %w", p.account.name, err)
	}
	confFile := filepath.Join(p.DataDir, "postgresql.conf")
	initConf, err := os.ReadFile(confFile)
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}

	for attempt := 1; ; attempt++ {
		if p.Port, err = FreePort(); err != nil {
			return err
		}
		conf := append(bytes.Clone(initConf), p.config(certFile, keyFile, opts)...)
		if err := os.WriteFile(confFile, conf, 0o600); err != nil {
			return fmt.Errorf("testenv: %w", err)
		}
		err := p.start(ctx)
		if err == nil || attempt == startAttempts || !p.lostPortRace() {
			return err
		}
	}
}

// initdb creates the cluster; the superuser password goes through a file removed right after.
func (p *Postgres) initdb(ctx context.Context) error {
	pwFile := filepath.Join(p.baseDir, "pwfile")
	if err := os.WriteFile(pwFile, []byte(p.SuperPassword+"\n"), 0o600); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	defer os.Remove(pwFile)
	if err := p.account.chown(p.baseDir); err != nil {
		return fmt.Errorf("testenv: hand server dir to %s: %w", p.account.name, err)
	}
	locale := "--no-locale"
	if hasCUTF8Locale() {
		locale = "--locale=C.UTF-8"
	}
	cmd := exec.CommandContext(ctx, p.Bin("initdb"),
		"-D", p.DataDir, "-U", p.SuperUser, "--pwfile="+pwFile,
		"--auth-local=trust", "--auth-host=scram-sha-256",
		"-E", "UTF8", locale,
		"--no-sync", // the cluster is thrown away; syncing it costs seconds
	)
	cmd.Dir = p.baseDir
	cmd.Env = p.serverEnv()
	cmd.SysProcAttr = p.account.sysProcAttr()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: initdb as %s: %w\n%s", p.account.name, err, tail(out, 20))
	}
	return nil
}

// config returns testenv's postgresql.conf settings for the current port.
func (p *Postgres) config(certFile, keyFile string, opts PostgresOptions) []byte {
	var b strings.Builder
	b.WriteString("\n# Added by credswap testenv.\n")
	for _, kv := range [][2]string{
		{"listen_addresses", quoteConf(p.Host)},
		{"port", strconv.Itoa(p.Port)},
		{"unix_socket_directories", quoteConf(p.SocketDir)},
		{"ssl", "on"},
		{"ssl_cert_file", quoteConf(certFile)},
		{"ssl_key_file", quoteConf(keyFile)},
		{"password_encryption", "'scram-sha-256'"},
		{"max_connections", "300"},
		{"fsync", "off"},
		{"synchronous_commit", "off"},
		{"full_page_writes", "off"},
		{"shared_buffers", "64MB"},
		{"logging_collector", "off"},
		{"log_destination", "'stderr'"},
		{"log_line_prefix", "'%m [%p] %q%u@%d '"},
	} {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	for _, line := range opts.ExtraConfig {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// start launches the postmaster and waits until it accepts a login over TCP.
func (p *Postgres) start(ctx context.Context) error {
	logf, err := os.OpenFile(p.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testenv: open server log: %w", err)
	}
	if fi, err := logf.Stat(); err == nil {
		p.logOff = fi.Size()
	}
	cmd := exec.Command(p.Bin("postgres"), "-D", p.DataDir)
	cmd.Dir = p.baseDir
	cmd.Env = p.serverEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = p.account.sysProcAttr()
	setParentDeathSignal(cmd.SysProcAttr)

	proc, done, err := startServer(cmd, logf, &p.waitErr)
	if err != nil {
		return fmt.Errorf("testenv: start postgres: %w", err)
	}
	p.proc, p.done = proc, done
	if err := p.waitReady(ctx); err != nil {
		err = errors.Join(err, p.terminate())
		p.proc, p.done = nil, nil
		return err
	}
	return nil
}

// waitReady logs in as the superuser over TCP until it works, the server exits, 30 s pass or ctx
// ends. A login that fails because another server answers on the port (wrong password) is retried:
// our server will exit on its bind failure.
func (p *Postgres) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cfg, err := connConfig(p.Host, p.Port, p.SuperUser, p.SuperPassword, "postgres", nil)
	if err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.ConnectConfig(attemptCtx, &cfg.Config)
		cancelAttempt()
		if err == nil {
			_ = conn.Close(ctx) // the login worked; a failed goodbye does not make the server unready
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("testenv: postgres exited during start (%v); log:\n%s", p.waitErr, p.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("testenv: postgres not ready on %s: %w (last login attempt: %v); log:\n%s",
				p.Addr(), context.Cause(ctx), err, p.LogTail())
		case <-tick.C:
		}
	}
}

// lostPortRace reports whether the last start failed because the port was taken, judging by the
// server log (the only place the postmaster reports it).
func (p *Postgres) lostPortRace() bool {
	log := p.LogTail()
	return strings.Contains(log, "could not bind") || strings.Contains(log, "could not create any TCP/IP sockets")
}

// LogTail returns the last lines of the server log written since the latest start attempt.
func (p *Postgres) LogTail() string {
	return logTail(p.LogFile, p.logOff)
}

// Restart stops the server with a fast shutdown, as an operator's restart
// would (every session gets FATAL 57P01), and starts it again on the same
// port and data directory. Only for servers a test started for itself: it
// must not run concurrently with Stop or another Restart.
func (p *Postgres) Restart(ctx context.Context) error {
	if err := p.terminate(); err != nil {
		return err
	}
	p.proc, p.done = nil, nil
	return p.start(ctx)
}

// Stop shuts the server down (fast shutdown, SIGKILL after 10 s) and removes its directories.
// It is idempotent; later calls return the first result. It reports an error when the server
// had to be killed or had exited on its own before Stop.
func (p *Postgres) Stop() error { return p.stop() }

func (p *Postgres) shutdown() error {
	unregister(p)
	var errs []error
	if p.done != nil {
		select {
		case <-p.done:
			errs = append(errs, fmt.Errorf("testenv: postgres on %s had exited before Stop (%v); log:\n%s", p.Addr(), p.waitErr, p.LogTail()))
		default:
			errs = append(errs, p.terminate())
		}
	}
	if err := os.RemoveAll(p.baseDir); err != nil {
		errs = append(errs, fmt.Errorf("testenv: remove server dir: %w", err))
	}
	return errors.Join(errs...)
}

// terminate asks the postmaster for a fast shutdown, kills it after stopTimeout and waits for it
// to exit.
func (p *Postgres) terminate() error {
	if p.proc == nil {
		return nil
	}
	if err := p.proc.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("testenv: signal postgres: %w", err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	if err := p.proc.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("testenv: kill postgres: %w", err)
	}
	<-p.done
	return fmt.Errorf("testenv: postgres on %s ignored fast shutdown for %v and was killed", p.Addr(), stopTimeout)
}

// serverEnv is the whole environment of initdb and postgres: nothing PG* is inherited.
func (p *Postgres) serverEnv() []string {
	home := p.account.home
	if home == "" {
		home = p.baseDir
	}
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"LANG=C",
		"TZ=UTC", // initdb writes it as the cluster's timezone, keeping test output stable
	}
}

// hasCUTF8Locale reports whether the C.UTF-8 locale is installed.
func hasCUTF8Locale() bool {
	out, err := exec.Command("locale", "-a").Output()
	if err != nil {
		return false
	}
	for _, l := range strings.Fields(string(out)) {
		if strings.EqualFold(strings.ReplaceAll(l, "-", ""), "c.utf8") {
			return true
		}
	}
	return false
}

// removeLeftovers removes server dirs in root whose starter and server are both gone, which
// happens when a test binary dies without calling Stop. Dirs of live owners or live servers, and
// dirs without an owner file, are kept.
func removeLeftovers(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, dirPrefix+"*"))
	for _, dir := range dirs {
		owner, err := readPid(filepath.Join(dir, ownerFile))
		if err != nil || owner == os.Getpid() || processAlive(owner) {
			continue
		}
		if pm, err := readPid(filepath.Join(dir, "data", "postmaster.pid")); err == nil && processAlive(pm) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

// readPid reads the decimal number on the first line of file.
func readPid(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// startServer starts cmd and closes logf (the child holds its own
// descriptor). The parent-death signal in cmd.SysProcAttr is tied to the
// OS thread that forks the child, not to the process: a goroutine locks a
// thread, starts the server from it and keeps it (unshared) until the
// server exits, so the signal fires only when the whole test binary dies.
// When the server exits, *waitErr is set and done is closed.
func startServer(cmd *exec.Cmd, logf *os.File, waitErr *error) (*os.Process, chan struct{}, error) {
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		logf.Close()
		started <- err
		if err != nil {
			return
		}
		*waitErr = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return nil, nil, err
	}
	return cmd.Process, done, nil
}

// logTail returns the last 30 lines of the log file path written after
// offset off (where the server's current start attempt began).
func logTail(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off = max(off, fi.Size()-logTailBytes)
	buf, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tail(buf, 30)
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// quoteConf quotes s as a postgresql.conf string value.
func quoteConf(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// randomHex returns n random bytes in lowercase hex.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("testenv: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}
