package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// BinDirEnv is the environment variable that overrides where the PostgreSQL binaries are found.
const BinDirEnv = "CREDSWAP_PG_BINDIR"

// MissingError reports that a prerequisite of a test server (a program, an OS user) is not
// installed; [PG] and [RequireBinary] skip the test on it unless CI is "true".
type MissingError struct {
	What string // what is missing, e.g. `PostgreSQL program "initdb"`
	Hint string // where it was looked for or how to provide it
}

// Error describes what is missing and where it was looked for.
func (e *MissingError) Error() string {
	if e.Hint == "" {
		return "testenv: missing " + e.What
	}
	return "testenv: missing " + e.What + " (" + e.Hint + ")"
}

// PostgresBinDir returns the directory of the PostgreSQL server binaries: $CREDSWAP_PG_BINDIR if
// set; else `pg_config --bindir`; else the highest version in /usr/lib/postgresql/*/bin; else the
// directory of initdb on PATH. It returns a *MissingError when none has initdb.
func PostgresBinDir() (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if !isExecutable(filepath.Join(dir, "initdb")) {
			return "", &MissingError{What: `PostgreSQL program "initdb"`, Hint: "not in " + BinDirEnv + "=" + dir}
		}
		return dir, nil
	}
	var looked []string
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		out, err := exec.Command(pgConfig, "--bindir").Output()
		if dir := strings.TrimSpace(string(out)); err == nil && dir != "" {
			if isExecutable(filepath.Join(dir, "initdb")) {
				return dir, nil
			}
			looked = append(looked, dir+" (pg_config --bindir)")
		}
	}
	if dir := newestDebianBinDir(); dir != "" {
		return dir, nil
	}
	looked = append(looked, "/usr/lib/postgresql/*/bin")
	if initdb, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(initdb), nil
	}
	looked = append(looked, "PATH")
	return "", &MissingError{
		What: `PostgreSQL server program "initdb"`,
		Hint: "looked in " + strings.Join(looked, ", ") + "; install the PostgreSQL server or set " + BinDirEnv,
	}
}

// newestDebianBinDir returns the bin dir of the highest PostgreSQL major version installed in the
// Debian layout, or "".
func newestDebianBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type candidate struct {
		dir     string
		version []int
	}
	var cands []candidate
	for _, dir := range dirs {
		if !isExecutable(filepath.Join(dir, "initdb")) {
			continue
		}
		var version []int
		for _, part := range strings.Split(filepath.Base(filepath.Dir(dir)), ".") {
			n, err := strconv.Atoi(part)
			if err != nil {
				version = nil
				break
			}
			version = append(version, n)
		}
		cands = append(cands, candidate{dir, version})
	}
	if len(cands) == 0 {
		return ""
	}
	sort.Slice(cands, func(i, j int) bool { return lessVersion(cands[j].version, cands[i].version) })
	return cands[0].dir
}

// lessVersion orders dotted versions numerically; unparsable (nil) versions sort first.
func lessVersion(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// RequireBinary returns the path of program name, looked up on PATH and then in the PostgreSQL
// bin dir. When it is missing the test fails if CI is "true" and is skipped otherwise.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	hint := "not on PATH"
	if dir, err := PostgresBinDir(); err == nil {
		if path := filepath.Join(dir, name); isExecutable(path) {
			return path
		}
		hint += " nor in " + dir
	}
	skipOrFail(t, &MissingError{What: fmt.Sprintf("program %q", name), Hint: hint})
	return ""
}

// InCI reports whether the environment variable CI is "true", where missing prerequisites are
// failures rather than skips.
func InCI() bool { return os.Getenv("CI") == "true" }

// skipOrFail stops the test because of err: a *MissingError skips it outside CI; anything else,
// or anything under CI, fails it.
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	var missing *MissingError
	if errors.As(err, &missing) && !InCI() {
		t.Skipf("%v; skipping (set CI=true to fail instead)", err)
	}
	t.Fatal(err)
}
