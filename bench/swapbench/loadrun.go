//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/credswap/credswap/bench/internal/benchkit"
	"github.com/credswap/credswap/internal/testenv"
)

const (
	// pgbenchStartTimeout bounds pgbench's vacuum and connections before its first progress line.
	pgbenchStartTimeout = 2 * time.Minute
	// pgbenchGrace is how long pgbench may take beyond -T to finish and report.
	pgbenchGrace = 2 * time.Minute
)

// loadRun is part 2: one pgbench run with rotations.
type loadRun struct {
	args      []string
	summary   pgbenchSummary
	summErr   error // the report could not be read
	exitErr   error // pgbench exited non-zero
	aborted   int   // "client N aborted" messages
	stderr    string
	t0        time.Time // start of the run: the first progress line minus its elapsed seconds
	rotations []rotation
	txns      int // lines in the per-transaction logs
	logFiles  int
	analysis  loadResult
}

func (b *bench) pgbenchArgs(prefix string) []string {
	return []string{
		"-c", strconv.Itoa(b.o.clients),
		"-j", strconv.Itoa(b.o.threads),
		"-T", strconv.Itoa(b.o.seconds),
		"-P", "1",
		"-M", "prepared",
		"--log", "--log-prefix", prefix,
	}
}

// runLoad runs pgbench through the proxy and rotates the credential at the configured seconds
// of the run, waiting for each drain. pgbench's failure is reported in the result, not as an
// error, so that the report shows it; an error means the measurement itself failed.
func (b *bench) runLoad(ctx context.Context) (*loadRun, error) {
	// Wait until part 1's sessions are gone, so the drains below move only pgbench's.
	if err := b.waitSessions(ctx, 0); err != nil {
		return nil, err
	}
	logDir := filepath.Join(b.work, "pgbench-logs")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		return nil, err
	}
	prefix := filepath.Join(logDir, "pgb")
	res := &loadRun{args: b.pgbenchArgs(prefix)}

	runCtx, cancel := context.WithTimeout(ctx, pgbenchStartTimeout+time.Duration(b.o.seconds)*time.Second+pgbenchGrace)
	defer cancel()
	cmd := testenv.Command(runCtx, b.pg.Bin("pgbench"), benchkit.LibpqEnv(b.cs.Addr, b.cs.Local, benchDB), res.args...)
	cmd.Dir = logDir
	cmd.WaitDelay = 5 * time.Second
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pgbench: %w", err)
	}
	// The stderr reader finds the first progress line; Wait runs once it has read everything.
	var (
		mu     sync.Mutex
		stderr strings.Builder
	)
	firstProgress := make(chan time.Time, 1)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderrPipe)
		seen := false
		for sc.Scan() {
			now := time.Now()
			line := sc.Text()
			mu.Lock()
			stderr.WriteString(line + "\n")
			mu.Unlock()
			if secs, ok := progressSeconds(line); ok {
				if !seen {
					seen = true
					firstProgress <- now.Add(-time.Duration(secs * float64(time.Second)))
				}
				if int(secs)%10 == 0 {
					b.logf("  pgbench %s", line)
				}
			}
		}
		exited <- cmd.Wait()
	}()
	stderrText := func() string {
		mu.Lock()
		defer mu.Unlock()
		return stderr.String()
	}

	var exitErr error
	done := false
	select {
	case res.t0 = <-firstProgress:
	case exitErr = <-exited:
		done = true
	case <-runCtx.Done():
		<-exited
		return nil, fmt.Errorf("pgbench: no progress line: %w\n%s", context.Cause(runCtx), benchkit.Indent(benchkit.LastLines(stderrText(), 10)))
	}
	if !done {
		b.logf("  pgbench run started at %s", res.t0.UTC().Format("15:04:05.000"))
		for i, at := range b.o.rotateAt {
			timer := time.NewTimer(time.Until(res.t0.Add(time.Duration(at) * time.Second)))
			select {
			case <-timer.C:
			case exitErr = <-exited:
				done = true
			case <-runCtx.Done():
			}
			timer.Stop()
			if done {
				break
			}
			if runCtx.Err() != nil {
				<-exited
				return nil, fmt.Errorf("pgbench run: %w", context.Cause(runCtx))
			}
			r, err := b.rotate(runCtx, drainTimeout)
			if err != nil {
				cancel()
				<-exited
				return nil, fmt.Errorf("rotation %d during pgbench: %w", i+1, err)
			}
			res.rotations = append(res.rotations, r)
			b.logf("  rotation %d at %.2f s: generation %d (%s), drain complete %v after the file was replaced; results %v",
				i+1, r.wrote.Sub(res.t0).Seconds(), r.gen, r.user, r.seen.Sub(r.wrote).Round(time.Millisecond), r.st.Drain.Results)
		}
	}
	if !done {
		exitErr = <-exited
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("pgbench run: %w", context.Cause(ctx))
	}
	res.stderr = stderrText()
	res.exitErr = exitErr
	res.aborted = abortedClients(res.stderr)
	res.summary, res.summErr = parsePgbenchSummary(stdout.String())
	if res.t0.IsZero() {
		return nil, fmt.Errorf("pgbench exited before its first progress line (%v):\n%s", exitErr, benchkit.Indent(benchkit.LastLines(stdout.String()+res.stderr, 15)))
	}

	files, err := filepath.Glob(prefix + ".*")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("pgbench wrote no per-transaction log %s.*", prefix)
	}
	var txns []txn
	for _, f := range files {
		t, err := readPgbenchLog(f)
		if err != nil {
			return nil, err
		}
		txns = append(txns, t...)
	}
	res.logFiles, res.txns = len(files), len(txns)
	var rotated []time.Time
	for _, r := range res.rotations {
		rotated = append(rotated, r.wrote)
	}
	res.analysis = analyzeLoad(txns, res.t0, b.o.seconds, b.o.rotateAt, rotated)
	return res, nil
}

func readPgbenchLog(file string) ([]txn, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := parsePgbenchLog(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(file), err)
	}
	return t, nil
}

// waitSessions polls /v1/status until the proxy has n client sessions.
func (b *bench) waitSessions(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		st, err := b.admin.status(ctx)
		if err == nil && st.Sessions.Total == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("credswap still has %d sessions, want %d: %w", st.Sessions.Total, n, context.Cause(ctx)), err)
		case <-tick.C:
		}
	}
}
