package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// setVaultDeathSignal asks the kernel to SIGKILL the Vault server when the thread that started it
// exits (in practice: when the test binary dies without stopping it). SIGKILL rather than the
// SIGINT postgres gets, because a server stopped by Vault.Pause would not act on anything else,
// and a dev server has nothing on disk to shut down cleanly.
func setVaultDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }

// waitStopped waits until every thread of process pid is stopped. kill(SIGSTOP) returns before the
// threads have stopped, and a thread that is running when it is sent can still answer a request
// that arrives right after; so Pause waits for /proc/pid/task/*/stat to show state T in all.
func waitStopped(ctx context.Context, pid int) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		running, err := runningThreads(pid)
		if err != nil {
			return err
		}
		if running == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d threads of pid %d not stopped: %w", running, pid, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// runningThreads counts the threads of pid whose state is not stopped (T, or t when traced).
func runningThreads(pid int) (int, error) {
	stats, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "stat"))
	if err != nil || len(stats) == 0 {
		return 0, fmt.Errorf("threads of pid %d: not in /proc (%v)", pid, err)
	}
	running := 0
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		// "tid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			return 0, fmt.Errorf("unexpected %s: %q", f, b)
		}
		if s := b[i+2]; s != 'T' && s != 't' {
			running++
		}
	}
	return running, nil
}
