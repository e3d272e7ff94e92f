package creds

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestLogsNeverHoldPasswords drives a file-backed Store through an unverified
// start, verification, adoption, a broken file, a rejected credential, a
// missing file and a final adoption, with every log line captured at debug
// level, and checks that no password appears anywhere.
func TestLogsNeverHoldPasswords(t *testing.T) {
	passwords := []string{"pw-initial-AAA", "pw-second-BBB", "pw-broken-CCC", "pw-rejected-DDD", "pw-final-EEE"}

	core, observed := observer.New(zapcore.DebugLevel)
	bufLogger, buf := bufferLogger()
	logger := zap.New(zapcore.NewTee(core, bufLogger.Core()))

	dir := filepath.Join(t.TempDir(), "secret")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "creds.json")
	writeJSONCred(t, path, "alice", passwords[0])

	v := newTestVerifier()
	v.rejectAll(true) // the database is not reachable yet
	s := NewStore(StoreOptions{
		Source:          NewFileSource(path, FileOptions{Debounce: 10 * time.Millisecond, Logger: logger}),
		Verify:          v.verify,
		RefreshInterval: 20 * time.Millisecond,
		Logger:          logger,
		MinBackoff:      time.Millisecond,
		MaxBackoff:      10 * time.Millisecond,
	})
	gens := subscribeChan(t, s)
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	recvGen(t, gens, time.Second)
	statuses := []Status{s.Status()}

	v.rejectAll(false)
	waitFor(t, 5*time.Second, "generation 1 verified", func() bool { return s.Current().Verified })

	replaceFile(t, path, fmt.Sprintf(`{"username":"alice","password":%q}`, passwords[1]))
	recvGen(t, gens, 5*time.Second)

	replaceFile(t, path, fmt.Sprintf(`{"username":"alice","password":%q`, passwords[2]))
	waitFor(t, 5*time.Second, "the broken file reported", func() bool {
		return strings.Contains(s.Status().LastError, "invalid JSON")
	})
	statuses = append(statuses, s.Status())

	v.rejectUser("bob", true)
	replaceFile(t, path, fmt.Sprintf(`{"username":"bob","password":%q}`, passwords[3]))
	waitFor(t, 5*time.Second, "the rejected credential reported", func() bool {
		return strings.HasPrefix(s.Status().LastError, "test login as bob failed")
	})
	statuses = append(statuses, s.Status())

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the missing file reported", func() bool {
		return strings.HasPrefix(s.Status().LastError, "reading file source")
	})

	writeJSONCred(t, path, "carol", passwords[4])
	if g := recvGen(t, gens, 5*time.Second); g.Cred.Username != "carol" {
		t.Fatalf("adopted %+v", g)
	}
	statuses = append(statuses, s.Status())
	s.RetireFallback(s.Current().N)
	s.Stop()
	_ = logger.Sync()

	out := buf.String()
	for _, st := range statuses {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		out += string(b) + "\n"
	}
	for _, e := range observed.All() {
		out += e.Message + fmt.Sprint(e.ContextMap()) + "\n"
	}
	for _, want := range []string{"alice", "bob", "carol", "adopted new credential", "invalid JSON", "test login as bob failed", "initial credential verified"} {
		if !strings.Contains(out, want) {
			t.Errorf("captured logs lack %q", want)
		}
	}
	for _, pw := range passwords {
		if strings.Contains(out, pw) {
			t.Errorf("captured logs or status contain the password %q", pw)
		}
	}
	if t.Failed() || os.Getenv("CREDS_SHOW_LOGS") != "" {
		t.Logf("captured:\n%s", out)
	}
}
