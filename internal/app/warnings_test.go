package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/credswap/credswap/config"
)

// TestWarnUnverifiedUpstream: one warning per backend whose upstream is
// off loopback without verify-full, or that lets any login method through
// without verified TLS, naming what crosses unprotected; none otherwise.
func TestWarnUnverifiedUpstream(t *testing.T) {
	tests := []struct {
		name     string
		b        config.Backend
		want     string // "" means no warning
		exposure []string
	}{
		{"loopback, plaintext", testBackend("postgres", "127.0.0.1:5432", "disable", "scram-sha-256"), "", nil},
		{"localhost, plaintext, mysql", testBackend("mysql", "localhost:3306", "disable", "scramble"), "", nil},
		{"remote, verify-full", testBackend("postgres", "db.internal:5432", "verify-full", "any"), "", nil},
		{"remote, plaintext", testBackend("postgres", "db.internal:5432", "disable", "scram-sha-256"),
			"upstream TLS is off", []string{"sessions: every query and result", "SCRAM-SHA-256 only"}},
		{"remote, require, md5", testBackend("postgres", "10.0.0.5:5432", "require", "md5"),
			"upstream TLS does not verify the database", []string{"md5 hash"}},
		{"remote, verify-ca, mysql", testBackend("mysql", "db.internal:3306", "verify-ca", "scramble"),
			"upstream TLS does not verify the database", []string{"scrambles only"}},
		{"loopback, any", testBackend("postgres", "127.0.0.1:5432", "disable", "any"),
			"upstream_auth any without verified TLS", []string{"in cleartext if the server asks"}},
		{"remote, plaintext, rotating mysql", func() config.Backend {
			b := testBackend("mysql", "db.internal:3306", "disable", "scramble")
			b.Rotation.Strategy = "dual-password"
			return b
		}(), "upstream TLS is off", []string{"rotations: ALTER USER statements carrying the new password"}},
		{"remote, plaintext, rotating postgres", func() config.Backend {
			b := testBackend("postgres", "db.internal:5432", "disable", "scram-sha-256")
			b.Rotation.Strategy = "alternating-users"
			return b
		}(), "upstream TLS is off", []string{"rotations: ALTER ROLE statements carrying the new password's SCRAM verifier"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			warnUnverifiedUpstream(tt.b, zap.New(core))
			entries := logs.All()
			if tt.want == "" {
				if len(entries) != 0 {
					t.Fatalf("want no warning, got %v", entries)
				}
				return
			}
			if len(entries) != 1 || entries[0].Level != zapcore.WarnLevel || !strings.HasPrefix(entries[0].Message, tt.want) {
				t.Fatalf("want one warning %q, got %v", tt.want, entries)
			}
			exposed := strings.Join(toStrings(entries[0].ContextMap()["exposed"]), "\n")
			for _, e := range tt.exposure {
				if !strings.Contains(exposed, e) {
					t.Errorf("exposed lacks %q:\n%s", e, exposed)
				}
			}
		})
	}
}

func testBackend(protocol, upstream, tls, auth string) config.Backend {
	return config.Backend{Name: "b", Protocol: protocol, Upstream: upstream, UpstreamTLS: config.UpstreamTLS{Mode: tls}, UpstreamAuth: auth}
}

func toStrings(v any) []string {
	var out []string
	if vs, ok := v.([]any); ok {
		for _, s := range vs {
			out = append(out, s.(string))
		}
	}
	return out
}

// TestWarnReadableSecrets: a secret file every user may read is reported
// once, by field and path; group-readable and private ones are not. A
// credential directory laid out like a Kubernetes Secret volume (symlinks
// through ..data) is judged by its password file's own mode.
func TestWarnReadableSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("secret\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
		return p
	}
	token := write("admin-token", 0o644)
	write("app-password", 0o640)
	write("admin.json", 0o600)
	// A Secret volume: secret/password -> ..data/password -> ..2025_01_01/password.
	write("secret/..2025_01_01/password", 0o644)
	write("secret/..2025_01_01/username", 0o644)
	for _, l := range [][2]string{{"..2025_01_01", "secret/..data"}, {"..data/password", "secret/password"}, {"..data/username", "secret/username"}} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	doc := `
admin: {token_file: admin-token}
backends:
  - name: orders
    protocol: postgres
    listen: 127.0.0.1:6432
    upstream: 127.0.0.1:5432
    clients: [{user: app, password_file: app-password}]
    credential: {source: file, path: secret}
    rotation:
      strategy: alternating-users
      users: [a, b]
      admin_credential: {source: file, path: admin.json}
`
	cfg, err := config.Parse([]byte(doc), config.ParseOptions{BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	warnReadableSecrets(cfg, zap.New(core))
	got := map[string]string{}
	for _, e := range logs.All() {
		m := e.ContextMap()
		got[m["field"].(string)] = m["path"].(string) + " " + m["mode"].(string)
	}
	want := map[string]string{
		"admin.token_file":            token + " 0644",
		"backends[0].credential.path": filepath.Join(dir, "secret", "password") + " 0644",
	}
	if len(got) != len(want) || got["admin.token_file"] != want["admin.token_file"] ||
		got["backends[0].credential.path"] != want["backends[0].credential.path"] {
		t.Errorf("warnings\n got: %v\nwant: %v", got, want)
	}
}
