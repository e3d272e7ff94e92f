package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/testenv"
)

// unitFile is a parsed systemd unit: section → key → values in order.
type unitFile map[string]map[string][]string

// parseUnit reads a unit file (no line continuations: the kit has none).
func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, "\\"):
			t.Fatalf("%s:%d: line continuations are not expected", path, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not an assignment in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// last is the effective value of a single-valued setting.
func (u unitFile) last(section, key string) (string, bool) {
	v := u[section][key]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// TestSystemdUnit checks deploy/systemd/credswap.service: systemd's own
// verifier accepts it without a warning, its offline security review
// scores it below 1.5 (OK), and its settings fit credswap: Type=notify
// (cmd/proxy speaks sd_notify), SIGHUP on reload, the hardening
// directives, a stop timeout longer than shutdown_timeout, descriptors for
// the client limit, and the example configuration's writable files
// (journal, published credential) inside the state directory.
func TestSystemdUnit(t *testing.T) {
	root := repoRoot(t)
	unitPath := filepath.Join(root, "deploy", "systemd", "credswap.service")
	u := parseUnit(t, unitPath)

	const exe = "/usr/local/bin/credswap"
	const cfgPath = "/etc/credswap/credswap.yaml"
	want := map[string]string{
		"Type":                    "notify",
		"NotifyAccess":            "main",
		"ExecStart":               exe + " run --config " + cfgPath,
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"User":                    "credswap",
		"StateDirectory":          "credswap",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"RestrictSUIDSGID":        "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
	}
	for k, v := range want {
		if got, ok := u.last("Service", k); !ok || got != v {
			t.Errorf("[Service] %s=%q (set: %v), want %q", k, got, ok, v)
		}
	}
	if got := u["Service"]["SystemCallFilter"]; len(got) == 0 || got[0] != "@system-service" {
		t.Errorf("SystemCallFilter=%q, want an @system-service allow list first", got)
	}
	if got, _ := u.last("Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%q", got)
	}

	// The example configuration the unit runs.
	data, err := os.ReadFile(filepath.Join(root, "deploy", "systemd", "credswap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data, config.ParseOptions{BaseDir: filepath.Dir(cfgPath)})
	if err != nil {
		t.Fatalf("deploy/systemd/credswap.yaml: %v", err)
	}
	stop, _ := u.last("Service", "TimeoutStopSec")
	stopD, err := time.ParseDuration(stop)
	if err != nil || stopD <= cfg.ShutdownTimeout.D() {
		t.Errorf("TimeoutStopSec=%s must exceed shutdown_timeout %s, or systemd kills sessions credswap is letting finish", stop, cfg.ShutdownTimeout.D())
	}
	nofile, _ := u.last("Service", "LimitNOFILE")
	limit, err := strconv.Atoi(nofile)
	need := 64
	for _, b := range cfg.Backends {
		need += 3*b.Limits.MaxClientConns + b.Pool.MaxIdle + 2*b.Limits.MaxHandshakes
	}
	if err != nil || limit < need {
		t.Errorf("LimitNOFILE=%s, the example configuration needs at least %d (3 per client session, the pools, and connections logging in or waiting to)", nofile, need)
	}
	stateDir := "/var/lib/credswap/"
	for _, b := range cfg.Backends {
		if b.Rotation.Enabled() && !strings.HasPrefix(b.Rotation.Journal, stateDir) {
			t.Errorf("backend %s: journal %s is outside the writable %s (ProtectSystem=strict)", b.Name, b.Rotation.Journal, stateDir)
		}
		if b.Rotation.Publish.To == "file" && !strings.HasPrefix(b.Credential.Path, stateDir) {
			t.Errorf("backend %s: published credential %s is outside the writable %s", b.Name, b.Credential.Path, stateDir)
		}
	}
	if cfg.Admin.Listen != "127.0.0.1:9649" {
		t.Errorf("admin.listen %s", cfg.Admin.Listen)
	}

	// systemd's verifier needs ExecStart's program to exist: a copy of the
	// unit names a freshly built credswap instead.
	analyze := testenv.RequireBinary(t, "systemd-analyze")
	dir := t.TempDir()
	bin := filepath.Join(dir, "credswap")
	run(t, root, nil, "go", "build", "-o", bin, "./cmd/proxy")
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dir, "credswap.service")
	os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(unit), exe, bin)), 0o644)
	if out := run(t, dir, nil, analyze, "verify", copyPath); strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify warns:\n%s", out)
	}
	// Exposure 1.2 when written; fail if hardening is lost.
	out, err := command(dir, nil, analyze, "security", "--offline=true", "--threshold=15", copyPath).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security --offline: exposure over 1.5 (%v):\n%s", err, out)
	}
}
