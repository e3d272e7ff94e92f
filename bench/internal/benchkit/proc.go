//go:build linux

package benchkit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// stopTimeout is how long Stop waits after SIGTERM before it sends SIGKILL.
const stopTimeout = 15 * time.Second

// Process is a server program (credswap, pgbouncer) run as a child in its own process group, so
// that a Ctrl-C aimed at the terminal's group reaches only the benchmark, which then stops its
// servers in order. It is started by StartProcess and stopped by Stop; Stop is idempotent and
// safe to call from any goroutine.
type Process struct {
	name    string
	pid     int
	logFile string // the program's stdout and stderr

	done    chan struct{} // closed once the program has exited; waitErr is set before
	waitErr error         // read only after done is closed
	stop    func() error  // sync.OnceValue of shutdown
}

// StartProcess starts cmd, named name in messages, with its output appended to logFile. The
// program gets SIGTERM from the kernel if the benchmark dies without stopping it
// (PR_SET_PDEATHSIG): the signal is tied to the OS thread that forks, so a goroutine locks a
// thread, starts the program from it and keeps it until the program exits. cmd.SysProcAttr may
// be set (for a Credential); its Setpgid and Pdeathsig are overwritten.
func StartProcess(name string, cmd *exec.Cmd, logFile string) (*Process, error) {
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

	p := &Process{name: name, logFile: logFile, done: make(chan struct{})}
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

// Name is the program's name in messages.
func (p *Process) Name() string { return p.name }

// PID is the program's process ID.
func (p *Process) PID() int { return p.pid }

// LogFile is the file the program's stdout and stderr go to.
func (p *Process) LogFile() string { return p.logFile }

// Done is closed once the program has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// WaitErr is how the program exited (the error of exec.Cmd.Wait) once Done is closed; nil
// while it runs.
func (p *Process) WaitErr() error {
	_, err := p.Exited()
	return err
}

// Exited reports whether the program has exited, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, waits up to 15 s, then kills. It reports an error when the program had
// exited on its own before, or had to be killed. Only the first call stops; later ones return
// its result.
func (p *Process) Stop() error { return p.stop() }

func (p *Process) shutdown() error {
	if gone, err := p.Exited(); gone {
		return fmt.Errorf("%s (pid %d) had exited before the end of the benchmark (%v); log:\n%s", p.name, p.pid, err, p.LogTail())
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

// LogTail returns at most the last 30 lines of the last 4 KiB of the program's log, or why it
// cannot.
func (p *Process) LogTail() string { return fileTail(p.logFile) }
