//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/credswap/credswap/bench/internal/benchkit"
)

// sysbenchGrace is how long a sysbench run may take beyond its --time: connecting the threads
// and reporting.
const sysbenchGrace = 2 * time.Minute

// The workload: sysbench's oltp_point_select on tables of this shape, keys drawn uniformly.
const (
	sysbenchTest = "oltp_point_select"
	randType     = "uniform"
)

// Protocol modes: sysbench's --db-ps-mode. "auto" runs the point select as a server-side
// prepared statement (COM_STMT_PREPARE once per thread, then COM_STMT_EXECUTE), "disable" as
// COM_QUERY text.
const (
	modePrepared = "prepared"
	modeText     = "text"
)

var allModes = []string{modePrepared, modeText}

// psMode is the --db-ps-mode of a mode.
func psMode(mode string) string {
	if mode == modePrepared {
		return "auto"
	}
	return "disable"
}

// sysbenchResult is what one sysbench run reported.
type sysbenchResult struct {
	TPS        float64 // "transactions: N (X per sec.)"
	QPS        float64 // "queries: N (X per sec.)"
	Txns       int64   // transactions, N above
	Errors     int64   // "ignored errors: N"
	Reconnects int64   // "reconnects: N"
}

var (
	txnsRE       = regexp.MustCompile(`(?m)^\s*transactions:\s+([0-9]+)\s+\(([0-9]+(?:\.[0-9]+)?) per sec\.\)`)
	queriesRE    = regexp.MustCompile(`(?m)^\s*queries:\s+([0-9]+)\s+\(([0-9]+(?:\.[0-9]+)?) per sec\.\)`)
	errorsRE     = regexp.MustCompile(`(?m)^\s*ignored errors:\s+([0-9]+)\s`)
	reconnectsRE = regexp.MustCompile(`(?m)^\s*reconnects:\s+([0-9]+)\s`)
	fatalRE      = regexp.MustCompile(`(?m)^FATAL: .*$`)
)

// parseSysbench extracts the rates and counters from the report of `sysbench ... run`
// (sysbench 1.0). A report without its summary, or with a FATAL line, is an error; a report with
// ignored errors or reconnects parses, and the caller decides (see sysbenchResult.check).
func parseSysbench(out string) (sysbenchResult, error) {
	var r sysbenchResult
	if m := fatalRE.FindString(out); m != "" {
		return r, fmt.Errorf("sysbench reported %s", m)
	}
	m := txnsRE.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`no "transactions: N (X per sec.)" line in the sysbench output`)
	}
	r.Txns, _ = strconv.ParseInt(m[1], 10, 64)
	r.TPS, _ = strconv.ParseFloat(m[2], 64)
	m = queriesRE.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`no "queries: N (X per sec.)" line in the sysbench output`)
	}
	r.QPS, _ = strconv.ParseFloat(m[2], 64)
	for _, c := range []struct {
		what string
		re   *regexp.Regexp
		dst  *int64
	}{{"ignored errors", errorsRE, &r.Errors}, {"reconnects", reconnectsRE, &r.Reconnects}} {
		m = c.re.FindStringSubmatch(out)
		if m == nil {
			return r, fmt.Errorf("no %q line in the sysbench output", c.what+": N")
		}
		*c.dst, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r, nil
}

// check rejects a run that did not run cleanly: any ignored error or reconnect, or no
// transaction at all.
func (r sysbenchResult) check() error {
	var errs []error
	if r.Errors > 0 {
		errs = append(errs, fmt.Errorf("sysbench reported %d ignored errors", r.Errors))
	}
	if r.Reconnects > 0 {
		errs = append(errs, fmt.Errorf("sysbench reported %d reconnects", r.Reconnects))
	}
	if r.Txns <= 0 {
		errs = append(errs, errors.New("sysbench processed no transactions"))
	}
	return errors.Join(errs...)
}

// workloadArgs are the options that describe the tables, for prepare and run alike.
func workloadArgs(tables, tableSize int) []string {
	return []string{
		"--tables=" + strconv.Itoa(tables),
		"--table-size=" + strconv.Itoa(tableSize),
		"--rand-type=" + randType,
	}
}

// runArgs is the command line of one measured run, after the connection's --config-file.
func runArgs(mode string, threads, seconds, tables, tableSize int) []string {
	args := workloadArgs(tables, tableSize)
	return append(args,
		"--threads="+strconv.Itoa(threads),
		"--time="+strconv.Itoa(seconds),
		"--report-interval=0",
		"--db-ps-mode="+psMode(mode),
		sysbenchTest, "run",
	)
}

// writeConnFile writes a sysbench option file (--config-file, one "name=value" a line) that
// connects to addr as l, database db, over TCP without TLS (sysbench's default). The password stays out of command
// lines and therefore out of messages.
func writeConnFile(file, addr string, l benchkit.Login, db string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	conf := strings.Join([]string{
		"db-driver=mysql",
		"mysql-host=" + host,
		"mysql-port=" + port,
		"mysql-user=" + l.User,
		"mysql-password=" + l.Password,
		"mysql-db=" + db,
		// No mysql-ssl line: off is the default, and sysbench 1.0.20 reads "mysql-ssl=off" in
		// an option file as on.
	}, "\n") + "\n"
	return os.WriteFile(file, []byte(conf), 0o600)
}

// sysbenchCmd runs sysbench with the option file connFile and args, with a clean environment
// (PATH, HOME, LANG=C).
func sysbenchCmd(ctx context.Context, bin, connFile string, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--config-file=" + connFile}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LANG=C"}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// runSysbench runs one measured sysbench and returns its report. A run that fails, reports a
// FATAL error, ignored errors or reconnects is an error carrying the tail of the output.
func runSysbench(ctx context.Context, bin, connFile string, args []string, timeout time.Duration) (sysbenchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := sysbenchCmd(ctx, bin, connFile, args).CombinedOutput()
	what := "sysbench " + strings.Join(args, " ")
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%v)", ctxErr, err)
		}
		return sysbenchResult{}, fmt.Errorf("%s: %w\n%s", what, err, benchkit.Indent(benchkit.LastLines(string(out), 8)))
	}
	r, err := parseSysbench(string(out))
	if err == nil {
		err = r.check()
	}
	if err != nil {
		return r, fmt.Errorf("%s: %w\n%s", what, err, benchkit.Indent(benchkit.LastLines(string(out), 24)))
	}
	return r, nil
}
