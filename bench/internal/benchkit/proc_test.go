//go:build linux

package benchkit

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProcessStop(t *testing.T) {
	cmd := exec.Command("sh", "-c", "echo started; exec sleep 60")
	p, err := StartProcess("sleeper", cmd, filepath.Join(t.TempDir(), "sleeper.log"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "sleeper" || p.PID() <= 0 || !strings.HasSuffix(p.LogFile(), "sleeper.log") {
		t.Errorf("Process: name %q pid %d log %q", p.Name(), p.PID(), p.LogFile())
	}
	if !cmd.SysProcAttr.Setpgid || cmd.SysProcAttr.Pdeathsig != syscall.SIGTERM {
		t.Errorf("SysProcAttr = %+v, want Setpgid and Pdeathsig SIGTERM", cmd.SysProcAttr)
	}
	if pgid, err := syscall.Getpgid(p.PID()); err != nil || pgid != p.PID() {
		t.Errorf("process group %d (%v), want its own, %d", pgid, err, p.PID())
	}
	if gone, err := p.Exited(); gone || err != nil || p.WaitErr() != nil {
		t.Errorf("Exited = %v, %v before the stop", gone, err)
	}
	waitFor(t, "the log line", func() bool { return strings.Contains(p.LogTail(), "started") })

	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	if gone, _ := p.Exited(); !gone || p.WaitErr() == nil {
		t.Errorf("after Stop: exited %v, wait error %v; want exited by SIGTERM", gone, p.WaitErr())
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestProcessExitedBefore(t *testing.T) {
	p, err := StartProcess("quitter", exec.Command("sh", "-c", "echo giving up; exit 3"), filepath.Join(t.TempDir(), "quitter.log"))
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	var exitErr *exec.ExitError
	if !errors.As(p.WaitErr(), &exitErr) || exitErr.ExitCode() != 3 {
		t.Errorf("WaitErr = %v, want exit status 3", p.WaitErr())
	}
	err = p.Stop()
	if err == nil || !strings.Contains(err.Error(), "quitter (pid ") || !strings.Contains(err.Error(), "had exited before the end of the benchmark (exit status 3)") ||
		!strings.Contains(err.Error(), "giving up") {
		t.Errorf("Stop = %v", err)
	}

	// JoinStop leaves out the stop error of a process that had exited: err says so already.
	start := errors.New("start failed")
	if got := JoinStop(start, p); got != start {
		t.Errorf("JoinStop of an exited process = %v", got)
	}
}

func TestJoinStopRunning(t *testing.T) {
	p, err := StartProcess("sleeper", exec.Command("sleep", "60"), filepath.Join(t.TempDir(), "sleeper.log"))
	if err != nil {
		t.Fatal(err)
	}
	start := errors.New("not ready")
	if got := JoinStop(start, p); !errors.Is(got, start) || got.Error() != "not ready" {
		t.Errorf("JoinStop = %v", got)
	}
	if gone, _ := p.Exited(); !gone {
		t.Error("JoinStop did not stop the process")
	}
}

func TestStartProcessErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := StartProcess("ghost", exec.Command(filepath.Join(dir, "nonexistent")), filepath.Join(dir, "ghost.log")); err == nil ||
		!strings.HasPrefix(err.Error(), "ghost: start ") {
		t.Errorf("StartProcess of a missing program: %v", err)
	}
	if _, err := StartProcess("ghost", exec.Command("true"), filepath.Join(dir, "no", "such", "dir.log")); err == nil ||
		!strings.HasPrefix(err.Error(), "ghost: open log: ") {
		t.Errorf("StartProcess with an unwritable log: %v", err)
	}
}
