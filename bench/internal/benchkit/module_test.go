package benchkit

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestModuleRoot(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	root, err := ModuleRoot(context.Background(), goBin, "swapbench")
	if err != nil {
		t.Fatal(err)
	}
	// This package is bench/internal/benchkit in the module.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "bench", "internal", "benchkit"); wd != want {
		t.Errorf("ModuleRoot = %s, but the package is in %s", root, wd)
	}

	// Outside a module the error tells how to run the benchmark.
	cmdDir := t.TempDir()
	t.Chdir(cmdDir)
	t.Setenv("GO111MODULE", "")
	t.Setenv("GOFLAGS", "")
	if _, err := ModuleRoot(context.Background(), goBin, "swapbench"); err == nil || !strings.Contains(err.Error(), "(go run ./bench/swapbench)") {
		t.Errorf("ModuleRoot outside a module: %v", err)
	}
}
