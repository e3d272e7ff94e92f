//go:build linux

package main

import (
	"fmt"
	"strings"

	"github.com/credswap/credswap/bench/internal/benchkit"
)

// cell identifies one measured combination.
type cell struct {
	mode    string
	threads int
	target  string
}

// sample is one run; results holds every run of a benchmark.
type (
	sample  = benchkit.Sample[sysbenchResult]
	results = benchkit.Results[cell, sysbenchResult]
	summary = benchkit.Summary
)

func newResults() *results {
	return benchkit.NewResults[cell](func(r sysbenchResult) float64 { return r.TPS })
}

// header describes the run: when, where, with what.
type header struct {
	benchkit.Header
	mariadb  string // `mariadbd --version`
	sysbench string // `sysbench --version`
	code     string // the commit credswap was built from, and uncommitted changes
	clkTck   int
}

// renderReport returns the markdown report: the header block, the table of medians and, if any
// run failed, the failures.
func renderReport(h header, o options, r *results, interrupted bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "- **Date:** %s\n", h.Date.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- **Machine:** %s, %d cores, Linux %s\n", h.CPU, h.Cores, h.Kernel)
	fmt.Fprintf(&b, "- **Versions:** Go %s; %s; %s\n", strings.TrimPrefix(h.GoVersion, "go"), h.mariadb, h.sysbench)
	fmt.Fprintf(&b, "- **Command:** `%s`\n", h.Command)
	fmt.Fprintf(&b, "- **Code:** %s\n", h.code)
	fmt.Fprintf(&b, "- **Runs:** rounds: %d, %d s per run; within a round %s run back to back for each mode and thread count, in an order alternated every round; medians shown; the goal (credswap ≥ %.2f× direct) is read against the median of the per-round ratios\n",
		o.rounds, o.seconds, strings.Join(o.targets(), ", "), goalRatio)
	fmt.Fprintf(&b, "- **Load average (1/5/15 min):** %s at start, %s at end\n", h.LoadStart, h.LoadEnd)
	fmt.Fprintf(&b, "- **Workload:** `sysbench %s --tables=%d --table-size=%d --rand-type=%s --threads=N --time=%d --db-ps-mode=auto|disable run` (prepared|text), over TCP on 127.0.0.1 without TLS; one query per transaction (QPS = TPS); proxy CPU is utime+stime of the proxy process over each run (CLK_TCK %d) per transaction\n",
		sysbenchTest, o.tables, o.tableSize, randType, o.seconds, h.clkTck)
	if interrupted {
		b.WriteString("- **Interrupted:** the benchmark was stopped before all runs finished\n")
	}
	b.WriteString("\n")

	roundCols := make([]string, o.rounds)
	for i := range roundCols {
		roundCols[i] = fmt.Sprintf("r%d", i+1)
	}
	cols := []string{"mode", "threads", "direct TPS", "credswap TPS", "credswap/direct",
		"credswap/direct per round (" + strings.Join(roundCols, ", ") + ")", "median per-round ratio",
		fmt.Sprintf("≥ %.2f×", goalRatio), "credswap CPU µs/txn"}
	b.WriteString("| " + strings.Join(cols, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat("---|", 2) + strings.Repeat("---:|", len(cols)-2) + "\n")
	for _, mode := range o.modes {
		for _, threads := range o.threads {
			d := r.Summarize(cell{mode, threads, targetDirect})
			c := r.Summarize(cell{mode, threads, targetCredswap})
			row := []string{mode, fmt.Sprint(threads), tpsCell(d), tpsCell(c)}
			if d.OK == 0 || c.OK == 0 || d.TPS == 0 {
				row = append(row, "–")
			} else {
				row = append(row, fmt.Sprintf("%.2f", c.TPS/d.TPS))
			}
			var per []string
			var ratios []float64
			for round := 1; round <= o.rounds; round++ {
				dt, dok := r.RoundTPS(cell{mode, threads, targetDirect}, round)
				ct, cok := r.RoundTPS(cell{mode, threads, targetCredswap}, round)
				if !dok || !cok || dt == 0 {
					per = append(per, "–")
					continue
				}
				per = append(per, fmt.Sprintf("%.2f", ct/dt))
				ratios = append(ratios, ct/dt)
			}
			row = append(row, strings.Join(per, ", "))
			// The goal is read against the rounds' paired ratios: both targets of a round ran
			// back to back, so drift on the machine hits them alike.
			switch {
			case len(ratios) == 0:
				row = append(row, "–", "–")
			case benchkit.Median(ratios) >= goalRatio:
				row = append(row, fmt.Sprintf("%.3f", benchkit.Median(ratios)), "yes")
			default:
				row = append(row, fmt.Sprintf("%.3f", benchkit.Median(ratios)), "**no**")
			}
			if c.HasCPU {
				row = append(row, fmt.Sprintf("%.1f", c.CPUUS))
			} else {
				row = append(row, "–")
			}
			b.WriteString("| " + strings.Join(row, " | ") + " |\n")
		}
	}

	if o.socat {
		renderSocat(&b, o, r)
	}

	var failures []string
	for round := 1; round <= o.rounds; round++ {
		for _, mode := range o.modes {
			for _, threads := range o.threads {
				for _, t := range o.targets() {
					for _, s := range r.Runs[cell{mode, threads, t}] {
						if s.Round == round && s.Err != nil {
							failures = append(failures, fmt.Sprintf("- round %d, %s --threads=%d, %s:\n\n  ```\n%s\n  ```\n",
								round, mode, threads, t, benchkit.IndentWith(benchkit.LastLines(s.Err.Error(), 12), "  ")))
						}
					}
				}
			}
		}
	}
	if len(failures) > 0 {
		fmt.Fprintf(&b, "\n**%d failed runs** (not counted in the medians; a cell shows how many of its runs succeeded):\n\n", len(failures))
		b.WriteString(strings.Join(failures, "\n"))
	}
	return b.String()
}

// tpsCell formats a median TPS, marking cells with failed runs.
func tpsCell(s summary) string {
	switch {
	case s.Total == 0:
		return "–"
	case s.OK == 0:
		return fmt.Sprintf("FAIL (0/%d)", s.Total)
	case s.OK < s.Total:
		return fmt.Sprintf("%.0f (%d/%d ok)", s.TPS, s.OK, s.Total)
	default:
		return fmt.Sprintf("%.0f", s.TPS)
	}
}

// renderSocat adds the same-run reference of a plain TCP relay: socat's
// TPS against direct and credswap's against socat, by round.
func renderSocat(b *strings.Builder, o options, r *results) {
	b.WriteString("\nsocat, a plain TCP relay (a child process per connection, no parsing), in the same run:\n\n")
	b.WriteString("| mode | threads | socat TPS | socat/direct per round | median | credswap/socat per round | median |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|\n")
	ratios := func(mode string, threads int, num, den string) (string, string) {
		var per []string
		var xs []float64
		for round := 1; round <= o.rounds; round++ {
			n, nok := r.RoundTPS(cell{mode, threads, num}, round)
			d, dok := r.RoundTPS(cell{mode, threads, den}, round)
			if !nok || !dok || d == 0 {
				per = append(per, "–")
				continue
			}
			per = append(per, fmt.Sprintf("%.2f", n/d))
			xs = append(xs, n/d)
		}
		if len(xs) == 0 {
			return strings.Join(per, ", "), "–"
		}
		return strings.Join(per, ", "), fmt.Sprintf("%.3f", benchkit.Median(xs))
	}
	for _, mode := range o.modes {
		for _, threads := range o.threads {
			sd, sm := ratios(mode, threads, targetSocat, targetDirect)
			cd, cm := ratios(mode, threads, targetCredswap, targetSocat)
			fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s |\n", mode, threads, tpsCell(r.Summarize(cell{mode, threads, targetSocat})), sd, sm, cd, cm)
		}
	}
}
