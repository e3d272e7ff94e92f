package clientmatrix_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// The client programs and the tests agree on this contract. A program
// reads its connection and its task from the environment:
//
//	CM_HOST, CM_PORT, CM_USER, CM_PASSWORD, CM_DATABASE  the local login through credswap
//	CM_BACKEND_USERS     the backend users current_user may be, comma-separated
//	CM_SECONDS           repeat the work for at least this long (0 in the plain run)
//	CM_MIN_ITERATIONS    and at least this many times
//	CM_MIN_USER_CHANGES  and until current_user has changed this often on the long-lived connection
//	CM_MAX_SECONDS       but stop after this long, changes or not
//	CM_PAUSE_MS          pause between two iterations
//
// It checks every answer itself and exits non-zero on a mismatch. Its last
// line of output is
//
//	RESULT client=NAME iterations=N users=U1,U2,...
//
// where users are the backend users its long-lived connection saw, in
// order, each change of current_user starting a new entry. The psql and
// mariadb CLI scripts are driven by the test, which sends them one
// iteration at a time and waits for "ITERATION n OK <current user>".
const (
	// rotateEvery is how often the credential alternates in the rotating run.
	rotateEvery = time.Second
	// rotatingFor is how long a client works at least while the credential
	// alternates; it goes on until it has seen minUserChanges, for at most
	// rotatingMax (on a loaded machine an iteration can take seconds).
	rotatingFor = 6 * time.Second
	rotatingMax = time.Minute
	// minUserChanges is how often the long-lived connection must see
	// current_user change while the credential alternates.
	minUserChanges = 2
	// minIterations is how often a client does its work at least.
	minIterations = 2
	// rotatingPause spaces iterations in the rotating run, so the large
	// values do not saturate the two cores the whole package shares.
	rotatingPause = 100 * time.Millisecond
	// settleTimeout bounds the wait of a rotation for the previous one's
	// drain (see settled).
	settleTimeout = 20 * time.Second
	// clientTimeout bounds one run of a client program.
	clientTimeout = 2 * time.Minute
	// lineTimeout bounds the wait for one iteration of a CLI script.
	lineTimeout = 45 * time.Second
)

// client is one driver of the matrix.
type client struct {
	name string
	// prepare finds the client's programs, skipping the test when one is
	// missing (failing it when CI is "true"), and returns how to run it.
	prepare func(t *testing.T) runner
	// nativeAuth makes the local login use mysql_native_password
	// (libmariadb clients cannot do caching_sha2_password over plaintext).
	nativeAuth bool
	// known holds, by run ("plain" or "rotating"), a credswap failure the
	// run is known to hit; the run is skipped with it.
	known map[string]string
}

// runner runs one client program against tg until it ends and returns
// its output (stdout and stderr).
type runner func(ctx context.Context, t *testing.T, tg *target, w work) (string, error)

// work is what one run asks of a client program.
type work struct {
	seconds    time.Duration
	maxSeconds time.Duration
	iterations int
	changes    int
	pause      time.Duration
}

// target is a proxy in front of a fresh database with the matrix's schema,
// whose credential may alternate between two backend users.
type target struct {
	p     *proxytest.Proxy
	db    string
	users [2]string
	// setPassword gives a backend user a new password in the database.
	setPassword func(user, password string) error
	secrets     *secrets
}

// env is the contract's environment for a client program doing w.
func (tg *target) env(w work) []string {
	return []string{
		"CM_HOST=" + tg.p.Host,
		"CM_PORT=" + strconv.Itoa(tg.p.Port),
		"CM_USER=" + tg.p.ClientUser,
		"CM_PASSWORD=" + tg.p.ClientPassword,
		"CM_DATABASE=" + tg.db,
		"CM_BACKEND_USERS=" + tg.users[0] + "," + tg.users[1],
		"CM_SECONDS=" + strconv.FormatFloat(w.seconds.Seconds(), 'f', -1, 64),
		"CM_MIN_ITERATIONS=" + strconv.Itoa(w.iterations),
		"CM_MIN_USER_CHANGES=" + strconv.Itoa(w.changes),
		"CM_MAX_SECONDS=" + strconv.FormatFloat(w.maxSeconds.Seconds(), 'f', -1, 64),
		"CM_PAUSE_MS=" + strconv.FormatInt(w.pause.Milliseconds(), 10),
	}
}

// baseEnv is the whole inherited environment of a client program: PATH,
// HOME, a UTF-8 locale and UTC, nothing PG*, MYSQL* or JAVA*. Python
// writes no bytecode into testdata/.
func baseEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LANG=C.UTF-8", "TZ=UTC", "PYTHONDONTWRITEBYTECODE=1"}
}

// secrets are the passwords of one test. None may show in the proxy's log
// or a client's output; output is redacted before a test prints it.
type secrets struct {
	mu   sync.Mutex
	list []string
	what []string
}

func (s *secrets) add(what, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, secret)
	s.what = append(s.what, what)
}

// found names the secrets that occur in text.
func (s *secrets) found(text string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for i, sec := range s.list {
		if strings.Contains(text, sec) {
			names = append(names, s.what[i])
		}
	}
	return names
}

// redact replaces every secret in text.
func (s *secrets) redact(text string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sec := range s.list {
		text = strings.ReplaceAll(text, sec, "<redacted>")
	}
	return text
}

// runMatrix runs every client of clients twice, plainly and while the
// credential alternates, each run against a target of its own.
func runMatrix(t *testing.T, clients []client, newTarget func(t *testing.T, c client) *target) {
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			run := c.prepare(t)
			for _, rotating := range []bool{false, true} {
				name := "plain"
				if rotating {
					name = "rotating"
				}
				t.Run(name, func(t *testing.T) {
					if why := c.known[name]; why != "" {
						t.Skip("known: " + why)
					}
					checkRun(t, c.name, newTarget(t, c), run, rotating)
				})
			}
		})
	}
}

// checkRun runs the client once against tg and checks its result, the
// proxy's log and, when rotating, that the credential alternated and the
// client's long-lived connection followed it.
func checkRun(t *testing.T, name string, tg *target, run runner, rotating bool) {
	w := work{iterations: minIterations, maxSeconds: rotatingMax}
	if rotating {
		w.seconds, w.changes, w.pause = rotatingFor, minUserChanges, rotatingPause
	}
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	var stop func() int
	if rotating {
		stop = tg.p.Alternate(t, rotateEvery, tg.users, func(user, password string) {
			tg.secrets.add("a rotated password of "+user, password)
			if !tg.p.Settled(user, settleTimeout) {
				t.Logf("rotating to %s although the proxy has not moved every session to the previous credential after %s", user, settleTimeout)
			}
			if err := tg.setPassword(user, password); err != nil {
				t.Errorf("changing the password of %s: %v", user, err)
			}
		})
	}
	start := time.Now()
	out, err := run(ctx, t, tg, w)
	elapsed := time.Since(start)
	rotations := 0
	if stop != nil {
		rotations = stop()
	}
	shown := tg.secrets.redact(out)
	if err != nil {
		t.Fatalf("%s failed after %s: %v\n%s", name, elapsed.Round(time.Millisecond), err, lastLines(shown, 80))
	}
	if leaked := tg.secrets.found(out); len(leaked) > 0 {
		t.Errorf("%s printed %s", name, strings.Join(leaked, ", "))
	}
	logs := tg.p.Logs.String()
	if leaked := tg.secrets.found(logs); len(leaked) > 0 {
		t.Errorf("the proxy logged %s", strings.Join(leaked, ", "))
	}
	if strings.Contains(logs, "session switch failed") {
		t.Errorf("the proxy logged failed switches:\n%s", tg.secrets.redact(grepLines(logs, "session switch failed")))
	}
	res, err := parseResult(out)
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, lastLines(shown, 40))
	}
	if res.client != name {
		t.Errorf("RESULT names client %q, want %q", res.client, name)
	}
	if res.iterations < w.iterations {
		t.Errorf("%s did its work %d times, want at least %d", name, res.iterations, w.iterations)
	}
	for _, u := range res.users {
		if u != tg.users[0] && u != tg.users[1] {
			t.Errorf("%s saw current_user %q, not one of the backend users %v", name, u, tg.users)
		}
	}
	if !rotating {
		if !slices.Equal(res.users, []string{tg.users[0]}) {
			t.Errorf("%s saw current_user %v without rotations, want only %s", name, res.users, tg.users[0])
		}
		t.Logf("%s: %d iterations in %s", name, res.iterations, elapsed.Round(time.Millisecond))
		return
	}
	if changes := len(res.users) - 1; changes < w.changes {
		t.Errorf("%s's connection saw current_user change %d times (%v), want at least %d", name, changes, res.users, w.changes)
	}
	if want := int(rotatingFor/rotateEvery) - 2; rotations < want {
		t.Errorf("%d rotations ran, want at least %d", rotations, want)
	}
	st := tg.p.Status(t).Backends[0]
	if st.Credential.Current.Generation < uint64(rotations/2) {
		t.Errorf("only %d generations adopted for %d rotations", st.Credential.Current.Generation, rotations)
	}
	metrics := scrape(t, tg.p)
	ok, failed := switches(metrics, "ok"), switches(metrics, "failed")
	if ok < float64(w.changes) || failed != 0 {
		t.Errorf("session switches: ok=%v failed=%v, want at least %d ok and none failed", ok, failed, w.changes)
	}
	t.Logf("%s: %d iterations in %s, current_user %s, %d rotations, %v switches", name, res.iterations,
		elapsed.Round(time.Millisecond), strings.Join(res.users, " → "), rotations, ok)
}

// result is the RESULT line of a client program.
type result struct {
	client     string
	iterations int
	users      []string
}

var resultLine = regexp.MustCompile(`(?m)^RESULT client=(\S+) iterations=(\d+) users=(\S*)\s*$`)

// parseResult reads the last RESULT line of out.
func parseResult(out string) (result, error) {
	all := resultLine.FindAllStringSubmatch(out, -1)
	if all == nil {
		return result{}, errors.New("no RESULT line in the output")
	}
	m := all[len(all)-1]
	n, _ := strconv.Atoi(m[2])
	var users []string
	if m[3] != "" {
		users = strings.Split(m[3], ",")
	}
	return result{client: m[1], iterations: n, users: users}, nil
}

// scrape fetches the proxy's metrics.
func scrape(t *testing.T, p *proxytest.Proxy) string {
	t.Helper()
	resp, err := http.Get(p.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var switchesLine = regexp.MustCompile(`(?m)^credswap_session_switches_total\{[^}]*result="([a-z_]+)"[^}]*\} (\S+)$`)

// switches sums credswap_session_switches_total for result.
func switches(metrics, result string) float64 {
	var sum float64
	for _, m := range switchesLine.FindAllStringSubmatch(metrics, -1) {
		if m[1] == result {
			v, _ := strconv.ParseFloat(m[2], 64)
			sum += v
		}
	}
	return sum
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// missing skips the test because what is not installed, or fails it when
// CI is "true".
func missing(t *testing.T, what, hint string) {
	t.Helper()
	if testenv.InCI() {
		t.Fatalf("%s is missing (%s)", what, hint)
	}
	t.Skipf("%s is missing (%s); skipping (set CI=true to fail instead)", what, hint)
}

// testdata returns the absolute path of a file in testdata/.
func testdata(t *testing.T, name string) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// readTestdata returns the contents of a file in testdata/.
func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(testdata(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// programRunner runs argv (a client program that does the whole contract
// itself) in dir.
func programRunner(dir string, argv ...string) runner {
	return func(ctx context.Context, t *testing.T, tg *target, w work) (string, error) {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Dir = dir
		cmd.Env = append(baseEnv(), tg.env(w)...)
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}

// python returns a Python 3 interpreter that can import module: Debian's
// /usr/bin/python3 first (where the python3-* packages install), then
// python3 on PATH.
func python(t *testing.T, module, pkg string) string {
	t.Helper()
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil && p != candidates[0] {
		candidates = append(candidates, p)
	}
	for _, py := range candidates {
		if err := exec.Command(py, "-c", "import "+module).Run(); err == nil {
			return py
		}
	}
	missing(t, "Python module "+module, "install the Debian package "+pkg+" (scripts/deps.sh)")
	return ""
}

// pythonClient is a client program in testdata/python run by a Python
// that has module.
func pythonClient(script, module, pkg string) func(t *testing.T) runner {
	return func(t *testing.T) runner {
		py := python(t, module, pkg)
		dir := testdata(t, "python")
		return programRunner(dir, py, filepath.Join(dir, script))
	}
}

// nodeClient is a client program in testdata/node, which needs the npm
// package pkg installed there.
func nodeClient(script, pkg string) func(t *testing.T) runner {
	return func(t *testing.T) runner {
		node, err := exec.LookPath("node")
		if err != nil {
			missing(t, "node", "install the Debian package nodejs (scripts/deps.sh)")
		}
		dir := testdata(t, "node")
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			missing(t, "the npm package "+pkg, "run npm ci in "+dir+" (scripts/deps.sh does)")
		}
		return programRunner(dir, node, filepath.Join(dir, script))
	}
}

// javaClient compiles testdata/java/ClientMatrix.java into a temporary
// directory with the JDBC driver jar and returns a runner of its main
// class for driver ("postgres" or "mariadb").
func javaClient(jar, pkg, driver string) func(t *testing.T) runner {
	return func(t *testing.T) runner {
		javac, err := exec.LookPath("javac")
		if err != nil {
			missing(t, "javac", "install the Debian package default-jdk-headless (scripts/deps.sh)")
		}
		java, err := exec.LookPath("java")
		if err != nil {
			missing(t, "java", "install the Debian package default-jdk-headless (scripts/deps.sh)")
		}
		if _, err := os.Stat(jar); err != nil {
			missing(t, jar, "install the Debian package "+pkg+" (scripts/deps.sh)")
		}
		classes := t.TempDir()
		src := testdata(t, "java/ClientMatrix.java")
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, javac, "-d", classes, "-cp", jar, src)
		cmd.Env = baseEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("javac: %v\n%s", err, out)
		}
		return programRunner(classes, java, "-cp", classes+string(os.PathListSeparator)+jar, "ClientMatrix", driver)
	}
}

// script drives a command-line client that reads statements on stdin: the
// test sends the setup, then one iteration at a time, waiting for the
// script's "ITERATION n OK" line, and finally the finish.
type script struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	mu     sync.Mutex
	output strings.Builder
	done   chan struct{} // closed when stdout is drained
}

// startScript starts cmd with its stdin and stdout connected to the test.
// filter, if not nil, sees every line the client prints and returns what
// goes into the output in its place.
func startScript(cmd *exec.Cmd, filter func(line string) string) (*script, error) {
	s := &script{cmd: cmd, lines: make(chan string, 64), done: make(chan struct{})}
	var err error
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.output.Write(p)
	})
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(s.done)
		defer close(s.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			if filter != nil {
				line = filter(line)
			}
			s.mu.Lock()
			s.output.WriteString(line + "\n")
			s.mu.Unlock()
			s.lines <- line // waitFor, or finish's drain, reads every line
		}
	}()
	return s, nil
}

// send writes text to the client's stdin.
func (s *script) send(text string) error {
	_, err := io.WriteString(s.stdin, text)
	return err
}

// waitFor waits until the client prints a line starting with prefix and
// returns the rest of it.
func (s *script) waitFor(prefix string) (string, error) {
	timer := time.NewTimer(lineTimeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				return "", fmt.Errorf("the client ended before printing %q", prefix)
			}
			if rest, found := strings.CutPrefix(line, prefix); found {
				return rest, nil
			}
		case <-timer.C:
			return "", fmt.Errorf("no %q within %s", prefix, lineTimeout)
		}
	}
}

// finish closes stdin, waits for the client to exit and returns
// everything it printed.
func (s *script) finish() (string, error) {
	s.stdin.Close()
	go func() {
		for range s.lines { // drain, so the reader never blocks
		}
	}()
	err := s.cmd.Wait()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output.String(), err
}

// drive runs the contract's loop on s: setup, then iteration(i) until w is
// done (each iteration ends with the line "ITERATION i OK <current user>"),
// then finish, where the script checks the users it saw itself.
func drive(s *script, w work, setup string, iteration func(i int) string, finish string) (string, error) {
	err := s.send(setup)
	start := time.Now()
	var users []string
	for i := 1; err == nil; i++ {
		if err = s.send(iteration(i)); err != nil {
			break
		}
		var user string
		if user, err = s.waitFor(fmt.Sprintf("ITERATION %d OK ", i)); err != nil {
			break
		}
		if len(users) == 0 || users[len(users)-1] != user {
			users = append(users, user)
		}
		elapsed := time.Since(start)
		if (i >= w.iterations && elapsed >= w.seconds && len(users)-1 >= w.changes) || elapsed >= w.maxSeconds {
			break
		}
		time.Sleep(w.pause)
	}
	if err == nil {
		err = s.send(finish)
	}
	out, waitErr := s.finish()
	return out, errors.Join(err, waitErr)
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
