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
const tool = "swapbench"

const (
	partSwitch = "switch"
	partLoad   = "load"
)

var allParts = []string{partSwitch, partLoad}

// options are the command-line flags.
type options struct {
	k        int      // idle sessions in part 1
	r        int      // rotations in part 1
	seconds  int      // pgbench -T in part 2
	rotateAt []int    // seconds of the pgbench run at which part 2 rotates
	clients  int      // pgbench -c
	threads  int      // pgbench -j
	scale    int      // pgbench -i -s
	out      string   // output directory; "" is a new one under the temp dir, kept
	png      string   // plot file; relative to the module root; "" for none
	parts    []string // which parts run
	args     []string // the arguments as given, for the report
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{args: args}
	fs := benchkit.NewFlagSet(tool, "usage: go run ./bench/swapbench [flags]", stderr)
	fs.IntVar(&o.k, "k", 200, "idle sessions whose switches are timed (part 1)")
	fs.IntVar(&o.r, "r", 5, "rotations over the idle sessions (part 1)")
	fs.IntVar(&o.seconds, "T", 60, "`seconds` of the pgbench run (part 2)")
	rotateAt := fs.String("rotate-at", "20,40", "`seconds` of the pgbench run at which the credential rotates, comma-separated (part 2)")
	fs.IntVar(&o.clients, "clients", 16, "pgbench clients (-c)")
	fs.IntVar(&o.threads, "threads", 2, "pgbench threads (-j)")
	fs.IntVar(&o.scale, "scale", 10, "pgbench scale factor (-i -s)")
	fs.StringVar(&o.out, "out", "", "output `dir` for the report, the per-second CSV and the credswap log (default: a new swapbench-* dir under $TMPDIR, kept)")
	fs.StringVar(&o.png, "png", "bench/swap-latency.png", "plot `file` (relative paths are relative to the module root); empty for no plot")
	parts := fs.String("parts", strings.Join(allParts, ","), "parts to run, comma-separated: switch (idle sessions), load (pgbench)")
	if err := benchkit.ParseFlags(fs, args); err != nil {
		return o, err
	}
	var errs []error
	for _, c := range []struct {
		name string
		v    int
	}{{"-k", o.k}, {"-r", o.r}, {"-T", o.seconds}, {"-clients", o.clients}, {"-threads", o.threads}, {"-scale", o.scale}} {
		if c.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: must be at least 1", c.name, c.v))
		}
	}
	if o.threads > o.clients {
		errs = append(errs, fmt.Errorf("-threads %d: more than -clients %d", o.threads, o.clients))
	}
	for _, f := range benchkit.SplitList(*rotateAt) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n >= o.seconds {
			errs = append(errs, fmt.Errorf("-rotate-at: %q is not a whole second between 1 and -T %d", f, o.seconds))
			continue
		}
		if len(o.rotateAt) > 0 && n <= o.rotateAt[len(o.rotateAt)-1] {
			errs = append(errs, fmt.Errorf("-rotate-at: %d does not come after %d", n, o.rotateAt[len(o.rotateAt)-1]))
			continue
		}
		o.rotateAt = append(o.rotateAt, n)
	}
	for _, f := range benchkit.SplitList(*parts) {
		if !slices.Contains(allParts, f) {
			errs = append(errs, fmt.Errorf("-parts: unknown %q (want some of %s)", f, strings.Join(allParts, ",")))
		} else if !slices.Contains(o.parts, f) {
			o.parts = append(o.parts, f)
		}
	}
	if len(o.parts) == 0 {
		errs = append(errs, errors.New("-parts: empty"))
	}
	return o, errors.Join(errs...)
}

func (o options) has(part string) bool { return slices.Contains(o.parts, part) }

func main() { os.Exit(benchkit.Main(tool, parseFlags, run)) }

// run is the whole benchmark. Everything it starts is stopped and its temp dir removed before
// it returns; the output dir stays.
func run(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	started := time.Now()
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }

	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is not on PATH: %w", err)
	}
	root, err := benchkit.ModuleRoot(ctx, goBin, tool)
	if err != nil {
		return err
	}
	gnuplot, gnuplotErr := exec.LookPath("gnuplot")
	if o.png != "" && gnuplotErr != nil {
		logf("gnuplot not found: the numbers and the CSV are still written, but no plot. Install it with:\n    %s", gnuplotInstall)
	}
	pngFile := o.png
	if pngFile != "" && !filepath.IsAbs(pngFile) {
		pngFile = filepath.Join(root, pngFile)
	}

	outDir := o.out
	if outDir == "" {
		if outDir, err = os.MkdirTemp("", "swapbench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	work, removeWork, err := benchkit.TempDir("credswap-swapbench-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, removeWork()) }()

	bin := filepath.Join(work, "credswap")
	code := benchkit.CodeVersion(ctx, root) // what the build below sees
	logf("building credswap (go build ./cmd/proxy in %s: %s)", root, code)
	if err := benchkit.BuildCredswap(ctx, goBin, root, bin); err != nil {
		return err
	}

	logf("starting PostgreSQL")
	// Part 1 holds K sessions on the old generation and K warm ones on the new one at once.
	pg, err := benchkit.StartPostgres(ctx, testenv.PostgresOptions{
		ExtraConfig: []string{fmt.Sprintf("max_connections = %d", max(300, 2*o.k+2*o.clients+50))},
	}, "run scripts/deps.sh")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Stop()) }()
	db, err := connectAdmin(ctx, pg)
	if err != nil {
		return err
	}
	defer db.close(context.WithoutCancel(ctx))
	logf("PostgreSQL on %s; loading pgbench -i -s %d into database %s as %s", pg.Addr(), o.scale, benchDB, backendUsers[0])
	first, err := db.setupDatabase(ctx, pg, o.scale)
	if err != nil {
		return err
	}

	cs, err := benchkit.StartCredswap(ctx, benchkit.CredswapOptions{
		Bin: bin, Dir: work, Upstream: pg.Addr(), ClientUser: clientUser, Credential: first,
		Config: credswapConfig, ReadyTimeout: readyTimeout, PollInterval: pollInterval, JoinStop: joinStop,
	})
	if err != nil {
		return err
	}
	// The proxy is stopped and its log copied to the output dir at the end, whatever happened.
	defer func() {
		err = errors.Join(err, cs.Proc.Stop(), copyFile(cs.Proc.LogFile(), filepath.Join(outDir, "credswap.log")))
	}()
	logf("credswap (pid %d) on %s, admin on %s", cs.Proc.PID(), cs.Addr, cs.AdminAddr)

	b := &bench{
		o:     o,
		logf:  logf,
		pg:    pg,
		cs:    cs,
		admin: newAdminClient(cs.AdminAddr),
		rot:   &rotator{db: db, credFile: cs.CredFile, current: first, gen: 1},
		work:  work,
	}
	h := describe(ctx, started, o, pg, goBin, code)
	var sw *switchResult
	var ld *loadRun
	if o.has(partSwitch) {
		logf("part 1: %d idle sessions, %d rotations", o.k, o.r)
		if sw, err = b.runSwitch(ctx); err != nil {
			return err
		}
	}
	if o.has(partLoad) {
		logf("part 2: pgbench -c %d -j %d -T %d -M prepared, rotations at %v s", o.clients, o.threads, o.seconds, o.rotateAt)
		if ld, err = b.runLoad(ctx); err != nil {
			return err
		}
	}
	cl, err := readCredswapLog(cs.Proc.LogFile())
	if err != nil {
		return err
	}
	h.LoadEnd = benchkit.LoadAverage()

	var plotNote string
	if ld != nil {
		csvFile := filepath.Join(outDir, "swap-latency.csv")
		if err := writeCSV(csvFile, ld.analysis); err != nil {
			return err
		}
		logf("per-second CSV: %s", csvFile)
		switch {
		case pngFile == "":
		case gnuplotErr != nil:
			plotNote = "gnuplot not found, no plot; install it with `" + gnuplotInstall + "`"
		default:
			if err := plot(ctx, gnuplot, csvFile, pngFile, o, ld.analysis); err != nil {
				return err
			}
			logf("plot: %s", pngFile)
		}
	}
	report := renderReport(h, o, sw, ld, cl, plotNote)
	fmt.Fprint(stdout, "\n"+report)
	reportFile := filepath.Join(outDir, "report.md")
	if werr := os.WriteFile(reportFile, []byte(report), 0o644); werr != nil {
		return fmt.Errorf("write report: %w", werr)
	}
	logf("report, CSV and credswap log in %s", outDir)
	return nil
}

// bench is what the two parts share. It is used by one goroutine.
type bench struct {
	o     options
	logf  func(format string, args ...any)
	pg    *testenv.Postgres
	cs    *benchkit.Credswap
	admin *adminClient
	rot   *rotator
	work  string // temp dir, removed at the end
}

// rotation is one credential rotation and how the proxy took it.
type rotation struct {
	gen   uint64
	user  string
	wrote time.Time     // the credential file was replaced
	seen  time.Time     // the first /v1/status showing the drain complete
	st    backendStatus // that status
}

// rotate replaces the credential and waits until every session is on the new generation.
func (b *bench) rotate(ctx context.Context, timeout time.Duration) (rotation, error) {
	l, wrote, err := b.rot.rotate(ctx)
	if err != nil {
		return rotation{}, err
	}
	r := rotation{gen: b.rot.gen, user: l.User, wrote: wrote}
	r.st, r.seen, err = b.waitDrained(ctx, r.gen, timeout)
	return r, err
}

// waitDrained polls /v1/status until generation gen is adopted and every session is on it, the
// proxy exits, timeout passes or ctx ends. It returns that status and when it was read.
func (b *bench) waitDrained(ctx context.Context, gen uint64, timeout time.Duration) (backendStatus, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var st backendStatus
	var lastErr error
	for {
		st, lastErr = b.admin.status(ctx)
		if lastErr == nil && drained(st, gen) {
			return st, time.Now(), nil
		}
		select {
		case <-b.cs.Proc.Done():
			return st, time.Time{}, fmt.Errorf("credswap exited during the drain to generation %d (%v); log:\n%s", gen, b.cs.Proc.WaitErr(), benchkit.Indent(b.cs.Proc.LogTail()))
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				return st, time.Time{}, fmt.Errorf("drain to generation %d not complete within %v (last status: %s)", gen, timeout, describeStatus(st, lastErr))
			}
			return st, time.Time{}, fmt.Errorf("waiting for the drain to generation %d: %w", gen, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// describeStatus summarizes a status for an error message.
func describeStatus(st backendStatus, err error) string {
	if err != nil {
		return err.Error()
	}
	var cur string
	if c := st.Credential.Current; c != nil {
		cur = fmt.Sprintf("generation %d (%s)", c.Generation, c.Username)
	}
	s := fmt.Sprintf("current %s, sessions by generation %v, drain to %d pending %d complete %v results %v",
		cur, st.Sessions.ByGeneration, st.Drain.Generation, st.Drain.Pending, st.Drain.Complete, st.Drain.Results)
	if st.Credential.LastError != "" {
		s += ", credential error: " + st.Credential.LastError
	}
	for _, p := range st.PinnedSessions {
		s += fmt.Sprintf(", session %d pinned (%s)", p.ID, p.PinReason)
	}
	return s
}

// readCredswapLog parses the proxy's log file.
func readCredswapLog(file string) (credswapLog, error) {
	f, err := os.Open(file)
	if err != nil {
		return credswapLog{}, err
	}
	defer f.Close()
	return parseCredswapLog(f)
}

// copyFile copies src to dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}
