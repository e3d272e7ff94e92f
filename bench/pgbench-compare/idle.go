//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credswap/credswap/bench/internal/benchkit"
)

// idleResult is the memory one proxy holds per idle client session.
type idleResult struct {
	target   string
	sessions int
	rssPer   float64 // bytes of resident memory per session
	threads  int     // OS threads after opening the sessions
	err      error
}

// measureIdle opens n client sessions through t, runs one query on each so
// that every session holds a backend connection, lets them sit idle and
// reports the growth of the proxy's resident memory per session.
func measureIdle(ctx context.Context, t *target, l benchkit.Login, addr string, n int) idleResult {
	r := idleResult{target: t.name, sessions: n}
	before, err := vmRSS(t.proc.PID())
	if err != nil {
		r.err = err
		return r
	}
	cfg, err := benchkit.PgConnConfig(addr, l, benchDB, dialTimeout, appName)
	if err != nil {
		r.err = err
		return r
	}
	conns := make([]*pgconn.PgConn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	for range n {
		cctx, cancel := context.WithTimeout(ctx, dialTimeout)
		c, err := pgconn.ConnectConfig(cctx, cfg)
		if err == nil {
			_, err = c.Exec(cctx, "SELECT 1").ReadAll()
		}
		cancel()
		if err != nil {
			r.err = fmt.Errorf("session %d: %w", len(conns)+1, err)
			return r
		}
		conns = append(conns, c)
	}
	select { // let the proxy settle (a GC cycle, stacks shrink)
	case <-ctx.Done():
		r.err = ctx.Err()
		return r
	case <-time.After(3 * time.Second):
	}
	after, err := vmRSS(t.proc.PID())
	if err != nil {
		r.err = err
		return r
	}
	r.rssPer = float64(after-before) / float64(n)
	r.threads, _ = threadCount(t.proc.PID())
	return r
}

// vmRSS reads the resident set size of pid in bytes.
func vmRSS(pid int) (int64, error) {
	return statusField(pid, "VmRSS:")
}

func threadCount(pid int) (int, error) {
	n, err := statusField(pid, "Threads:")
	return int(n), err
}

// statusField reads a numeric field of /proc/PID/status (kB values in bytes).
func statusField(pid int, name string) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name)
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			break
		}
		v, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, err
		}
		if len(fields) > 1 && fields[1] == "kB" {
			v *= 1024
		}
		return v, nil
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, name)
}

// renderIdle formats the idle-memory results as a markdown table.
func renderIdle(rs []idleResult) string {
	var b strings.Builder
	b.WriteString("\n| proxy | idle sessions | resident memory per session | OS threads |\n|---|---:|---:|---:|\n")
	for _, r := range rs {
		if r.err != nil {
			fmt.Fprintf(&b, "| %s | %d | FAIL: %s | |\n", r.target, r.sessions, strings.ReplaceAll(r.err.Error(), "|", "/"))
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f KiB | %d |\n", r.target, r.sessions, r.rssPer/1024, r.threads)
	}
	return b.String()
}
