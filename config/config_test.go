package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const fullDoc = `
admin:
  listen: 127.0.0.1:9650
  token_file: /etc/credswap/admin-token
  allowed_hosts: [credswap.internal, "fd00::5"]
  max_connections: 16
shutdown_timeout: 45s
log: {level: debug, format: console}
limits: {max_partial_message_memory: 96MiB, partial_message_memory_wait: 5s}
backends:
  - name: orders
    protocol: postgres
    listen: 127.0.0.1:6432
    upstream: db.internal:5432
    upstream_tls:
      mode: verify-full
      ca_file: /etc/ssl/db-ca.pem
      cert_file: tls/client.pem
      key_file: tls/client.key
      server_name: db.example.com
    client_tls: {cert_file: tls/server.pem, key_file: tls/server.key, required: true}
    clients:
      - {user: app, password_file: app-password}
      - {user: report, password_hash: "` + testSCRAMHash + `"}
      - {user: legacy, password_hash: ` + testMD5Hash + `, auth: md5}
      - {user: tool, password: "${TOOL_PASSWORD}", auth: password}
    credential: {source: file, path: orders.json, refresh_interval: 1m}
    verify_database: orders
    drain_deadline: 2m
    on_deadline: close
    limits: {max_client_conns: 50, handshake_timeout: 5s, connect_timeout: 20s, max_message_size: 1MiB}
    pool: {max_idle: 4, idle_timeout: 5m}
  - name: billing
    protocol: postgres
    listen: "[::1]:6433"
    upstream: 127.0.0.1:5433
    clients: [{user: app, password: "${BILLING_APP_PASSWORD:-changeme}"}]
    credential: {source: env, username_env: BILLING_USER, password_env: BILLING_PASSWORD}
`

func fullWant() *Config {
	return &Config{
		Admin: Admin{Listen: "127.0.0.1:9650", TokenFile: "/etc/credswap/admin-token",
			AllowedHosts: []string{"credswap.internal", "fd00::5"}, MaxConnections: 16},
		ShutdownTimeout: Duration(45 * time.Second),
		Log:             Log{Level: "debug", Format: "console"},
		Limits:          ProcessLimits{MaxPartialMessageMemory: 96 << 20, PartialMessageMemoryWait: Duration(5 * time.Second)},
		Backends: []Backend{
			{
				Name:     "orders",
				Protocol: "postgres",
				Listen:   "127.0.0.1:6432",
				Upstream: "db.internal:5432",
				UpstreamTLS: UpstreamTLS{
					Mode:       "verify-full",
					CAFile:     "/etc/ssl/db-ca.pem",
					CertFile:   "/base/tls/client.pem",
					KeyFile:    "/base/tls/client.key",
					ServerName: "db.example.com",
				},
				UpstreamAuth: "any",
				ClientTLS:    ClientTLS{CertFile: "/base/tls/server.pem", KeyFile: "/base/tls/server.key", Required: true},
				Clients: []Client{
					{User: "app", PasswordFile: "/base/app-password", Auth: "scram-sha-256"},
					{User: "report", PasswordHash: testSCRAMHash, Auth: "scram-sha-256"},
					{User: "legacy", PasswordHash: testMD5Hash, Auth: "md5"},
					{User: "tool", Password: "p@ss: \"w0rd\" #1", Auth: "password"},
				},
				Credential:            Credential{Source: "file", Path: "/base/orders.json", RefreshInterval: Duration(time.Minute)},
				VerifyDatabase:        "orders",
				DrainDeadline:         Duration(2 * time.Minute),
				OnDeadline:            "close",
				DrainConnectionBudget: 8,
				Limits: Limits{
					MaxClientConns: 50,
					MaxHandshakes:  256, MaxHandshakesPerSource: 32,
					HandshakeTimeout: Duration(5 * time.Second),
					ConnectTimeout:   Duration(20 * time.Second),
					MaxMessageSize:   1 << 20,
				},
				Pool: Pool{MaxIdle: 4, IdleTimeout: Duration(5 * time.Minute)},
			},
			{
				Name:         "billing",
				Protocol:     "postgres",
				Listen:       "[::1]:6433",
				Upstream:     "127.0.0.1:5433",
				UpstreamTLS:  UpstreamTLS{Mode: "disable"},
				UpstreamAuth: "scram-sha-256",
				Clients:      []Client{{User: "app", Password: "changeme", Auth: "scram-sha-256"}},
				Credential: Credential{
					Source:          "env",
					UsernameEnv:     "BILLING_USER",
					PasswordEnv:     "BILLING_PASSWORD",
					RefreshInterval: Duration(30 * time.Second),
				},
				VerifyDatabase:        "postgres",
				DrainDeadline:         Duration(60 * time.Second),
				OnDeadline:            "keep",
				DrainConnectionBudget: 8,
				Limits: Limits{
					MaxClientConns: 1000,
					MaxHandshakes:  256, MaxHandshakesPerSource: 32,
					HandshakeTimeout: Duration(10 * time.Second),
					ConnectTimeout:   Duration(15 * time.Second),
					MaxMessageSize:   64 << 20,
				},
				Pool: Pool{MaxIdle: 16, IdleTimeout: Duration(10 * time.Minute)},
			},
		},
	}
}

func TestParseFull(t *testing.T) {
	// The password holds YAML syntax to show that expansion happens after
	// parsing and cannot break the document.
	env := envMap(map[string]string{"TOOL_PASSWORD": `p@ss: "w0rd" #1`})
	got := mustParse(t, fullDoc, ParseOptions{LookupEnv: env, BaseDir: "/base"})
	if want := fullWant(); !reflect.DeepEqual(got, want) {
		t.Errorf("Parse mismatch\n got: %+v\nwant: %+v", got, want)
	}
}

// TestMarshalRoundTrip checks that a parsed Config written back as YAML
// parses to the same Config: Duration and ByteSize marshal in the syntax
// they accept, and every field has a yaml tag Parse knows.
func TestMarshalRoundTrip(t *testing.T) {
	env := envMap(map[string]string{"TOOL_PASSWORD": "tool-secret"})
	first := mustParse(t, fullDoc, ParseOptions{LookupEnv: env, BaseDir: "/base"})
	out, err := yaml.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	second := mustParse(t, string(out), ParseOptions{BaseDir: "/elsewhere"})
	if !reflect.DeepEqual(first, second) {
		t.Errorf("round trip changed the config\nYAML:\n%s\n got: %+v\nwant: %+v", out, second, first)
	}
}

func TestParseMinimalDefaults(t *testing.T) {
	got := mustParse(t, minimalDoc, ParseOptions{})
	want := &Config{
		Admin:           Admin{Listen: DefaultAdminListen, MaxConnections: DefaultAdminMaxConnections},
		ShutdownTimeout: Duration(30 * time.Second),
		Log:             Log{Level: "info", Format: "json"},
		Limits:          ProcessLimits{MaxPartialMessageMemory: 256 << 20, PartialMessageMemoryWait: Duration(30 * time.Second)},
		Backends: []Backend{{
			Name:                  "orders",
			Protocol:              "postgres",
			Listen:                "127.0.0.1:6432",
			Upstream:              "127.0.0.1:5432",
			UpstreamTLS:           UpstreamTLS{Mode: "disable"},
			UpstreamAuth:          "scram-sha-256",
			Clients:               []Client{{User: "app", PasswordFile: "app-password", Auth: "scram-sha-256"}},
			Credential:            Credential{Source: "file", Path: "orders.json", RefreshInterval: Duration(30 * time.Second)},
			VerifyDatabase:        "postgres",
			DrainDeadline:         Duration(time.Minute),
			OnDeadline:            "keep",
			DrainConnectionBudget: 8,
			Limits: Limits{
				MaxClientConns: 1000,
				MaxHandshakes:  256, MaxHandshakesPerSource: 32,
				HandshakeTimeout: Duration(10 * time.Second),
				ConnectTimeout:   Duration(15 * time.Second),
				MaxMessageSize:   64 << 20,
			},
			Pool: Pool{MaxIdle: 16, IdleTimeout: Duration(10 * time.Minute)},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse mismatch\n got: %+v\nwant: %+v", got, want)
	}
}

func TestExplicitZeroIsKept(t *testing.T) {
	tests := []struct {
		name, pool string
		want       int
	}{
		{"absent", "", 16},
		{"null", "\n    pool: {max_idle: ~}", 16},
		{"zero", "\n    pool: {max_idle: 0}", 0},
		{"set", "\n    pool: {max_idle: 3}", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, minimalDoc+tt.pool, ParseOptions{})
			if got := cfg.Backends[0].Pool.MaxIdle; got != tt.want {
				t.Errorf("pool.max_idle = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRelativePaths(t *testing.T) {
	doc := `
admin: {token_file: token}
backends:
  - name: a
    protocol: postgres
    listen: 127.0.0.1:6432
    upstream: 127.0.0.1:5432
    upstream_tls: {mode: verify-ca, ca_file: ../ca.pem, cert_file: /abs/c.pem, key_file: ./k.pem}
    client_tls: {cert_file: s.pem, key_file: s.key}
    clients: [{user: app, password_file: secrets/app}]
    credential: {source: file, path: creds}
  - name: b
    protocol: postgres
    listen: 127.0.0.1:6433
    upstream: 127.0.0.1:5432
    clients: [{user: app, password: x}]
    credential: {source: env, username_env: U, password_env: P}
`
	tests := []struct {
		base string
		want []string
	}{
		{"/etc/credswap", []string{
			"/etc/credswap/token", "/etc/ca.pem", "/abs/c.pem", "/etc/credswap/k.pem",
			"/etc/credswap/s.pem", "/etc/credswap/s.key", "/etc/credswap/secrets/app", "/etc/credswap/creds",
		}},
		{"", []string{"token", "../ca.pem", "/abs/c.pem", "./k.pem", "s.pem", "s.key", "secrets/app", "creds"}},
	}
	for _, tt := range tests {
		t.Run("base="+tt.base, func(t *testing.T) {
			c := mustParse(t, doc, ParseOptions{BaseDir: tt.base})
			a := c.Backends[0]
			got := []string{
				c.Admin.TokenFile, a.UpstreamTLS.CAFile, a.UpstreamTLS.CertFile, a.UpstreamTLS.KeyFile,
				a.ClientTLS.CertFile, a.ClientTLS.KeyFile, a.Clients[0].PasswordFile, a.Credential.Path,
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("paths\n got %q\nwant %q", got, tt.want)
			}
			if b := c.Backends[1]; b.Credential.Path != "" || b.Clients[0].PasswordFile != "" {
				t.Errorf("empty paths must stay empty, got %+v", b)
			}
		})
	}
}

// writeFiles creates files (name -> content) under dir; a name ending in
// "/" is a directory.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Run("valid", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{
			"credswap.yaml": minimalDoc,
			"app-password":  "secret\n",
			"orders.json":   `{"username": "u", "password": "p"}`,
		})
		cfg, err := Load(filepath.Join(dir, "credswap.yaml"))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if got, want := cfg.Backends[0].Clients[0].PasswordFile, filepath.Join(dir, "app-password"); got != want {
			t.Errorf("password_file = %q, want %q", got, want)
		}
	})

	t.Run("relative config path", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{
			"conf/credswap.yaml": minimalDoc,
			"conf/app-password":  "secret",
			"conf/orders.json/":  "", // source file accepts a directory
		})
		t.Chdir(dir)
		cfg, err := Load("conf/credswap.yaml")
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if p := cfg.Backends[0].Credential.Path; !filepath.IsAbs(p) {
			t.Errorf("credential.path %q is not absolute", p)
		}
	})

	t.Run("missing password_file", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"credswap.yaml": minimalDoc, "orders.json": "{}"})
		_, err := Load(filepath.Join(dir, "credswap.yaml"))
		if err == nil {
			t.Fatal("Load: want an error")
		}
		errs := fieldErrors(t, err)
		if len(errs) != 1 {
			t.Fatalf("want 1 error, got %v", err)
		}
		want := "backends[0].clients[0].password_file: open " + filepath.Join(dir, "app-password") + ": no such file or directory (line 8)"
		if got := errs[0].Error(); got != want {
			t.Errorf("error\n got %q\nwant %q", got, want)
		}
	})

	t.Run("directory instead of file", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"credswap.yaml": minimalDoc, "app-password/": "", "orders.json": "{}"})
		_, err := Load(filepath.Join(dir, "credswap.yaml"))
		if err == nil || !hasError(fieldErrors(t, err), "backends[0].clients[0].password_file", "is a directory") {
			t.Errorf("want a directory error, got %v", err)
		}
	})

	t.Run("missing config", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("want fs.ErrNotExist, got %v", err)
		}
	})

	t.Run("parse error", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"credswap.yaml": "backends: 3\n"})
		_, err := Load(filepath.Join(dir, "credswap.yaml"))
		if err == nil || !hasError(fieldErrors(t, err), "backends", "must be a list") {
			t.Errorf("want a decode error, got %v", err)
		}
	})

	t.Run("env expansion", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv("CREDSWAP_TEST_CREDS", "creds.json")
		writeFiles(t, dir, map[string]string{
			"credswap.yaml": strings.Replace(minimalDoc, "path: orders.json", "path: ${CREDSWAP_TEST_CREDS}", 1),
			"app-password":  "x",
			"creds.json":    "{}",
		})
		cfg, err := Load(filepath.Join(dir, "credswap.yaml"))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if got, want := cfg.Backends[0].Credential.Path, filepath.Join(dir, "creds.json"); got != want {
			t.Errorf("credential.path = %q, want %q", got, want)
		}
	})
}

// TestExamples parses every configuration in examples/ with the
// environment variables they mention set.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	env := envMap(map[string]string{"VAULT_TOKEN": "t", "ORDERS_ADMIN_USER": "u", "ORDERS_ADMIN_PASSWORD": "p"})
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(b, ParseOptions{LookupEnv: env, BaseDir: filepath.Dir(f)}); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
