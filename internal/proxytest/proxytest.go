// Package proxytest runs a complete credswap proxy in-process in front of
// a throwaway PostgreSQL or MariaDB from internal/testenv, for end-to-end
// tests with real clients.
package proxytest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/credswap/credswap/admin"
	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/app"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/proxy"
)

// Proxy is a running proxy with one backend, named "pg" (Start, protocol
// postgres) or "my" (StartMySQL, protocol mysql).
type Proxy struct {
	App *app.App
	// PG is the PostgreSQL server behind a proxy made by Start.
	PG *testenv.Postgres
	// Maria is the MariaDB server behind a proxy made by StartMySQL.
	Maria  *testenv.MariaDB
	Config *config.Config
	Dir    string
	// Host and Port are where clients connect.
	Host string
	Port int
	// AdminURL is the admin API base URL.
	AdminURL string
	// ClientUser and ClientPassword are the local login.
	ClientUser, ClientPassword string
	// CredFile is the backend credential file.
	CredFile string
	// Logs holds everything the proxy logged, at debug level.
	Logs *LogBuffer
	// name is the backend's name.
	name string
}

// Option adjusts the configuration before the proxy starts.
type Option func(c *config.Config)

// Random returns a random hex string of n bytes, for passwords and names.
func Random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Start runs a proxy in front of pg whose backend credential file holds
// user and password. It is shut down when the test ends.
func Start(t testing.TB, pg *testenv.Postgres, user, password string, opts ...Option) *Proxy {
	t.Helper()
	p := start(t, "pg", "postgres", pg.Addr(), user, password, opts)
	p.PG = pg
	return p
}

// StartMySQL runs a proxy with protocol mysql in front of maria whose
// backend credential file holds user and password. It is shut down when
// the test ends.
func StartMySQL(t testing.TB, maria *testenv.MariaDB, user, password string, opts ...Option) *Proxy {
	t.Helper()
	p := start(t, "my", "mysql", maria.Addr(), user, password, opts)
	p.Maria = maria
	return p
}

// StartUpstream runs a proxy with protocol "postgres" (backend "pg") or
// "mysql" (backend "my") in front of whatever listens on upstream, such
// as an Impostor, with a backend credential file holding user and
// password. It is shut down when the test ends.
func StartUpstream(t testing.TB, protocol, upstream, user, password string, opts ...Option) *Proxy {
	t.Helper()
	name := "pg"
	if protocol == "mysql" {
		name = "my"
	}
	return start(t, name, protocol, upstream, user, password, opts)
}

func start(t testing.TB, name, protocol, upstream, user, password string, opts []Option) *Proxy {
	t.Helper()
	dir := t.TempDir()
	p := &Proxy{Dir: dir, ClientUser: "app", ClientPassword: "local-" + Random(8), CredFile: filepath.Join(dir, "credential.json"), name: name}
	if err := os.WriteFile(filepath.Join(dir, "app-password"), []byte(p.ClientPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.WriteCredential(t, user, password)
	yaml := fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
shutdown_timeout: 5s
backends:
  - name: %s
    protocol: %s
    listen: "127.0.0.1:0"
    upstream: %q
    clients:
      - {user: app, password_file: app-password}
    credential: {source: file, path: credential.json, refresh_interval: 1h}
    drain_deadline: 30s
`, name, protocol, upstream)
	cfg, err := config.Parse([]byte(yaml), config.ParseOptions{BaseDir: dir, LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatalf("proxy config: %v", err)
	}
	for _, o := range opts {
		o(cfg)
	}
	p.Config = cfg
	p.Logs = &LogBuffer{}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(p.Logs), zapcore.DebugLevel)
	a, err := app.Start(context.Background(), cfg, app.Options{Logger: zap.New(core), Version: "test"})
	if err != nil {
		t.Fatalf("starting proxy: %v", err)
	}
	p.App = a
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Shutdown(ctx)
		if t.Failed() {
			t.Logf("proxy log tail:\n%s", p.Logs.Tail(60))
			// CREDSWAP_TEST_LOG_DIR keeps the whole log of a failed test.
			if dir := os.Getenv("CREDSWAP_TEST_LOG_DIR"); dir != "" {
				f := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+"-"+Random(4)+".log")
				if err := os.WriteFile(f, []byte(p.Logs.String()), 0o600); err == nil {
					t.Logf("proxy log: %s", f)
				}
			}
		}
	})
	host, port, _ := net.SplitHostPort(a.ListenAddr(name))
	p.Host = host
	p.Port, _ = strconv.Atoi(port)
	p.AdminURL = "http://" + a.AdminAddr()
	return p
}

// WriteCredential replaces the credential file atomically (write a
// temporary file, rename it over the old one).
func (p *Proxy) WriteCredential(t testing.TB, user, password string) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"username": user, "password": password})
	tmp := p.CredFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p.CredFile); err != nil {
		t.Fatal(err)
	}
}

// Backend returns the proxy's backend runtime.
func (p *Proxy) Backend() *proxy.Backend { return p.App.Backend(p.name) }

// DSN is a go-sql-driver/mysql data source name for the local login to
// db, with params (such as "interpolateParams=false&multiStatements=true")
// appended.
func (p *Proxy) DSN(db, params string) string {
	dsn := fmt.Sprintf("%s:%s@tcp(%s)/%s", p.ClientUser, p.ClientPassword, net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), db)
	if params != "" {
		dsn += "?" + params
	}
	return dsn
}

// MariaDBArgs are the arguments for the mariadb CLI (testenv's
// MariaDB.Command) to log in through the proxy to db over TCP.
func (p *Proxy) MariaDBArgs(db string) []string {
	args := []string{"--protocol=TCP", "-h", p.Host, "-P", strconv.Itoa(p.Port), "-u", p.ClientUser, "-p" + p.ClientPassword}
	if db != "" {
		args = append(args, "-D", db)
	}
	return args
}

// ConnString is a keyword/value connection string for the local login.
func (p *Proxy) ConnString(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable", p.Host, p.Port, p.ClientUser, p.ClientPassword, db)
}

// PgxConfig is a pgx configuration for the local login to db.
func (p *Proxy) PgxConfig(t testing.TB, db string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.ConnString(db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Fallbacks = nil
	return cfg
}

// Connect opens a pgx connection through the proxy, closed at cleanup.
func (p *Proxy) Connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, p.PgxConfig(t, db))
	if err != nil {
		t.Fatalf("connecting through the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Env is the environment for psql or pgbench (testenv.Command) to connect
// through the proxy.
func (p *Proxy) Env(db string) []string {
	return []string{
		"PGHOST=" + p.Host, "PGPORT=" + strconv.Itoa(p.Port), "PGUSER=" + p.ClientUser,
		"PGPASSWORD=" + p.ClientPassword, "PGDATABASE=" + db, "PGSSLMODE=disable",
	}
}

// Status fetches /v1/status.
func (p *Proxy) Status(t testing.TB) admin.StatusResponse {
	t.Helper()
	var st admin.StatusResponse
	p.AdminDo(t, http.MethodGet, "/v1/status", &st)
	return st
}

// AdminDo calls the admin API and decodes the JSON answer into out.
func (p *Proxy) AdminDo(t testing.TB, method, path string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, p.AdminURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(admin.MarkerHeader, "1") // as the CLI does; required on POST and PUT
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// Metric returns the value of one series of /metrics, named exactly as
// exposed (`credswap_client_errors_total{backend="pg",code="internal"}`),
// or -1 if the proxy does not export it.
func (p *Proxy) Metric(t testing.TB, series string) float64 {
	t.Helper()
	resp, err := http.Get(p.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return -1
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LogBuffer is a concurrency-safe log sink.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Tail returns the last n lines.
func (l *LogBuffer) Tail(n int) string {
	lines := bytes.Split([]byte(l.String()), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// RotateTo writes a new credential to the file and waits until the proxy
// adopted it.
func (p *Proxy) RotateTo(t testing.TB, user, password string) {
	t.Helper()
	before := p.Backend().Store.Current().N
	p.WriteCredential(t, user, password)
	Eventually(t, 5*time.Second, "adoption of "+user, func() bool { return p.Backend().Store.Current().N > before })
}

// WaitSwitched waits until no session is left on a generation below the
// current one.
func (p *Proxy) WaitSwitched(t testing.TB, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "every session to move to the current generation", func() bool {
		cur := p.Backend().Store.Current()
		return cur != nil && len(p.Backend().Sessions.Behind(cur.N)) == 0 && p.Backend().Target().N == cur.N
	})
}

// Settled waits up to timeout until the proxy adopted its latest
// credential, which is not next's, and moved every session to it: the
// point at which a rotation may change next's password, as credswap's own
// alternating-users rotation waits for the drain before it touches the
// other user. It reports whether that point was reached.
func (p *Proxy) Settled(next string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		b := p.Backend()
		cur, target := b.Store.Current(), b.Target()
		if cur != nil && target != nil && cur.Cred.Username != next && target.N == cur.N && len(b.Sessions.Behind(cur.N)) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Alternate rotates the credential every interval between users[0] and
// users[1], starting with users[1]: setPassword gives the next user a new
// random password in the database, then the credential file gets it. stop
// ends the rotations, waits until the proxy adopted the last credential
// written (so that what the status then calls current and fallback is
// final), and returns how many rotations ran.
func (p *Proxy) Alternate(t testing.TB, interval time.Duration, users [2]string, setPassword func(user, password string)) (stop func() int) {
	done := make(chan struct{})
	count := make(chan int, 1)
	var last string // the last password written
	go func() {
		n := 0
		defer func() { count <- n }()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			next := users[(n+1)%2]
			pw := "pw-" + Random(8)
			setPassword(next, pw)
			p.WriteCredential(t, next, pw)
			last = pw
			n++
		}
	}()
	return func() int {
		close(done)
		n := <-count
		if last != "" {
			Eventually(t, 30*time.Second, "adoption of the last credential written", func() bool {
				cur := p.Backend().Store.Current()
				return cur != nil && cur.Cred.Password == last
			})
		}
		return n
	}
}
