//go:build linux

package benchkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for credswap: run as `BIN run --config FILE`, it
// serves GET /readyz on the "admin" address of FILE, or fails at once with "fail: yes".
func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == "run" && os.Args[2] == "--config" {
		os.Exit(fakeCredswap(os.Args[3]))
	}
	os.Exit(m.Run())
}

func fakeCredswap(configFile string) int {
	b, err := os.ReadFile(configFile)
	if err != nil {
		fmt.Println("fake credswap:", err)
		return 1
	}
	conf := map[string]string{}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ": "); ok {
			conf[k] = v
		}
	}
	if conf["fail"] == "yes" {
		fmt.Println("fake credswap: bad configuration")
		return 1
	}
	wd, _ := os.Getwd()
	fmt.Printf("fake credswap in %s with env %s\n", wd, strings.Join(os.Environ(), " "))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	fmt.Println(http.ListenAndServe(conf["admin"], mux))
	return 1
}

func fakeConfig(fail bool) func(CredswapConfig) string {
	return func(c CredswapConfig) string {
		return fmt.Sprintf("admin: %s\nlisten: %s\nfail: %v\n", c.AdminListen, c.Listen, map[bool]string{true: "yes", false: "no"}[fail])
	}
}

func TestStartCredswap(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOGC", "150")
	t.Setenv("BENCHKIT_NOT_PASSED", "1")
	dir := t.TempDir()
	backend := Login{User: "swap_a", Password: "backend-secret"}
	var got CredswapConfig
	cs, err := StartCredswap(context.Background(), CredswapOptions{
		Bin: bin, Dir: dir, Upstream: "127.0.0.1:5432", ClientUser: "bench", Credential: backend,
		Config:       func(c CredswapConfig) string { got = c; return fakeConfig(false)(c) },
		ReadyTimeout: 10 * time.Second, PollInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Proc.Stop()

	want := CredswapConfig{Listen: cs.Addr, AdminListen: cs.AdminAddr, Upstream: "127.0.0.1:5432", ClientUser: "bench",
		PasswordFile: filepath.Join(dir, "client-password"), CredFile: filepath.Join(dir, "cred.json")}
	if got != want || cs.CredFile != want.CredFile || cs.Addr == cs.AdminAddr {
		t.Errorf("config %+v, credswap %+v; want config %+v", got, cs, want)
	}
	if cs.Local.User != "bench" || !regexp.MustCompile(`^local-[0-9a-f]{32}$`).MatchString(cs.Local.Password) {
		t.Errorf("local login %+v", cs.Local)
	}
	if b, err := os.ReadFile(want.PasswordFile); err != nil || string(b) != cs.Local.Password+"\n" {
		t.Errorf("password file %q (%v)", b, err)
	}
	var cred map[string]string
	if b, err := os.ReadFile(want.CredFile); err != nil || json.Unmarshal(b, &cred) != nil ||
		cred["username"] != backend.User || cred["password"] != backend.Password {
		t.Errorf("credential file %q (%v)", b, err)
	}
	for _, f := range []string{want.PasswordFile, want.CredFile, filepath.Join(dir, "credswap.yaml")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v (%v), want mode 0600", f, fi.Mode(), err)
		}
	}
	if cs.Proc.Name() != "credswap" || cs.Proc.LogFile() != filepath.Join(dir, "credswap.log") {
		t.Errorf("process %s logging to %s", cs.Proc.Name(), cs.Proc.LogFile())
	}
	log := cs.Proc.LogTail()
	if !strings.Contains(log, "fake credswap in "+dir+" ") || !strings.Contains(log, " GOGC=150") || strings.Contains(log, "BENCHKIT_NOT_PASSED") {
		t.Errorf("working dir or environment wrong; log:\n%s", log)
	}
	if err := cs.Proc.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

func TestStartCredswapExits(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var joined atomic.Bool
	_, err = StartCredswap(context.Background(), CredswapOptions{
		Bin: bin, Dir: t.TempDir(), ClientUser: "bench", Config: fakeConfig(true),
		ReadyTimeout: 10 * time.Second, PollInterval: 10 * time.Millisecond,
		JoinStop: func(err error, p *Process) error {
			joined.Store(true)
			return JoinStop(err, p)
		},
	})
	if err == nil || !strings.HasPrefix(err.Error(), "credswap exited during start (exit status 1); log:\n    fake credswap: bad configuration") {
		t.Errorf("StartCredswap = %v", err)
	}
	if !joined.Load() {
		t.Error("the JoinStop of the options was not called")
	}
}

func TestWaitReadyz(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "backend bench: not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	p, err := StartProcess("sleeper", exec.Command("sleep", "60"), filepath.Join(t.TempDir(), "sleeper.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

	if err := waitReadyz(context.Background(), p, addr, 10*time.Second, 10*time.Millisecond); err != nil || calls.Load() != 3 {
		t.Errorf("waitReadyz = %v after %d calls", err, calls.Load())
	}

	calls.Store(-1000) // not ready for a long time
	err = waitReadyz(context.Background(), p, addr, 100*time.Millisecond, 10*time.Millisecond)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "sleeper not ready within 100ms") || !strings.Contains(err.Error(), "(last GET "+srv.URL+"/readyz: ") {
		t.Errorf("waitReadyz of a server that is not ready = %v", err)
	}
}

func TestWriteCredential(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cred.json")
	for _, l := range []Login{{User: "a", Password: "p1"}, {User: "b", Password: "p2"}} {
		if err := WriteCredential(file, l); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(file)
		if want := fmt.Sprintf(`{"password":%q,"username":%q}`, l.Password, l.User); err != nil || string(b) != want {
			t.Errorf("credential file %s (%v), want %s", b, err, want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d files in the directory, want only cred.json", len(entries))
	}
	if err := WriteCredential(filepath.Join(dir, "missing", "cred.json"), Login{}); err == nil || !strings.HasPrefix(err.Error(), "write credential: ") {
		t.Errorf("WriteCredential to a missing directory: %v", err)
	}
}
