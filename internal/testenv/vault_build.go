package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// VaultBinEnv is the environment variable naming a prebuilt Vault server binary to use instead
	// of building tools/vault.
	VaultBinEnv = "CREDSWAP_VAULT_BIN"
	// CacheDirEnv is the environment variable that overrides where built tools are cached.
	CacheDirEnv = "CREDSWAP_CACHE_DIR"

	modulePath     = "github.com/credswap/credswap"
	vaultToolsDir  = "tools/vault" // relative to the module root
	vaultPkg       = "github.com/hashicorp/vault"
	vaultBuildWait = 15 * time.Minute // first build: module download plus ~3-4 min of compiling on 2 cores
)

// VaultBinary returns the path of the Vault server binary pinned by tools/vault, building it on
// first use (see [BuildVault]). When it cannot be had (no `go`, no tools/vault, a failed build) the
// test fails if CI is "true" and is skipped otherwise.
func VaultBinary(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), vaultBuildWait)
	defer cancel()
	bin, err := BuildVault(ctx)
	if err != nil {
		skipOrFail(t, err)
	}
	return bin
}

// BuildVault returns the path of the Vault server binary pinned by tools/vault, building it once
// into the cache directory when it is not there yet.
//
// $CREDSWAP_VAULT_BIN, when set, names a prebuilt binary that is used as is. Otherwise the binary
// is cached as DIR/VERSION-KEY/vault, where DIR is $CREDSWAP_CACHE_DIR, else
// $(go env GOCACHE)/credswap-vault, else os.UserCacheDir()/credswap/vault; VERSION is the Vault
// version required in tools/vault/go.mod and KEY a hash of tools/vault's go.mod and go.sum, so a
// version change builds anew. tools/vault is found by walking up from the working directory to the
// root of module github.com/credswap/credswap.
//
// Concurrent callers, in this process or in other test binaries, build at most once: the build
// holds a lock file in DIR, writes to a temp file and renames it into place, so a binary at the
// final path is always complete. The first build takes minutes; ctx bounds the wait for it.
// Missing `go` or tools/vault, or a failed build, is reported as a *MissingError (so tests skip
// on it outside CI) carrying the tail of the build output.
func BuildVault(ctx context.Context) (string, error) {
	if bin := os.Getenv(VaultBinEnv); bin != "" {
		if !isExecutable(bin) {
			return "", &MissingError{What: "Vault server binary", Hint: VaultBinEnv + "=" + bin + " is not an executable file"}
		}
		return bin, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", &MissingError{What: `program "go" to build the Vault server`, Hint: "not on PATH; or set " + VaultBinEnv}
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	toolsDir := filepath.Join(root, filepath.FromSlash(vaultToolsDir))
	version, key, err := vaultBuildKey(toolsDir)
	if err != nil {
		return "", err
	}
	cacheDir, err := vaultCacheDir(ctx, goBin)
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(cacheDir, version+"-"+key)
	// The name stays "vault" so the process reads as `vault server -dev ...` in ps.
	bin := filepath.Join(binDir, "vault")
	if isExecutable(bin) {
		removeStaleBuilds(ctx, cacheDir, binDir)
		return bin, nil
	}

	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("testenv: vault cache dir: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, ".build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if isExecutable(bin) { // built by whoever held the lock before us
		return bin, nil
	}
	if err := buildVault(ctx, goBin, toolsDir, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// removeStaleBuilds removes the temp files of builds into binDir that
// were killed before they could clean up (a test binary stopped
// mid-build). It takes the build lock, so no build that is still running
// loses its file; errors are ignored: the files only take space.
func removeStaleBuilds(ctx context.Context, cacheDir, binDir string) {
	stale, _ := filepath.Glob(filepath.Join(binDir, ".vault-*.tmp"))
	if len(stale) == 0 {
		return
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, ".build.lock"))
	if err != nil {
		return
	}
	defer unlock()
	stale, _ = filepath.Glob(filepath.Join(binDir, ".vault-*.tmp"))
	for _, f := range stale {
		os.Remove(f)
	}
}

// buildVault runs `go build` in toolsDir to a temp file next to bin and renames it to bin.
func buildVault(ctx context.Context, goBin, toolsDir, bin string) error {
	tmp, err := os.CreateTemp(filepath.Dir(bin), ".vault-*.tmp")
	if err != nil {
		return fmt.Errorf("testenv: vault build: %w", err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // a no-op after the rename

	cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmpName, vaultPkg)
	cmd.Dir = toolsDir
	// -mod=mod: tools/vault is its own module and may record missing go.sum lines itself;
	// GOWORK=off: a go.work around the checkout must not pull tools/vault into a workspace.
	cmd.Env = append(withoutEnv(os.Environ(), "GOFLAGS", "GOWORK"), "GOFLAGS=-mod=mod", "GOWORK=off")
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return &MissingError{
			What: "Vault server binary",
			Hint: fmt.Sprintf("`go build %s` in %s failed after %v: %v; set %s to use a prebuilt one\n%s",
				vaultPkg, toolsDir, time.Since(start).Round(time.Second), err, VaultBinEnv, tail(out, 30)),
		}
	}
	if err := os.Chmod(tmpName, 0o755); err != nil {
		return fmt.Errorf("testenv: vault build: %w", err)
	}
	if err := os.Rename(tmpName, bin); err != nil {
		return fmt.Errorf("testenv: vault build: %w", err)
	}
	return nil
}

// moduleRoot walks up from the working directory to the directory whose go.mod declares
// github.com/credswap/credswap. Nested modules (such as tools/vault itself) are passed over.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	for dir := wd; ; {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && goModPath(data) == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", &MissingError{What: "module " + modulePath, Hint: "no go.mod declaring it in " + wd + " or above"}
		}
		dir = parent
	}
}

// goModPath returns the module path declared in a go.mod, or "".
func goModPath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "//")
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`+"`")
		}
	}
	return ""
}

// vaultBuildKey returns the Vault version required by toolsDir/go.mod and a hash of its go.mod
// and go.sum.
func vaultBuildKey(toolsDir string) (version, key string, err error) {
	h := sha256.New()
	for _, name := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(toolsDir, name))
		if err != nil {
			return "", "", &MissingError{What: "the Vault tools module", Hint: err.Error()}
		}
		if name == "go.mod" {
			version = requiredVersion(data, vaultPkg)
		}
		fmt.Fprintf(h, "%s %d\n", name, len(data))
		h.Write(data)
	}
	if version == "" {
		return "", "", fmt.Errorf("testenv: %s/go.mod does not require %s", toolsDir, vaultPkg)
	}
	return version, hex.EncodeToString(h.Sum(nil))[:16], nil
}

// requiredVersion returns the version of module path in a go.mod's require directives, or "".
func requiredVersion(gomod []byte, path string) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "//")
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "require" {
			f = f[1:]
		}
		if len(f) == 2 && f[0] == path {
			return f[1]
		}
	}
	return ""
}

// vaultCacheDir picks the directory that holds built Vault binaries.
func vaultCacheDir(ctx context.Context, goBin string) (string, error) {
	if dir := os.Getenv(CacheDirEnv); dir != "" {
		return filepath.Join(dir, "vault"), nil
	}
	if out, err := exec.CommandContext(ctx, goBin, "env", "GOCACHE").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" && dir != "off" && filepath.IsAbs(dir) {
			return filepath.Join(dir, "credswap-vault"), nil
		}
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", &MissingError{What: "a cache dir for the Vault server", Hint: err.Error() + "; set " + CacheDirEnv}
	}
	return filepath.Join(dir, "credswap", "vault"), nil
}

// lockFile takes an exclusive flock on path, polling until it is free or ctx ends, and returns
// the function that releases it. flock locks belong to the open file, so goroutines of one
// process exclude each other as well as other processes; the kernel drops the lock if we die.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testenv: build lock: %w", err)
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing the file releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("testenv: build lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("testenv: waiting for another process to build the Vault server (%s): %w", path, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// withoutEnv returns env without the variables named.
func withoutEnv(env []string, names ...string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || name == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}
