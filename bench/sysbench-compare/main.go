//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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
const tool = "sysbench-compare"

// Target names, in the order the report's columns show them.
const (
	targetDirect   = "direct"
	targetCredswap = "credswap"
)

var allTargets = []string{targetDirect, targetCredswap}

// targetSocat is socat, a plain TCP relay (-socat): the cost of any proxy
// hop on this machine, measured in the same run.
const targetSocat = "socat"

// goalRatio is the requirement the report reads the numbers against: credswap's TPS at least
// this fraction of a direct connection's in the same run.
const goalRatio = 0.75

// options are the command-line flags.
type options struct {
	seconds   int
	rounds    int
	modes     []string
	threads   []int
	tables    int
	tableSize int
	out       string
	socat     bool     // also measure socat as a plain TCP relay
	args      []string // the arguments as given, for the report
}

// targets returns the targets to measure, in the order of the first round.
func (o options) targets() []string {
	if o.socat {
		return append(slices.Clone(allTargets), targetSocat)
	}
	return allTargets
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{args: args}
	fs := benchkit.NewFlagSet(tool, "usage: go run ./bench/sysbench-compare [flags]   (install MariaDB and sysbench first: scripts/deps.sh)", stderr)
	fs.IntVar(&o.seconds, "T", 10, "`seconds` per sysbench run (--time)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds over every mode, thread count and target")
	modes := fs.String("modes", strings.Join(allModes, ","), "protocol modes, comma-separated: prepared (--db-ps-mode=auto), text (--db-ps-mode=disable)")
	threads := fs.String("threads", "8", "sysbench thread counts (--threads), comma-separated")
	fs.IntVar(&o.tables, "tables", 4, "sysbench --tables")
	fs.IntVar(&o.tableSize, "table-size", 100000, "sysbench --table-size (rows per table)")
	fs.StringVar(&o.out, "out", "", "also write the markdown report to `FILE`")
	fs.BoolVar(&o.socat, "socat", false, "also measure socat, a plain TCP relay (fork per connection), as the cost of any proxy hop")
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
	if o.tables < 1 {
		errs = append(errs, fmt.Errorf("-tables %d: must be at least 1", o.tables))
	}
	if o.tableSize < 1 {
		errs = append(errs, fmt.Errorf("-table-size %d: must be at least 1", o.tableSize))
	}
	for _, f := range benchkit.SplitList(*modes) {
		if !slices.Contains(allModes, f) {
			errs = append(errs, fmt.Errorf("-modes: unknown %q (want some of %s)", f, strings.Join(allModes, ",")))
			continue
		}
		if !slices.Contains(o.modes, f) {
			o.modes = append(o.modes, f)
		}
	}
	if len(benchkit.SplitList(*modes)) == 0 {
		errs = append(errs, errors.New("-modes: empty"))
	}
	for _, f := range benchkit.SplitList(*threads) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("-threads: %q is not a positive integer", f))
			continue
		}
		if !slices.Contains(o.threads, n) {
			o.threads = append(o.threads, n)
		}
	}
	if len(benchkit.SplitList(*threads)) == 0 {
		errs = append(errs, errors.New("-threads: empty"))
	}
	return o, errors.Join(errs...)
}

func main() { os.Exit(benchkit.Main(tool, parseFlags, run)) }

// target is one thing sysbench connects to.
type target struct {
	name     string
	connFile string            // sysbench --config-file with the connection and login
	proc     *benchkit.Process // the proxy whose CPU is measured; nil for direct
}

// run is the whole benchmark. Everything it starts is stopped and removed before it returns.
func run(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	started := time.Now()
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }

	// Check prerequisites before spending a minute on setup.
	sysbenchBin, err := exec.LookPath("sysbench")
	if err != nil {
		return fmt.Errorf("sysbench is not on PATH (scripts/deps.sh installs it): %w", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is not on PATH: %w", err)
	}
	root, err := benchkit.ModuleRoot(ctx, goBin, tool)
	if err != nil {
		return err
	}
	clk, err := benchkit.ClockTicks(ctx)
	if err != nil {
		return err
	}

	dir, removeDir, err := benchkit.TempDir("credswap-sysbench-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, removeDir()) }()

	bin := filepath.Join(dir, "credswap")
	logf("building credswap (go build ./cmd/proxy in %s)", root)
	if err := benchkit.BuildCredswap(ctx, goBin, root, bin); err != nil {
		return err
	}
	code := benchkit.CodeVersion(ctx, root)

	logf("starting MariaDB")
	m, err := startMariaDB(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, m.Stop()) }()
	logf("MariaDB on %s; loading sysbench %s prepare (%d tables × %d rows) into database %s", m.Addr(), sysbenchTest, o.tables, o.tableSize, benchDB)
	backend, err := setupDatabase(ctx, m, dir, sysbenchBin, o.tables, o.tableSize)
	if err != nil {
		return err
	}

	// The local login differs from the backend one in its password only.
	cs, err := benchkit.StartCredswap(ctx, benchkit.CredswapOptions{
		Bin: bin, Dir: dir, Upstream: m.Addr(), ClientUser: backend.User, Credential: backend,
		Config: credswapConfig, ReadyTimeout: readyTimeout, PollInterval: pollInterval,
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cs.Proc.Stop()) }()
	logf("credswap (pid %d) on %s", cs.Proc.PID(), cs.Addr)

	targets := map[string]*target{
		targetDirect:   {name: targetDirect, connFile: filepath.Join(dir, "sysbench-direct.cnf")},
		targetCredswap: {name: targetCredswap, connFile: filepath.Join(dir, "sysbench-credswap.cnf"), proc: cs.Proc},
	}
	if err := writeConnFile(targets[targetCredswap].connFile, cs.Addr, cs.Local, benchDB); err != nil {
		return err
	}

	if o.socat {
		addr, proc, err := startSocat(ctx, dir, m.Addr())
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, proc.Stop()) }()
		logf("socat (pid %d) on %s", proc.PID(), addr)
		targets[targetSocat] = &target{name: targetSocat, connFile: filepath.Join(dir, "sysbench-socat.cnf")}
		if err := writeConnFile(targets[targetSocat].connFile, addr, backend, benchDB); err != nil {
			return err
		}
	}

	h := describe(ctx, started, o, clk, m, sysbenchBin, goBin, code)
	r := newResults()
	total := o.rounds * len(o.modes) * len(o.threads) * len(o.targets())
	logf("%d runs of %d s (about %v)", total, o.seconds, time.Duration(total*o.seconds)*time.Second)
	n := 0
runs:
	for round := 1; round <= o.rounds; round++ {
		order := rotate(o.targets(), round-1)
		for _, mode := range o.modes {
			for _, threads := range o.threads {
				for _, name := range order {
					if ctx.Err() != nil {
						break runs
					}
					n++
					s := measure(ctx, sysbenchBin, targets[name], runArgs(mode, threads, o.seconds, o.tables, o.tableSize), o.seconds, clk)
					s.Round = round
					if ctx.Err() != nil {
						break runs // an interrupted run is no measurement
					}
					r.Add(cell{mode, threads, name}, s)
					logf("[%d/%d] round %d %-8s threads=%-3d %-8s %s", n, total, round, mode, threads, name, describeSample(s))
				}
			}
		}
	}

	interrupted := ctx.Err() != nil
	h.LoadEnd = benchkit.LoadAverage()
	report := renderReport(h, o, r, interrupted)
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

// measure runs sysbench once against t and, for the proxy, measures its CPU time over the run.
func measure(ctx context.Context, sysbenchBin string, t *target, args []string, seconds, clk int) sample {
	var before uint64
	var cpuErr error
	if t.proc != nil {
		before, cpuErr = benchkit.CPUTicks(t.proc.PID())
	}
	res, err := runSysbench(ctx, sysbenchBin, t.connFile, args, time.Duration(seconds)*time.Second+sysbenchGrace)
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
	d := fmt.Sprintf("%9.0f tps %9.0f qps %9d txns", s.Res.TPS, s.Res.QPS, s.Res.Txns)
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
func describe(ctx context.Context, started time.Time, o options, clk int, m *testenv.MariaDB, sysbenchBin, goBin, code string) header {
	return header{
		Header:   benchkit.DescribeHost(ctx, started, tool, o.args, goBin),
		mariadb:  serverVersion(benchkit.FirstLine(ctx, m.ServerBin, "--version"), m.ServerBin),
		sysbench: benchkit.FirstLine(ctx, sysbenchBin, "--version"),
		code:     code,
		clkTck:   clk,
	}
}

// serverVersion shortens `mariadbd --version` ("/usr/sbin/mariadbd  Ver 10.11...") to start with
// the program's name.
func serverVersion(line, bin string) string {
	if rest, ok := strings.CutPrefix(line, bin); ok {
		line = filepath.Base(bin) + rest
	}
	return strings.Join(strings.Fields(line), " ")
}

// startSocat runs socat relaying 127.0.0.1:<free port> to upstream, a
// child per connection, and waits until it accepts.
func startSocat(ctx context.Context, dir, upstream string) (string, *benchkit.Process, error) {
	bin, err := exec.LookPath("socat")
	if err != nil {
		return "", nil, fmt.Errorf("-socat: socat is not on PATH (apt-get install socat): %w", err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr,nodelay", port), "TCP:"+upstream+",nodelay")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	proc, err := benchkit.StartProcess("socat", cmd, filepath.Join(dir, "socat.log"))
	if err != nil {
		return "", nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr, proc, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", nil, errors.Join(fmt.Errorf("socat does not accept on %s: %w", addr, err), proc.Stop())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
