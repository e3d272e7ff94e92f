package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestVersionStamped checks what `credswap version` prints for values
// stamped with -ldflags -X (scripts/image.sh stamps these three).
func TestVersionStamped(t *testing.T) {
	saved := [3]string{version, commit, date}
	t.Cleanup(func() { version, commit, date = saved[0], saved[1], saved[2] })
	version, commit, date = "v1.2.3", "0123456789abcdef0123456789abcdef01234567", "2026-11-25T18:00:00Z"
	out, err := cli(t, "version")
	want := fmt.Sprintf("credswap v1.2.3 (commit 0123456789abcdef0123456789abcdef01234567, built 2026-11-25T18:00:00Z, %s %s/%s)\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if err != nil || out != want {
		t.Fatalf("version: %v\n got %q\nwant %q", err, out, want)
	}
	if b := binaryInfo(); b.Version != "v1.2.3" || b.GoVersion != runtime.Version() || buildVersion() != "v1.2.3" {
		t.Fatalf("binaryInfo: %+v, buildVersion %q", b, buildVersion())
	}
}

// TestRunNotifiesSystemd runs the real command as a Type=notify unit
// would: with $NOTIFY_SOCKET it reports READY=1 once it serves (the admin
// API answers and /metrics has credswap_build_info), RELOADING=1 with
// MONOTONIC_USEC and then READY=1 around a SIGHUP reload, and STOPPING=1
// on SIGTERM.
func TestRunNotifiesSystemd(t *testing.T) {
	pg := testenv.PG(t)
	user, pass := pg.CreateUser(t, "sdn")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("local\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "cred.json"), []byte(fmt.Sprintf(`{"username": %q, "password": %q}`, user, pass)), 0o600)
	port, _ := testenv.FreePort()
	adminPort, _ := testenv.FreePort()
	cfg := fmt.Sprintf("admin: {listen: 127.0.0.1:%d}\nshutdown_timeout: 1s\nbackends:\n  - name: db\n    protocol: postgres\n    listen: 127.0.0.1:%d\n    upstream: %s\n    clients: [{user: app, password_file: pw}]\n    credential: {source: file, path: cred.json}\n", adminPort, port, pg.Addr())
	path := filepath.Join(dir, "credswap.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)

	sockPath := filepath.Join(dir, "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	next := func(want string) string {
		t.Helper()
		buf := make([]byte, 4096)
		sock.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, want+"\n") {
			t.Fatalf("notification %q, want it to start with %s", msg, want)
		}
		return msg
	}

	cmd := exec.Command(os.Args[0], "run", "--config", path)
	cmd.Env = append(os.Environ(), "CREDSWAP_TEST_RUN_MAIN=1", "NOTIFY_SOCKET="+sockPath)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("proxy output:\n%s", logs.String())
		}
	}()

	if msg := next("READY=1"); !strings.Contains(msg, "STATUS=serving backends db") {
		t.Fatalf("READY notification %q lacks the status", msg)
	}
	// READY=1 means every listener is open: no polling needed.
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		t.Fatalf("proxy listener after READY=1: %v", err)
	} else {
		c.Close()
	}
	metrics := scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
	b := binaryInfo()
	wantInfo := fmt.Sprintf(`credswap_build_info{commit=%q,date=%q,goversion=%q,version=%q} 1`, b.Commit, b.Date, runtime.Version(), b.Version)
	if !strings.Contains(metrics, wantInfo+"\n") {
		t.Fatalf("/metrics lacks %s", wantInfo)
	}

	cmd.Process.Signal(syscall.SIGHUP)
	msg := next("RELOADING=1")
	usec := ""
	for _, line := range strings.Split(msg, "\n") {
		if v, ok := strings.CutPrefix(line, "MONOTONIC_USEC="); ok {
			usec = v
		}
	}
	if n, err := strconv.ParseUint(usec, 10, 64); err != nil || n == 0 {
		t.Fatalf("RELOADING notification %q: MONOTONIC_USEC %q", msg, usec)
	}
	if msg := next("READY=1"); !strings.Contains(msg, "STATUS=configuration reloaded") {
		t.Fatalf("READY after reload: %q", msg)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	next("STOPPING=1")
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not exit after SIGTERM")
	}
}

// TestNotifierWithoutSystemd checks that without $NOTIFY_SOCKET (or with
// a value that is no socket address) notifications are skipped, not errors.
func TestNotifierWithoutSystemd(t *testing.T) {
	for _, v := range []string{"", "relative/path"} {
		t.Setenv("NOTIFY_SOCKET", v)
		if err := newNotifier().ready("x"); err != nil {
			t.Fatalf("NOTIFY_SOCKET=%q: %v", v, err)
		}
	}
	// An abstract socket ("@name") is reached like a path.
	name := "@credswap-test-" + proxytest.Random(6)
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	if err := newNotifier().stopping("bye"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	sock.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := sock.Read(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1\nSTATUS=bye\n" {
		t.Fatalf("abstract socket got %q, %v", buf[:n], err)
	}
}

// scrape fetches a Prometheus text page.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return b.String()
}
