package creds

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// testSource is a Source whose credential (or error) a test changes at will.
// Fetch can be held at a gate to test concurrent refreshes.
type testSource struct {
	fetches atomic.Int64

	mu      sync.Mutex
	cred    Credential
	err     error
	version int
	gate    chan struct{} // non-nil: Fetch waits until it is closed
	entered chan struct{} // receives a value (non-blocking) as Fetch starts
}

func newTestSource(user, pass string) *testSource {
	s := &testSource{entered: make(chan struct{}, 1)}
	s.set(user, pass)
	return s
}

// set makes Fetch return a credential with a new version.
func (s *testSource) set(user, pass string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version++
	s.cred = Credential{Username: user, Password: pass, Version: fmt.Sprintf("v%d", s.version)}
	s.err = nil
}

// setErr makes Fetch fail with err until the next set or setErr(nil).
func (s *testSource) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// hold makes Fetch block until the returned func is called.
func (s *testSource) hold() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gate := make(chan struct{})
	s.gate = gate
	return sync.OnceFunc(func() {
		s.mu.Lock()
		s.gate = nil
		s.mu.Unlock()
		close(gate)
	})
}

func (s *testSource) Kind() string { return "test" }

func (s *testSource) Fetch(ctx context.Context) (Credential, error) {
	s.fetches.Add(1)
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	select {
	case s.entered <- struct{}{}:
	default:
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Credential{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return Credential{}, s.err
	}
	return s.cred, nil
}

// testVerifier is a VerifyFunc whose verdict a test changes at will.
type testVerifier struct {
	calls atomic.Int64

	mu      sync.Mutex
	all     bool            // reject everyone
	reject  map[string]bool // usernames to reject
	checked map[string]int  // username → calls
}

func newTestVerifier() *testVerifier {
	return &testVerifier{reject: map[string]bool{}, checked: map[string]int{}}
}

func (v *testVerifier) rejectAll(b bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.all = b
}

func (v *testVerifier) rejectUser(user string, b bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reject[user] = b
}

func (v *testVerifier) callsFor(user string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.checked[user]
}

// verify fails the way a dialer does: naming the user, never the password.
func (v *testVerifier) verify(ctx context.Context, c Credential) error {
	v.calls.Add(1)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.checked[c.Username]++
	if v.all || v.reject[c.Username] {
		return fmt.Errorf("password authentication failed for user %q: %w", c.Username, ErrRejected)
	}
	return ctx.Err()
}

// waitFor polls cond until it holds or d passes. It waits for a condition,
// not for an amount of time: the poll interval only bounds the latency.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recvGen waits up to d for a generation on ch.
func recvGen(t *testing.T, ch <-chan *Generation, d time.Duration) *Generation {
	t.Helper()
	select {
	case g := <-ch:
		return g
	case <-time.After(d):
		t.Fatalf("no generation adopted within %v", d)
		return nil
	}
}

// subscribeChan subscribes a buffered channel; the test fails if it overflows.
func subscribeChan(t *testing.T, s *Store) <-chan *Generation {
	t.Helper()
	ch := make(chan *Generation, 64)
	unsubscribe := s.Subscribe(func(g *Generation) {
		select {
		case ch <- g:
		default:
			t.Errorf("subscriber channel full at generation %d", g.N)
		}
	})
	t.Cleanup(unsubscribe)
	return ch
}

// startStore starts a Store and stops it when the test ends.
func startStore(t *testing.T, opts StoreOptions) *Store {
	t.Helper()
	s := NewStore(opts)
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// syncBuffer is a concurrency-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Sync() error { return nil }

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// bufferLogger returns a debug-level logger writing JSON lines to the buffer.
func bufferLogger() (*zap.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	enc := zapcore.NewJSONEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, buf, zapcore.DebugLevel)), buf
}

// writeJSONCred writes a credential file in place.
func writeJSONCred(t *testing.T, path, user, pass string) {
	t.Helper()
	writeFile(t, path, fmt.Sprintf(`{"username": %q, "password": %q}`, user, pass))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes content to a temporary file and renames it over path,
// as editors and atomic publishers do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// k8sMount imitates how the kubelet projects a Secret into a directory:
// timestamped data directories, a "..data" symlink to the current one that is
// swapped by renaming "..data_tmp" over it, and one symlink per key through
// "..data".
type k8sMount struct {
	dir string
	n   int
}

func newK8sMount(t *testing.T, dir string, files map[string]string) *k8sMount {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &k8sMount{dir: dir}
	m.update(t, files)
	return m
}

func (m *k8sMount) update(t *testing.T, files map[string]string) {
	t.Helper()
	m.n++
	ts := fmt.Sprintf("..2026_11_25_10_00_00.%09d", m.n)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(m.dir, ts), 0o755))
	for name, content := range files {
		must(os.WriteFile(filepath.Join(m.dir, ts, name), []byte(content), 0o644))
	}
	old, err := os.Readlink(filepath.Join(m.dir, "..data"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	must(os.Symlink(ts, filepath.Join(m.dir, "..data_tmp")))
	must(os.Rename(filepath.Join(m.dir, "..data_tmp"), filepath.Join(m.dir, "..data")))
	for name := range files {
		link := filepath.Join(m.dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			must(os.Symlink(filepath.Join("..data", name), link))
		}
	}
	if old != "" {
		must(os.RemoveAll(filepath.Join(m.dir, old)))
	}
}
