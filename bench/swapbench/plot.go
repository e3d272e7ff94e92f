//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/credswap/credswap/bench/internal/benchkit"
)

// gnuplotInstall is how to get gnuplot on Debian and Ubuntu.
const gnuplotInstall = "apt-get install -y gnuplot-nox   # as root; run apt-get update first if it cannot find the package"

// writeCSV writes one row per second of the run: transactions per second, failed transactions,
// and the p50, p99 and maximum latency in milliseconds.
func writeCSV(file string, r loadResult) error {
	var b strings.Builder
	b.WriteString("second,tps,failed,p50_ms,p99_ms,max_ms\n")
	for _, s := range r.seconds {
		fmt.Fprintf(&b, "%d,%d,%d,%.3f,%.3f,%.3f\n", s.sec, s.txns, s.failed, ms(s.p50), ms(s.p99), ms(s.maxLat))
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write CSV: %w", err)
	}
	return nil
}

// plotScript is the gnuplot program for the CSV: TPS on the left axis, p50 and p99 latency on
// the right one, a dashed vertical line at every rotation and its switch window shaded.
func plotScript(csvFile, pngFile string, o options, r loadResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "set terminal pngcairo size 1280,640 font 'sans,11'\n")
	fmt.Fprintf(&b, "set output %s\n", gpString(pngFile))
	b.WriteString("set datafile separator ','\n")
	var at []string
	for _, rot := range r.rotations {
		at = append(at, fmt.Sprintf("%.1f s", rot))
	}
	fmt.Fprintf(&b, "set title %s\n", gpString(fmt.Sprintf(
		"credswap live credential swap: pgbench TPC-B-like, -M prepared, %d clients; credential rotated at %s",
		o.clients, strings.Join(at, " and "))))
	b.WriteString("set xlabel 'seconds since the start of the pgbench run'\n")
	b.WriteString("set ylabel 'transactions per second'\n")
	b.WriteString("set y2label 'latency per second (ms)'\n")
	fmt.Fprintf(&b, "set xrange [0:%d]\n", o.seconds)
	b.WriteString("set yrange [0:*]\nset y2range [0:*]\n")
	b.WriteString("set xtics 5\nset mxtics 5\nset ytics nomirror\nset y2tics\n")
	b.WriteString("set grid xtics ytics\n")
	b.WriteString("set key outside below center horizontal maxrows 2 width 2\n")
	for i, rot := range r.rotations {
		fmt.Fprintf(&b, "set arrow %d from %.3f, graph 0 to %.3f, graph 1 nohead dashtype 2 linewidth 2 linecolor rgb '#d62728'\n", i+1, rot, rot)
		fmt.Fprintf(&b, "set label %d %s at %.3f, graph 0.97 offset 0.6,0 textcolor rgb '#d62728'\n", i+1, gpString(fmt.Sprintf("rotation %d", i+1)), rot)
		fmt.Fprintf(&b, "set object %d rectangle from %.3f, graph 0 to %.3f, graph 1 behind fillcolor rgb '#d62728' fillstyle transparent solid 0.08 noborder\n", i+1, rot, rot+switchWindow)
	}
	// Each second's values are drawn at its middle.
	fmt.Fprintf(&b, "plot %s using ($1+0.5):2 axes x1y1 with linespoints pointtype 7 pointsize 0.6 linewidth 2 linecolor rgb '#1f77b4' title 'TPS (left axis)', \\\n", gpString(csvFile))
	b.WriteString("     '' using ($1+0.5):5 axes x1y2 with linespoints pointtype 5 pointsize 0.6 linewidth 2 linecolor rgb '#ff7f0e' title 'p99 latency (right axis)', \\\n")
	b.WriteString("     '' using ($1+0.5):4 axes x1y2 with lines linewidth 2 dashtype 2 linecolor rgb '#2ca02c' title 'p50 latency (right axis)', \\\n")
	b.WriteString("     NaN with lines dashtype 2 linewidth 2 linecolor rgb '#d62728' title 'credential rotation (shaded: the 2 s switch window)'\n")
	return b.String()
}

// gpString quotes s as a gnuplot single-quoted string.
func gpString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// plot runs gnuplot on the script for the CSV.
func plot(ctx context.Context, gnuplot, csvFile, pngFile string, o options, r loadResult) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gnuplot)
	cmd.Stdin = strings.NewReader(plotScript(csvFile, pngFile, o, r))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %w\n%s", err, benchkit.Indent(benchkit.LastLines(string(out), 10)))
	}
	return nil
}
