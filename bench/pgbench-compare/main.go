//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/credswap/credswap/bench/internal/benchkit"
	"github.com/credswap/credswap/internal/testenv"
)

// tool is the command's directory under bench/ and its name in messages.
const tool = "pgbench-compare"

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
	fs := benchkit.NewFlagSet(tool, "usage: go run ./bench/pgbench-compare [flags]   (install pgbouncer first: scripts/deps.sh bench)", stderr)
	fs.IntVar(&o.seconds, "T", 10, "`seconds` per pgbench run")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds over every mode, client count and target")
	modes := fs.String("modes", strings.Join(allModes, ","), "pgbench protocol modes (-M), comma-separated")
	clients := fs.String("clients", "1,8,32", "pgbench client counts (-c), comma-separated")
	fs.IntVar(&o.scale, "scale", 10, "pgbench scale factor (-i -s)")
	fs.StringVar(&o.out, "out", "", "also write the markdown report to `FILE`")
	fs.IntVar(&o.idle, "idle", 200, "idle sessions opened through each proxy to measure its memory per session (0: skip)")
	targets := fs.String("targets", strings.Join(allTargets, ","), "targets, comma-separated: "+strings.Join(allTargets, ", "))
	if err := benchkit.ParseFlags(fs, args); err != nil {
		return o, err
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
	for _, f := range benchkit.SplitList(*clients) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("-clients: %q is not a positive integer", f))
			continue
		}
		if !slices.Contains(o.clients, n) {
			o.clients = append(o.clients, n)
		}
	}
	if len(benchkit.SplitList(*clients)) == 0 {
		errs = append(errs, errors.New("-clients: empty"))
	}
	return o, errors.Join(errs...)
}

// parseList parses a comma-separated subset of allowed, without duplicates, keeping its order.
func parseList(flagName, s string, allowed []string) ([]string, error) {
	var out []string
	for _, f := range benchkit.SplitList(s) {
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

func main() { os.Exit(benchkit.Main(tool, parseFlags, run)) }

// target is one thing pgbench connects to.
type target struct {
	name  string
	env   []string          // libpq environment
	proc  *benchkit.Process // the proxy whose CPU is measured; nil for direct
	addr  string            // where clients connect (proxies)
	login benchkit.Login    // the login clients use (proxies)
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
		if root, err = benchkit.ModuleRoot(ctx, goBin, tool); err != nil {
			return err
		}
	}
	clk, err := benchkit.ClockTicks(ctx)
	if err != nil {
		return err
	}

	dir, removeDir, err := benchkit.TempDir("credswap-bench-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, removeDir()) }()
	// pgbouncer runs as another user and must reach its own directory inside.
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}

	var bin string
	if o.has(targetCredswap) {
		bin = filepath.Join(dir, "credswap")
		logf("building credswap (go build ./cmd/proxy in %s)", root)
		if err := benchkit.BuildCredswap(ctx, goBin, root, bin); err != nil {
			return err
		}
	}

	logf("starting PostgreSQL")
	pg, err := benchkit.StartPostgres(ctx, testenv.PostgresOptions{}, "run scripts/deps.sh bench")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Stop()) }()
	logf("PostgreSQL on %s; loading pgbench -i -s %d into database %s", pg.Addr(), o.scale, benchDB)
	backend, err := setupDatabase(ctx, pg, o.scale)
	if err != nil {
		return err
	}

	targets := map[string]*target{
		targetDirect: {name: targetDirect, env: benchkit.LibpqEnv(pg.Addr(), backend, benchDB)},
	}
	if o.has(targetCredswap) {
		// The local login differs from the backend one in its password only.
		cs, serr := benchkit.StartCredswap(ctx, benchkit.CredswapOptions{
			Bin: bin, Dir: dir, Upstream: pg.Addr(), ClientUser: backend.User, Credential: backend,
			Config: credswapConfig, ReadyTimeout: readyTimeout, PollInterval: pollInterval,
		})
		if serr != nil {
			return serr
		}
		defer func() { err = errors.Join(err, cs.Proc.Stop()) }()
		logf("credswap (pid %d) on %s", cs.Proc.PID(), cs.Addr)
		targets[targetCredswap] = &target{name: targetCredswap, env: benchkit.LibpqEnv(cs.Addr, cs.Local, benchDB), proc: cs.Proc, addr: cs.Addr, login: cs.Local}
	}
	if o.has(targetPgbouncer) {
		pb, serr := startPgbouncer(ctx, dir, pgbouncerBin, pg.Addr(), backend)
		if serr != nil {
			return serr
		}
		defer func() { err = errors.Join(err, pb.proc.Stop()) }()
		logf("pgbouncer (pid %d) on %s", pb.proc.PID(), pb.addr)
		targets[targetPgbouncer] = &target{name: targetPgbouncer, env: benchkit.LibpqEnv(pb.addr, backend, benchDB), proc: pb.proc, addr: pb.addr, login: backend}
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
					s.Round = round
					if ctx.Err() != nil {
						break runs // an interrupted run is no measurement
					}
					r.Add(cell{mode, clients, name}, s)
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
	h.LoadEnd = benchkit.LoadAverage()
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
		before, cpuErr = benchkit.CPUTicks(t.proc.PID())
	}
	res, err := runPgbench(ctx, pgbench, t.env, pgbenchArgs(mode, clients, seconds), time.Duration(seconds)*time.Second+pgbenchGrace)
	if t.proc != nil {
		if gone, werr := t.proc.Exited(); gone {
			return sample{Err: errors.Join(err, fmt.Errorf("%s exited (%v); log:\n%s", t.name, werr, benchkit.Indent(t.proc.LogTail())))}
		}
	}
	if err != nil {
		return sample{Err: err}
	}
	s := sample{Res: res}
	if t.proc != nil && cpuErr == nil {
		after, err := benchkit.CPUTicks(t.proc.PID())
		if err == nil && after >= before {
			s.CPUUS = float64(after-before) / float64(clk) * 1e6 / float64(res.Txns)
			s.HasCPU = true
		}
	}
	return s
}

func describeSample(s sample) string {
	if s.Err != nil {
		first, _, _ := strings.Cut(s.Err.Error(), "\n")
		return "FAILED: " + first
	}
	d := fmt.Sprintf("%9.0f tps %9d txns", s.Res.TPS, s.Res.Txns)
	if s.HasCPU {
		d += fmt.Sprintf("  CPU %6.1f µs/txn", s.CPUUS)
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
	h := header{Header: benchkit.Describe(ctx, started, tool, o.args, goBin, pg), clkTck: clk}
	if pgbouncerBin != "" {
		h.pgbouncer = benchkit.FirstLine(ctx, pgbouncerBin, "--version")
	}
	return h
}
