//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/credswap/credswap/bench/internal/benchkit"
	"github.com/credswap/credswap/internal/testenv"
)

// pgbenchGrace is how long a pgbench run may take beyond its -T: connecting the clients and
// reporting.
const pgbenchGrace = 2 * time.Minute

// pgbenchResult is what one pgbench run reported.
type pgbenchResult struct {
	TPS  float64 // "tps = N (without initial connection time)"
	Txns int64   // "number of transactions actually processed: N"
}

var (
	tpsRE    = regexp.MustCompile(`(?m)^tps = ([0-9]+(?:\.[0-9]+)?) \(without initial connection time\)`)
	txnsRE   = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	failedRE = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// parsePgbench extracts the TPS and the transaction count from pgbench's report and checks that
// no transaction failed. The "failed transactions" line (PostgreSQL 15 and later) is required:
// without it a run cannot be shown to be clean.
func parsePgbench(out string) (pgbenchResult, error) {
	var r pgbenchResult
	m := failedRE.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`no "number of failed transactions" line in the pgbench output`)
	}
	if m[1] != "0" {
		return r, fmt.Errorf("pgbench reported %s failed transactions", m[1])
	}
	m = tpsRE.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`no "tps = N (without initial connection time)" line in the pgbench output`)
	}
	tps, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return r, fmt.Errorf("pgbench tps %q: %w", m[1], err)
	}
	m = txnsRE.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`no "number of transactions actually processed" line in the pgbench output`)
	}
	txns, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return r, fmt.Errorf("pgbench transaction count %q: %w", m[1], err)
	}
	if txns <= 0 {
		return r, errors.New("pgbench processed no transactions")
	}
	return pgbenchResult{TPS: tps, Txns: txns}, nil
}

// pgbenchArgs is the command line of one measured run.
func pgbenchArgs(mode string, clients, seconds int) []string {
	return []string{
		"-S", "-n",
		"-T", strconv.Itoa(seconds),
		"-c", strconv.Itoa(clients),
		"-j", strconv.Itoa(min(clients, 2)),
		"-M", mode,
	}
}

// runPgbench runs pgbench with a clean environment holding only env (see testenv.Command) and
// returns its report. An error carries the tail of pgbench's output.
func runPgbench(ctx context.Context, bin string, env []string, args []string, timeout time.Duration) (pgbenchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := testenv.Command(ctx, bin, env, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%v)", ctxErr, err)
		}
		return pgbenchResult{}, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), err, benchkit.Indent(benchkit.LastLines(string(out), 8)))
	}
	r, err := parsePgbench(string(out))
	if err != nil {
		return r, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), err, benchkit.Indent(benchkit.LastLines(string(out), 8)))
	}
	return r, nil
}
