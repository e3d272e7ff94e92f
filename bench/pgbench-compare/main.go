//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/credswap/credswap/internal/testenv"
)

var allModes = []string{"simple", "extended", "prepared"}

// options are the command-line flags.
type options struct {
	seconds int
	rounds  int
	modes   []string
	clients []int
	scale   int
	out     string
	targets []string // in the order of -targets; runs rotate from it
	idle    int      // idle sessions for the memory measurement (0: skip)
	args    []string // the arguments as given, for the report
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{args: args}
	fs := flag.NewFlagSet("pgbench-compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./bench/pgbench-compare [flags]   (install pgbouncer first: scripts/deps.sh bench)")
		fs.PrintDefaults()
	}
	fs.IntVar(&o.seconds, "T", 10, "`seconds` per pgbench run")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds over every mode, client count and target")
	modes := fs.String("modes", strings.Join(allModes, ","), "pgbench protocol modes (-M), comma-separated")
	clients := fs.String("clients", "1,8,32", "pgbench client counts (-c), comma-separated")
	fs.IntVar(&o.scale, "scale", 10, "pgbench scale factor (-i -s)")
	fs.StringVar(&o.out, "out", "", "also write the markdown report to `FILE`")
	fs.IntVar(&o.idle, "idle", 200, "idle sessions opened through each proxy to measure its memory per session (0: skip)")
	targets := fs.String("targets", strings.Join(allTargets, ","), "targets, comma-separated: "+strings.Join(allTargets, ", "))
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	if o.seconds < 1 {
		errs = append(errs, fmt.Errorf("-T %d: must be at least 1", o.seconds))
	}
	if o.rounds < 1 {
		errs = append(errs, fmt.Errorf("-rounds %d: must be at least 1", o.rounds))
	}
	if o.scale < 1 {
		errs = append(errs, fmt.Errorf("-scale %d: must be at least 1", o.scale))
	}
	var err error
	if o.modes, err = parseList("-modes", *modes, allModes); err != nil {
		errs = append(errs, err)
	}
	if o.targets, err = parseList("-targets", *targets, allTargets); err != nil {
		errs = append(errs, err)
	}
	for _, f := range splitList(*clients) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("-clients: %q is not a positive integer", f))
			continue
		}
		if !slices.Contains(o.clients, n) {
			o.clients = append(o.clients, n)
		}
	}
	if len(splitList(*clients)) == 0 {
		errs = append(errs, errors.New("-clients: empty"))
	}
	return o, errors.Join(errs...)
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseList parses a comma-separated subset of allowed, without duplicates, keeping its order.
func parseList(flagName, s string, allowed []string) ([]string, error) {
	var out []string
	for _, f := range splitList(s) {
		if !slices.Contains(allowed, f) {
			return nil, fmt.Errorf("%s: unknown %q (want some of %s)", flagName, f, strings.Join(allowed, ","))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: empty", flagName)
	}
	return out, nil
}

func (o options) has(target string) bool { return slices.Contains(o.targets, target) }

func main() { os.Exit(mainCode()) }

func mainCode() int {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgbench-compare:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal the benchmark cleans up; a second one gets the default action.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pgbench-compare:", err)
		return 1
	}
	return 0
}

// target is one thing pgbench connects to.
type target struct {
	name  string
	env   []string // libpq environment
	proc  *process // the proxy whose CPU is measured; nil for direct
	addr  string   // where clients connect (proxies)
	login login    // the login clients use (proxies)
}

// run is the whole benchmark. Everything it starts is stopped and removed before it returns.
func run(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	started := time.Now()
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }

	// Check prerequisites before spending a minute on setup.
	var pgbouncerBin, goBin, root string
	if o.has(targetPgbouncer) {
		if pgbouncerBin, err = findPgbouncer(); err != nil {
			return err
		}
	}
	if goBin, err = exec.LookPath("go"); err != nil {
		return fmt.Errorf("the go command is not on PATH: %w", err)
	}
	if o.has(targetCredswap) {
		if root, err = moduleRoot(ctx, goBin); err != nil {
			return err
		}
	}
	clk, err := clockTicks(ctx)
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "credswap-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove %s: %w", dir, rerr))
		}
	}()
	// pgbouncer runs as another user and must reach its own directory inside.
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}

	var bin string
	if o.has(targetCredswap) {
		bin = filepath.Join(dir, "credswap")
		logf("building credswap (go build ./cmd/proxy in %s)", root)
		if err := buildCredswap(ctx, goBin, root, bin); err != nil {
			return err
		}
	}

	logf("starting PostgreSQL")
	startCtx, cancel := context.WithTimeout(ctx, pgStartTimeout)
	pg, err := testenv.StartPostgres(startCtx, testenv.PostgresOptions{})
	cancel()
	if err != nil {
		var missing *testenv.MissingError
		if errors.As(err, &missing) {
			return fmt.Errorf("%w; run scripts/deps.sh bench", err)
		}
		return err
	}
	defer func() { err = errors.Join(err, pg.Stop()) }()
	logf("PostgreSQL on %s; loading pgbench -i -s %d into database %s", pg.Addr(), o.scale, benchDB)
	backend, err := setupDatabase(ctx, pg, o.scale)
	if err != nil {
		return err
	}

	targets := map[string]*target{
		targetDirect: {name: targetDirect, env: libpqEnv(pg.Addr(), backend)},
	}
	if o.has(targetCredswap) {
		cs, serr := startCredswap(ctx, dir, bin, pg.Addr(), backend)
		if serr != nil {
			return serr
		}
		defer func() { err = errors.Join(err, cs.proc.stop()) }()
		logf("credswap (pid %d) on %s", cs.proc.pid, cs.addr)
		targets[targetCredswap] = &target{name: targetCredswap, env: libpqEnv(cs.addr, cs.local), proc: cs.proc, addr: cs.addr, login: cs.local}
	}
	if o.has(targetPgbouncer) {
		pb, serr := startPgbouncer(ctx, dir, pgbouncerBin, pg.Addr(), backend)
		if serr != nil {
			return serr
		}
		defer func() { err = errors.Join(err, pb.proc.stop()) }()
		logf("pgbouncer (pid %d) on %s", pb.proc.pid, pb.addr)
		targets[targetPgbouncer] = &target{name: targetPgbouncer, env: libpqEnv(pb.addr, backend), proc: pb.proc, addr: pb.addr, login: backend}
	}

	h := describe(ctx, started, o, clk, pg, goBin, pgbouncerBin)
	r := newResults()
	total := o.rounds * len(o.modes) * len(o.clients) * len(o.targets)
	logf("%d runs of %d s (about %v)", total, o.seconds, time.Duration(total*o.seconds)*time.Second)
	n := 0
runs:
	for round := 1; round <= o.rounds; round++ {
		order := rotate(o.targets, round-1)
		for _, mode := range o.modes {
			for _, clients := range o.clients {
				for _, name := range order {
					if ctx.Err() != nil {
						break runs
					}
					n++
					s := measure(ctx, pg.Bin("pgbench"), targets[name], mode, clients, o.seconds, clk)
					s.round = round
					if ctx.Err() != nil {
						break runs // an interrupted run is no measurement
					}
					r.add(cell{mode, clients, name}, s)
					logf("[%d/%d] round %d %-8s c=%-3d %-9s %s", n, total, round, mode, clients, name, describeSample(s))
				}
			}
		}
	}

	var idle []idleResult
	for _, name := range o.targets {
		if t := targets[name]; t.proc != nil && o.idle > 0 && ctx.Err() == nil {
			res := measureIdle(ctx, t, t.login, t.addr, o.idle)
			logf("idle memory %-9s %d sessions: %.1f KiB each (err %v)", name, o.idle, res.rssPer/1024, res.err)
			idle = append(idle, res)
		}
	}

	interrupted := ctx.Err() != nil
	h.loadEnd = loadAverage()
	report := renderReport(h, o, r, interrupted)
	if len(idle) > 0 {
		report += renderIdle(idle)
	}
	fmt.Fprint(stdout, "\n"+report)
	if o.out != "" {
		if werr := os.WriteFile(o.out, []byte(report), 0o644); werr != nil {
			err = errors.Join(err, fmt.Errorf("write -out: %w", werr))
		}
	}
	if interrupted {
		return errors.Join(err, fmt.Errorf("interrupted: %w", context.Cause(ctx)))
	}
	return err
}

// measure runs pgbench once against t and, for a proxy, measures its CPU time over the run.
func measure(ctx context.Context, pgbench string, t *target, mode string, clients, seconds, clk int) sample {
	var before uint64
	var cpuErr error
	if t.proc != nil {
		before, cpuErr = cpuTicks(t.proc.pid)
	}
	res, err := runPgbench(ctx, pgbench, t.env, pgbenchArgs(mode, clients, seconds), time.Duration(seconds)*time.Second+pgbenchGrace)
	if t.proc != nil {
		if gone, werr := t.proc.exited(); gone {
			return sample{err: errors.Join(err, fmt.Errorf("%s exited (%v); log:\n%s", t.name, werr, indent(t.proc.logTail())))}
		}
	}
	if err != nil {
		return sample{err: err}
	}
	s := sample{res: res}
	if t.proc != nil && cpuErr == nil {
		after, err := cpuTicks(t.proc.pid)
		if err == nil && after >= before {
			s.cpuUS = float64(after-before) / float64(clk) * 1e6 / float64(res.Txns)
			s.hasCPU = true
		}
	}
	return s
}

func describeSample(s sample) string {
	if s.err != nil {
		first, _, _ := strings.Cut(s.err.Error(), "\n")
		return "FAILED: " + first
	}
	d := fmt.Sprintf("%9.0f tps %9d txns", s.res.TPS, s.res.Txns)
	if s.hasCPU {
		d += fmt.Sprintf("  CPU %6.1f µs/txn", s.cpuUS)
	}
	return d
}

// rotate returns xs rotated left by k.
func rotate(xs []string, k int) []string {
	k %= len(xs)
	return append(slices.Clone(xs[k:]), xs[:k]...)
}

// describe collects the report header. Versions that cannot be read are shown as such rather
// than failing the benchmark.
func describe(ctx context.Context, started time.Time, o options, clk int, pg *testenv.Postgres, goBin, pgbouncerBin string) header {
	h := header{
		date:      started,
		cpu:       cpuModel(),
		cores:     runtime.NumCPU(),
		kernel:    firstLine(ctx, "uname", "-r"),
		goVersion: firstLine(ctx, goBin, "env", "GOVERSION"),
		postgres:  firstLine(ctx, pg.Bin("postgres"), "--version"),
		pgbench:   firstLine(ctx, pg.Bin("pgbench"), "--version"),
		command:   commandLine(o.args),
		clkTck:    clk,
		loadStart: loadAverage(),
	}
	if pgbouncerBin != "" {
		h.pgbouncer = firstLine(ctx, pgbouncerBin, "--version")
	}
	return h
}

// firstLine returns the first line of a program's output, or why there is none.
func firstLine(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return fmt.Sprintf("(%s: %v)", filepath.Base(name), err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// loadAverage returns the 1, 5 and 15 minute load averages from /proc/loadavg: other work on
// the machine during the benchmark shows there.
func loadAverage() string {
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

// commandLine is how the benchmark was invoked, as a shell command.
func commandLine(args []string) string {
	parts := []string{"go run ./bench/pgbench-compare"}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
