//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	stopTimeout  = 15 * time.Second // SIGTERM to SIGKILL
	logTailBytes = 4096
)

// process is a server program (credswap) run as a child in its own process group, so
// that a Ctrl-C aimed at the terminal's group reaches only the benchmark, which then stops its
// servers in order. It is started by startProcess and stopped by stop; stop is idempotent and
// safe to call from any goroutine.
type process struct {
	name    string
	pid     int
	logFile string // the program's stdout and stderr

	done    chan struct{} // closed once the program has exited; waitErr is set before
	waitErr error         // read only after done is closed
	stop    func() error  // sync.OnceValue of shutdown
}

// startProcess starts cmd with its output appended to logFile. The program gets SIGTERM from
// the kernel if the benchmark dies without stopping it (PR_SET_PDEATHSIG): the signal is tied to
// the OS thread that forks, so a goroutine locks a thread, starts the program from it and keeps
// it until the program exits.
func startProcess(name string, cmd *exec.Cmd, logFile string) (*process, error) {
	logf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: open log: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM

	p := &process{name: name, logFile: logFile, done: make(chan struct{})}
	p.stop = sync.OnceValue(p.shutdown)
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		logf.Close() // the child holds its own descriptor
		started <- err
		if err != nil {
			return
		}
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", name, cmd.Path, err)
	}
	p.pid = cmd.Process.Pid
	return p, nil
}

// exited reports whether the program has exited, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// shutdown sends SIGTERM, waits up to stopTimeout, then kills. It reports an error when the
// program had exited on its own before, or had to be killed.
func (p *process) shutdown() error {
	if gone, err := p.exited(); gone {
		return fmt.Errorf("%s (pid %d) had exited before the end of the benchmark (%v); log:\n%s", p.name, p.pid, err, p.logTail())
	}
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s: signal pid %d: %w", p.name, p.pid, err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.pid, stopTimeout)
}

// logTail returns the last lines of the program's log.
func (p *process) logTail() string { return fileTail(p.logFile) }

// fileTail returns at most the last 30 lines of the last 4 KiB of file.
func fileTail(file string) string {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off := max(0, fi.Size()-logTailBytes)
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return lastLines(string(b), 30)
}

// lastLines returns the last n lines of s, without trailing blank lines.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// indent prefixes every line of s with four spaces.
func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
