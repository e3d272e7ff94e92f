package benchkit

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const (
	// ModulePath is the module the benchmarks build credswap from.
	ModulePath = "github.com/credswap/credswap"

	buildTimeout = 10 * time.Minute
)

// ModuleRoot returns the directory of the credswap module the benchmark runs in, from
// `go env GOMOD` in the current directory. tool is the benchmark's directory under bench/, for
// the hint of how to run it.
func ModuleRoot(ctx context.Context, goBin, tool string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module: run the benchmark from the credswap repository (go run ./bench/%s)", tool)
	}
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if mod, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			if strings.Trim(strings.TrimSpace(mod), `"`) != ModulePath {
				return "", fmt.Errorf("%s is module %s, not %s: run the benchmark from the credswap repository", gomod, mod, ModulePath)
			}
			return filepath.Dir(gomod), nil
		}
	}
	return "", fmt.Errorf("%s: no module line", gomod)
}

// BuildCredswap runs `go build -o out ./cmd/proxy` in the module root, so every benchmark run
// measures the code as it is now.
func BuildCredswap(ctx context.Context, goBin, root, out string) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./cmd/proxy")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s ./cmd/proxy: %w\n%s", out, err, Indent(LastLines(string(b), 20)))
	}
	return nil
}
