// Package deploy holds the tests of the deployment kit: the container
// image (../Dockerfile, ../scripts/image.sh), the systemd unit, the
// Prometheus alerts, the Grafana dashboard, and that every credswap
// metric those use is served by a running proxy. The Kubernetes manifests
// are checked by their own module, kubernetes/manifest_test, which
// scripts/test.sh runs. docs/operations.md explains the kit.
package deploy

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/credswap/credswap/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// repoRoot is the repository's top directory (tests run in deploy/).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Dir(filepath.Dir(file))
}

// run runs a program and returns its combined output; it fails the test
// when the program fails.
func run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := command(dir, env, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func command(dir string, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	return cmd
}
