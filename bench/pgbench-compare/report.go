//go:build linux

package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/credswap/credswap/bench/internal/benchkit"
)

// Target names, in the order the report's columns show them.
const (
	targetDirect    = "direct"
	targetCredswap  = "credswap"
	targetPgbouncer = "pgbouncer"
)

var allTargets = []string{targetDirect, targetCredswap, targetPgbouncer}

// cell identifies one measured combination.
type cell struct {
	mode    string
	clients int
	target  string
}

// sample is one run; results holds every run of a benchmark.
type (
	sample  = benchkit.Sample[pgbenchResult]
	results = benchkit.Results[cell, pgbenchResult]
	summary = benchkit.Summary
)

func newResults() *results {
	return benchkit.NewResults[cell](func(r pgbenchResult) float64 { return r.TPS })
}

// header describes the run: when, where, with what.
type header struct {
	benchkit.Header
	pgbouncer string // empty if pgbouncer was not a target
	clkTck    int
}

// renderReport returns the markdown report: the header block, the table of medians and, if any
// run failed, the failures.
func renderReport(h header, o options, r *results, interrupted bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "- **Date:** %s\n", h.Date.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- **Machine:** %s, %d cores, Linux %s\n", h.CPU, h.Cores, h.Kernel)
	fmt.Fprintf(&b, "- **Versions:** Go %s; %s; %s", strings.TrimPrefix(h.GoVersion, "go"), h.Postgres, h.Pgbench)
	if h.pgbouncer != "" {
		fmt.Fprintf(&b, "; %s", h.pgbouncer)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- **Command:** `%s`\n", h.Command)
	fmt.Fprintf(&b, "- **Runs:** rounds: %d, %d s per run; within a round the targets run back to back for each mode and client count, in an order rotated every round; medians shown\n",
		o.rounds, o.seconds)
	fmt.Fprintf(&b, "- **Load average (1/5/15 min):** %s at start, %s at end\n", h.LoadStart, h.LoadEnd)
	fmt.Fprintf(&b, "- **Workload:** `pgbench -S -n -T %d -c N -j min(N,2) -M MODE`, scale %d, over TCP on 127.0.0.1 without TLS; proxy CPU is utime+stime of the proxy process over each run (CLK_TCK %d) per transaction\n",
		o.seconds, o.scale, h.clkTck)
	if interrupted {
		b.WriteString("- **Interrupted:** the benchmark was stopped before all runs finished\n")
	}
	b.WriteString("\n")

	has := func(t string) bool { return slices.Contains(o.targets, t) }
	var shown []string
	for _, t := range allTargets {
		if has(t) {
			shown = append(shown, t)
		}
	}
	cols := []string{"mode", "clients"}
	for _, t := range shown {
		cols = append(cols, t+" TPS")
	}
	type ratio struct{ num, den string }
	var ratios []ratio
	for _, rt := range []ratio{{targetCredswap, targetDirect}, {targetPgbouncer, targetDirect}, {targetCredswap, targetPgbouncer}} {
		if has(rt.num) && has(rt.den) {
			ratios = append(ratios, rt)
			cols = append(cols, rt.num+"/"+rt.den)
		}
	}
	var proxies []string
	for _, t := range []string{targetCredswap, targetPgbouncer} {
		if has(t) {
			proxies = append(proxies, t)
			cols = append(cols, t+" CPU µs/txn")
		}
	}
	b.WriteString("| " + strings.Join(cols, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat("---|", 2) + strings.Repeat("---:|", len(cols)-2) + "\n")

	for _, mode := range o.modes {
		for _, clients := range o.clients {
			sums := make(map[string]summary)
			for _, t := range shown {
				sums[t] = r.Summarize(cell{mode, clients, t})
			}
			row := []string{mode, fmt.Sprint(clients)}
			for _, t := range shown {
				row = append(row, tpsCell(sums[t]))
			}
			for _, rt := range ratios {
				n, d := sums[rt.num], sums[rt.den]
				if n.OK == 0 || d.OK == 0 || d.TPS == 0 {
					row = append(row, "–")
					continue
				}
				row = append(row, fmt.Sprintf("%.2f", n.TPS/d.TPS))
			}
			for _, t := range proxies {
				if s := sums[t]; s.HasCPU {
					row = append(row, fmt.Sprintf("%.1f", s.CPUUS))
				} else {
					row = append(row, "–")
				}
			}
			b.WriteString("| " + strings.Join(row, " | ") + " |\n")
		}
	}

	var failures []string
	for round := 1; round <= o.rounds; round++ {
		for _, mode := range o.modes {
			for _, clients := range o.clients {
				for _, t := range shown {
					for _, s := range r.Runs[cell{mode, clients, t}] {
						if s.Round == round && s.Err != nil {
							failures = append(failures, fmt.Sprintf("- round %d, -M %s -c %d, %s:\n\n  ```\n%s\n  ```\n",
								round, mode, clients, t, benchkit.IndentWith(benchkit.LastLines(s.Err.Error(), 12), "  ")))
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
