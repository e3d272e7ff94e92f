//go:build linux

package benchkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// CPUTicks returns the user plus system CPU time the process pid has used, in clock ticks,
// from /proc/PID/stat (fields 14 and 15, see proc(5)). Threads are included.
func CPUTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	return ParseStatTicks(string(b))
}

// ParseStatTicks extracts utime+stime from the text of /proc/PID/stat. The second field, the
// command name in parentheses, may itself hold spaces and parentheses, so the fields are counted
// from the last ')'.
func ParseStatTicks(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc stat: no ')' after the command name in %q", Truncate(stat, 80))
	}
	// After ")" come field 3 (state), 4, ...: utime (14) and stime (15) are at 11 and 12.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc stat: %d fields after the command name, want at least 13", len(f))
	}
	utime, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc stat utime: %w", err)
	}
	stime, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc stat stime: %w", err)
	}
	return utime + stime, nil
}

// ClockTicks returns `getconf CLK_TCK`, the unit of the CPU times in /proc/PID/stat.
func ClockTicks(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getconf", "CLK_TCK").Output()
	if err != nil {
		return 0, fmt.Errorf("getconf CLK_TCK: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("getconf CLK_TCK: unexpected output %q", strings.TrimSpace(string(out)))
	}
	return n, nil
}

// CodeVersion names the commit of the working tree at root and the files that differ from it
// (tracked files only), since the benchmark builds credswap from the working tree.
func CodeVersion(ctx context.Context, root string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	commit, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return fmt.Sprintf("(git: %v)", err)
	}
	out, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output()
	if err != nil {
		return fmt.Sprintf("commit %s (git status: %v)", strings.TrimSpace(string(commit)), err)
	}
	var changed []string
	for line := range strings.Lines(string(out)) {
		// "XY path": two status letters and a space.
		if line = strings.TrimRight(line, "\n"); len(line) > 3 {
			changed = append(changed, line[3:])
		}
	}
	if len(changed) == 0 {
		return "commit " + strings.TrimSpace(string(commit)) + ", no uncommitted changes to tracked files"
	}
	return fmt.Sprintf("commit %s plus uncommitted changes to %s", strings.TrimSpace(string(commit)), strings.Join(changed, ", "))
}
