package benchkit

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/credswap/credswap/internal/testenv"
)

// Header is what every benchmark report says about the run: when, on what machine, with which
// versions and command line. A report adds its own fields.
type Header struct {
	Date      time.Time // when the benchmark started
	CPU       string    // the CPU model
	Cores     int       // logical CPUs (runtime.NumCPU)
	Kernel    string    // `uname -r`
	GoVersion string    // `go env GOVERSION`, e.g. "go1.26.0"
	Postgres  string    // `postgres --version`
	Pgbench   string    // `pgbench --version`
	Command   string    // how the benchmark was invoked, as a shell command
	LoadStart string    // /proc/loadavg before the runs
	LoadEnd   string    // and after; the benchmark sets it at the end with LoadAverage
}

// Describe collects the header of a run of the benchmark tool (its directory under bench/)
// started at started with the arguments args, using goBin and the programs of pg. Versions that
// cannot be read are shown as such rather than failing the benchmark.
func Describe(ctx context.Context, started time.Time, tool string, args []string, goBin string, pg *testenv.Postgres) Header {
	h := DescribeHost(ctx, started, tool, args, goBin)
	h.Postgres = FirstLine(ctx, pg.Bin("postgres"), "--version")
	h.Pgbench = FirstLine(ctx, pg.Bin("pgbench"), "--version")
	return h
}

// DescribeHost is Describe for a benchmark that runs no PostgreSQL programs (sysbench-compare):
// Postgres and Pgbench are left empty, and the benchmark reports its own programs' versions.
func DescribeHost(ctx context.Context, started time.Time, tool string, args []string, goBin string) Header {
	return Header{
		Date:      started,
		CPU:       cpuModel(),
		Cores:     runtime.NumCPU(),
		Kernel:    FirstLine(ctx, "uname", "-r"),
		GoVersion: FirstLine(ctx, goBin, "env", "GOVERSION"),
		Command:   commandLine(tool, args),
		LoadStart: LoadAverage(),
	}
}

// FirstLine returns the first line of a program's output, or why there is none.
func FirstLine(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return fmt.Sprintf("(%s: %v)", filepath.Base(name), err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// LoadAverage returns the 1, 5 and 15 minute load averages from /proc/loadavg: other work on
// the machine during the benchmark shows there.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown CPU"
}

// commandLine is how the benchmark tool was invoked with args, as a shell command.
func commandLine(tool string, args []string) string {
	parts := []string{"go run ./bench/" + tool}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
