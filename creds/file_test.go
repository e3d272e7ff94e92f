package creds

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// leak is a marker placed in invalid inputs; no error may repeat it.
const leak = "LEAKME-pa55"

func TestParseCredentialJSON(t *testing.T) {
	for _, tc := range []struct {
		name, in   string
		user, pass string
		err        string
	}{
		{name: "plain", in: `{"username":"u","password":"p"}`, user: "u", pass: "p"},
		{name: "extra keys", in: `{"username":"u","password":"p","host":"db","port":5432}`, user: "u", pass: "p"},
		{name: "empty password", in: `{"username":"u","password":""}`, user: "u", pass: ""},
		{name: "escapes", in: `{"username":"u\u00e9","password":"a\"b\\c\n"}`, user: "ué", pass: "a\"b\\c\n"},
		{name: "byte order mark", in: "\xef\xbb\xbf{\"username\":\"u\",\"password\":\"p\"}\n", user: "u", pass: "p"},
		{name: "syntax", in: `{"username":"u","password":"` + leak + `"`, err: "invalid JSON at byte offset 40"},
		{name: "bad character", in: `{"username":"u","password":` + leak + `}`, err: "invalid JSON at byte offset 28"},
		{name: "trailing data", in: `{"username":"u","password":"p"} ` + leak, err: "invalid JSON at byte offset 33"},
		{name: "empty", in: ``, err: "invalid JSON at byte offset 0"},
		{name: "array", in: `["` + leak + `"]`, err: "invalid credential: the top-level JSON value must be an object"},
		{name: "string", in: `"` + leak + `"`, err: "invalid credential: the top-level JSON value must be an object"},
		{name: "null", in: `null`, err: "invalid credential: the top-level JSON value must be an object"},
		{name: "no username", in: `{"password":"` + leak + `"}`, err: "field username missing"},
		{name: "empty username", in: `{"username":"","password":"` + leak + `"}`, err: "field username must not be empty"},
		{name: "numeric username", in: `{"username":12,"password":"` + leak + `"}`, err: "field username must be a string"},
		{name: "null username", in: `{"username":null,"password":"` + leak + `"}`, err: "field username must be a string"},
		{name: "no password", in: `{"username":"` + leak + `"}`, err: "field password missing"},
		{name: "null password", in: `{"username":"u","password":null}`, err: "field password must be a string"},
		{name: "object password", in: `{"username":"u","password":{"v":"` + leak + `"}}`, err: "field password must be a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, pass, err := parseCredentialJSON([]byte(tc.in))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), leak) {
					t.Fatalf("error repeats the input: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if user != tc.user || pass != tc.pass {
				t.Fatalf("got %q/%q, want %q/%q", user, pass, tc.user, tc.pass)
			}
		})
	}
}

// safeParseError matches every message parseCredentialJSON may return; none
// can carry input bytes.
var safeParseError = regexp.MustCompile(`^(invalid JSON at byte offset \d+|invalid JSON|` +
	`invalid credential: the top-level JSON value must be an object|` +
	`field (username|password) (missing|must be a string)|field username must not be empty)$`)

func FuzzParseCredentialJSON(f *testing.F) {
	for _, s := range []string{`{"username":"u","password":"p"}`, `{"username":1}`, `[`, `{"a":`, "\xff", `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		user, _, err := parseCredentialJSON(in)
		if err != nil {
			if !safeParseError.MatchString(err.Error()) {
				t.Fatalf("unexpected error text %q", err)
			}
			return
		}
		if user == "" {
			t.Fatal("accepted an empty username")
		}
	})
}

func TestFileSourceFetchJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.json")
	writeJSONCred(t, path, "alice", "pw1")
	src := NewFileSource(path, FileOptions{})
	if src.Kind() != "file" {
		t.Fatalf("Kind = %q", src.Kind())
	}
	c1 := mustFetch(t, src)
	if c1.Username != "alice" || c1.Password != "pw1" || c1.Source != "file" {
		t.Fatalf("got %v", c1)
	}
	checkVersion(t, c1.Version)
	if c2 := mustFetch(t, src); c2.Version != c1.Version {
		t.Fatalf("version changed without a change: %q → %q", c1.Version, c2.Version)
	}
	writeJSONCred(t, path, "alice", "pw2")
	if c3 := mustFetch(t, src); c3.Version == c1.Version {
		t.Fatal("version did not change with the password")
	}
	// The key is per source: the version says nothing about the password.
	if c4 := mustFetch(t, NewFileSource(path, FileOptions{})); c4.Version == mustFetch(t, src).Version {
		t.Fatal("two sources share a version for the same content")
	}

	writeFile(t, path, `{"username":"alice","password":"`+leak)
	_, err := src.Fetch(t.Context())
	if err == nil || strings.Contains(err.Error(), leak) || !strings.Contains(err.Error(), "invalid JSON at byte offset") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("err %v does not name the path", err)
	}

	if _, err := NewFileSource(filepath.Join(t.TempDir(), "missing.json"), FileOptions{}).Fetch(t.Context()); !os.IsNotExist(err) {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestFileSourceFetchDirectory(t *testing.T) {
	dir := t.TempDir()
	src := NewFileSource(dir, FileOptions{})
	for _, tc := range []struct {
		name, user, pass string
		wantUser         string
		wantPass         string
	}{
		{"no newline", "bob", "pw", "bob", "pw"},
		{"newline", "bob\n", "pw\n", "bob", "pw"},
		{"crlf", "bob\r\n", "pw\r\n", "bob", "pw"},
		{"only one newline stripped", "bob\n", "pw\n\n", "bob", "pw\n"},
		{"empty password", "bob\n", "", "bob", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, filepath.Join(dir, "username"), tc.user)
			writeFile(t, filepath.Join(dir, "password"), tc.pass)
			c := mustFetch(t, src)
			if c.Username != tc.wantUser || c.Password != tc.wantPass {
				t.Fatalf("got %q/%q, want %q/%q", c.Username, c.Password, tc.wantUser, tc.wantPass)
			}
			checkVersion(t, c.Version)
		})
	}

	writeFile(t, filepath.Join(dir, "username"), "\n")
	if _, err := src.Fetch(t.Context()); err == nil || !strings.Contains(err.Error(), "must not be empty") {
		t.Fatalf("empty username: err = %v", err)
	}
	writeFile(t, filepath.Join(dir, "username"), "bob")
	if err := os.Remove(filepath.Join(dir, "password")); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fetch(t.Context()); !os.IsNotExist(err) {
		t.Fatalf("missing password: err = %v", err)
	}
}

func TestFileSourceFetchKubernetesMount(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secret")
	m := newK8sMount(t, dir, map[string]string{"username": "carol\n", "password": "pw1\n", "creds.json": `{"username":"dave","password":"pw2"}`})
	if c := mustFetch(t, NewFileSource(dir, FileOptions{})); c.Username != "carol" || c.Password != "pw1" {
		t.Fatalf("directory form: got %v", c)
	}
	if c := mustFetch(t, NewFileSource(filepath.Join(dir, "creds.json"), FileOptions{})); c.Username != "dave" || c.Password != "pw2" {
		t.Fatalf("file form: got %v", c)
	}
	m.update(t, map[string]string{"username": "erin\n", "password": "pw3\n", "creds.json": `{}`})
	if c := mustFetch(t, NewFileSource(dir, FileOptions{})); c.Username != "erin" || c.Password != "pw3" {
		t.Fatalf("after update: got %v", c)
	}
}

func mustFetch(t *testing.T, src Source) Credential {
	t.Helper()
	c, err := src.Fetch(t.Context())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return c
}

func checkVersion(t *testing.T, v string) {
	t.Helper()
	if b, err := hex.DecodeString(v); err != nil || len(b) != 8 {
		t.Fatalf("version %q is not 16 hex digits", v)
	}
}

// fileChange is one way a credential file or directory gets updated.
type fileChange struct {
	name string
	// setup creates the initial credential (user1/pw1) under root and
	// returns the path for NewFileSource and a func that changes it to
	// user2/pw2.
	setup func(t *testing.T, root string) (path string, change func())
}

func fileChanges() []fileChange {
	return []fileChange{
		{"json in-place write", func(t *testing.T, root string) (string, func()) {
			path := filepath.Join(root, "creds.json")
			writeJSONCred(t, path, "user1", "pw1")
			return path, func() { writeJSONCred(t, path, "user2", "pw2") }
		}},
		{"json atomic rename", func(t *testing.T, root string) (string, func()) {
			path := filepath.Join(root, "creds.json")
			writeJSONCred(t, path, "user1", "pw1")
			return path, func() { replaceFile(t, path, `{"username":"user2","password":"pw2"}`) }
		}},
		{"json kubernetes symlink swap", func(t *testing.T, root string) (string, func()) {
			m := newK8sMount(t, root, map[string]string{"creds.json": `{"username":"user1","password":"pw1"}`})
			return filepath.Join(root, "creds.json"), func() {
				m.update(t, map[string]string{"creds.json": `{"username":"user2","password":"pw2"}`})
			}
		}},
		{"directory in-place write", func(t *testing.T, root string) (string, func()) {
			writeFile(t, filepath.Join(root, "username"), "user1\n")
			writeFile(t, filepath.Join(root, "password"), "pw1\n")
			return root, func() {
				writeFile(t, filepath.Join(root, "username"), "user2\n")
				writeFile(t, filepath.Join(root, "password"), "pw2\n")
			}
		}},
		{"directory atomic rename", func(t *testing.T, root string) (string, func()) {
			writeFile(t, filepath.Join(root, "username"), "user1\n")
			writeFile(t, filepath.Join(root, "password"), "pw1\n")
			return root, func() {
				// A temp file outside the directory, as publishers that
				// must not trigger a partial read do it.
				tmp := filepath.Join(filepath.Dir(root), "pw.tmp")
				writeFile(t, tmp, "pw2\n")
				tmpUser := filepath.Join(filepath.Dir(root), "user.tmp")
				writeFile(t, tmpUser, "user2\n")
				if err := os.Rename(tmp, filepath.Join(root, "password")); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmpUser, filepath.Join(root, "username")); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"directory kubernetes symlink swap", func(t *testing.T, root string) (string, func()) {
			m := newK8sMount(t, root, map[string]string{"username": "user1\n", "password": "pw1\n"})
			return root, func() { m.update(t, map[string]string{"username": "user2\n", "password": "pw2\n"}) }
		}},
		{"json directory removed and recreated", func(t *testing.T, root string) (string, func()) {
			path := filepath.Join(root, "creds.json")
			writeJSONCred(t, path, "user1", "pw1")
			return path, func() {
				if err := os.RemoveAll(root); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(root, 0o755); err != nil {
					t.Fatal(err)
				}
				writeJSONCred(t, path, "user2", "pw2")
			}
		}},
		{"directory form removed and recreated", func(t *testing.T, root string) (string, func()) {
			writeFile(t, filepath.Join(root, "username"), "user1")
			writeFile(t, filepath.Join(root, "password"), "pw1")
			return root, func() {
				if err := os.RemoveAll(root); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(root, 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(root, "username"), "user2")
				writeFile(t, filepath.Join(root, "password"), "pw2")
			}
		}},
	}
}

// newRoot returns an empty directory that a test may remove and recreate.
func newRoot(t *testing.T) string {
	root := filepath.Join(t.TempDir(), "secret")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestFileSourceWatch(t *testing.T) {
	for _, fc := range fileChanges() {
		t.Run(fc.name, func(t *testing.T) {
			path, change := fc.setup(t, newRoot(t))
			src := NewFileSource(path, FileOptions{Debounce: 20 * time.Millisecond})
			changed := make(chan struct{}, 1)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- src.Watch(ctx, func() { poke(changed) }) }()

			waitChanged := func(what string) {
				t.Helper()
				select {
				case <-changed:
				case <-time.After(5 * time.Second):
					t.Fatalf("no changed() call %s", what)
				}
			}
			// Watch announces once as soon as the watch is in place.
			waitChanged("when the watch was set up")
			change()
			waitChanged("after the change")
			if c := mustFetch(t, src); c.Username != "user2" || c.Password != "pw2" {
				t.Fatalf("after the change: %v", c)
			}

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Watch returned %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not return after cancel")
			}
		})
	}
}

// readyWatcher wraps a FileSource and turns its first changed call, which it
// makes once its watch is in place, into closing ready. Nothing changes
// between Start and ready in these tests, so dropping that call keeps the
// Store from reading the file until an event announces a change.
type readyWatcher struct {
	*FileSource
	ready chan struct{}
}

func (w readyWatcher) Watch(ctx context.Context, changed func()) error {
	first := true // Watch calls changed on its own goroutine only
	return w.FileSource.Watch(ctx, func() {
		if first {
			first = false
			select {
			case <-w.ready: // a restarted Watch
			default:
				close(w.ready)
			}
			return
		}
		changed()
	})
}

func TestStoreAdoptsFileChanges(t *testing.T) {
	for _, fc := range fileChanges() {
		t.Run(fc.name, func(t *testing.T) {
			path, change := fc.setup(t, newRoot(t))
			// A short debounce leaves most of the 1s budget to a loaded machine.
			src := readyWatcher{NewFileSource(path, FileOptions{Debounce: 10 * time.Millisecond}), make(chan struct{})}
			s := startStore(t, StoreOptions{
				Source:          src,
				Verify:          newTestVerifier().verify,
				RefreshInterval: time.Hour, // only the watcher can trigger a refresh
				MinBackoff:      time.Millisecond,
				MaxBackoff:      10 * time.Millisecond,
			})
			gens := subscribeChan(t, s)
			select {
			case <-src.ready:
			case <-time.After(5 * time.Second):
				t.Fatal("watch not set up")
			}

			change()
			g := recvGen(t, gens, time.Second)
			if g.N != 2 || g.Cred.Username != "user2" || g.Cred.Password != "pw2" || !g.Verified {
				t.Fatalf("adopted %+v", g)
			}
			if s.Current() != g || s.Fallback().N != 1 {
				t.Fatalf("Current %+v, Fallback %+v", s.Current(), s.Fallback())
			}
		})
	}
}

func TestStoreKeepsCredentialOnInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.json")
	writeJSONCred(t, path, "alice", "pw1")
	s := startStore(t, StoreOptions{
		Source:          NewFileSource(path, FileOptions{Debounce: 10 * time.Millisecond}),
		Verify:          newTestVerifier().verify,
		RefreshInterval: time.Hour,
		MinBackoff:      time.Millisecond,
		MaxBackoff:      20 * time.Millisecond,
	})
	gens := subscribeChan(t, s)

	for _, tc := range []struct {
		name, content, want string
	}{
		{"invalid JSON", `{"username":"alice","password":"` + leak + `",}`, "reading file source: " + path + ": invalid JSON at byte offset"},
		{"missing field", `{"username":"` + leak + `"}`, "reading file source: " + path + ": field password missing"},
		{"wrong type", `{"username":"alice","password":["` + leak + `"]}`, "field password must be a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Status().AdoptionFailures
			replaceFile(t, path, tc.content)
			// The watcher finds the broken file. (An explicit Refresh right
			// now could share a refresh that read the file just before.)
			waitFor(t, 5*time.Second, "the failure reported", func() bool {
				return strings.Contains(s.Status().LastError, tc.want)
			})
			st := s.Status()
			if !st.Failing || strings.Contains(st.LastError, leak) || st.LastErrorAt.IsZero() || st.AdoptionFailures <= before {
				t.Fatalf("status %+v; AdoptionFailures was %d", st, before)
			}
			// Every refresh from now on reads the broken file.
			_, err := s.Refresh(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), leak) {
				t.Fatalf("Refresh: err = %v, want %q", err, tc.want)
			}
			// Retried with backoff while broken.
			waitFor(t, 5*time.Second, "a retry", func() bool { return s.Status().AdoptionFailures >= st.AdoptionFailures+2 })
			if c := s.Current(); c.N != 1 || c.Cred.Password != "pw1" {
				t.Fatalf("current changed to %v", c)
			}
		})
	}

	writeJSONCred(t, path, "alice", "pw2")
	if g := recvGen(t, gens, 5*time.Second); g.N != 2 || g.Cred.Password != "pw2" {
		t.Fatalf("adopted %+v", g)
	}
	waitFor(t, time.Second, "errors cleared", func() bool {
		st := s.Status()
		return !st.Failing && st.LastError == "" && st.LastErrorAt.IsZero()
	})
}

// TestFileSourceWatchIgnoresReadsAndOtherFiles checks that reading the
// credential (which the Store does on every announcement) announces nothing,
// which would make the Store refresh in a loop, and that other files next to
// a JSON credential file are ignored.
func TestFileSourceWatchIgnoresReadsAndOtherFiles(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, root string) (path string, unrelated func())
	}{
		{"json", func(t *testing.T, root string) (string, func()) {
			path := filepath.Join(root, "creds.json")
			writeJSONCred(t, path, "u", "p")
			return path, func() {
				writeFile(t, filepath.Join(root, "other.json"), "{}")
				replaceFile(t, filepath.Join(root, "creds.json.bak"), "{}")
			}
		}},
		{"kubernetes json", func(t *testing.T, root string) (string, func()) {
			newK8sMount(t, root, map[string]string{"creds.json": `{"username":"u","password":"p"}`})
			return filepath.Join(root, "creds.json"), func() { writeFile(t, filepath.Join(root, "README"), "x") }
		}},
		{"directory", func(t *testing.T, root string) (string, func()) {
			writeFile(t, filepath.Join(root, "username"), "u")
			writeFile(t, filepath.Join(root, "password"), "p")
			return root, func() {}
		}},
		{"kubernetes directory", func(t *testing.T, root string) (string, func()) {
			newK8sMount(t, root, map[string]string{"username": "u", "password": "p"})
			return root, func() {}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, unrelated := tc.setup(t, newRoot(t))
			const debounce = 10 * time.Millisecond
			src := NewFileSource(path, FileOptions{Debounce: debounce})
			changed := make(chan struct{}, 1)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- src.Watch(ctx, func() { poke(changed) }) }()
			defer func() {
				cancel()
				<-done
			}()
			select {
			case <-changed:
			case <-time.After(5 * time.Second):
				t.Fatal("watch not set up")
			}
			for range 10 {
				mustFetch(t, src)
			}
			unrelated()
			// Absence can only be observed over time: 20 debounce periods.
			select {
			case <-changed:
				t.Fatal("changed() called without a change")
			case <-time.After(20 * debounce):
			}
		})
	}
}
