//go:build linux

package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/credswap/credswap/bench/internal/benchkit"
	"github.com/credswap/credswap/internal/testenv"
)

// Goals the report reads the numbers against.
const (
	goalSwitchMedian = time.Millisecond
	goalP99Ratio     = 2.0
)

// header describes the run: when, where, with what.
type header struct {
	benchkit.Header
	code string // the commit credswap was built from, and uncommitted changes
}

// describe collects the report header. Versions that cannot be read are shown as such rather
// than failing the benchmark.
func describe(ctx context.Context, started time.Time, o options, pg *testenv.Postgres, goBin, code string) header {
	return header{Header: benchkit.Describe(ctx, started, tool, o.args, goBin, pg), code: code}
}

// renderReport returns the markdown report.
func renderReport(h header, o options, sw *switchResult, ld *loadRun, cl credswapLog, plotNote string) string {
	var b strings.Builder
	b.WriteString("### Results\n\n")
	fmt.Fprintf(&b, "- **Date:** %s\n", h.Date.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- **Machine:** %s, %d cores, Linux %s\n", h.CPU, h.Cores, h.Kernel)
	fmt.Fprintf(&b, "- **Versions:** Go %s; %s; %s\n", strings.TrimPrefix(h.GoVersion, "go"), h.Postgres, h.Pgbench)
	fmt.Fprintf(&b, "- **Command:** `%s`\n", h.Command)
	fmt.Fprintf(&b, "- **Code:** %s\n", h.code)
	fmt.Fprintf(&b, "- **Load average (1/5/15 min):** %s at start, %s at end\n", h.LoadStart, h.LoadEnd)
	fmt.Fprintf(&b, "- **Rotation:** `ALTER ROLE <other user> PASSWORD '<random>'` as superuser, then the credential file replaced by rename; users %s and %s alternate (both members of %s, which owns the tables)\n",
		backendUsers[0], backendUsers[1], ownerRole)
	if sw != nil {
		b.WriteString("\n")
		renderSwitch(&b, sw, cl)
	}
	if ld != nil {
		b.WriteString("\n")
		renderLoad(&b, o, ld, cl)
	}
	if plotNote != "" {
		fmt.Fprintf(&b, "\n%s\n", plotNote)
	}
	if len(cl.warnings) > 0 {
		fmt.Fprintf(&b, "\ncredswap logged %d warnings or errors; the first:\n\n", len(cl.warnings))
		for _, w := range cl.warnings[:min(5, len(cl.warnings))] {
			fmt.Fprintf(&b, "- `%s`\n", benchkit.Truncate(w, 200))
		}
	}
	return b.String()
}

// renderSwitch writes part 1: the distribution of the per-session switch time and each
// rotation's timeline.
func renderSwitch(b *strings.Builder, sw *switchResult, cl credswapLog) {
	fmt.Fprintf(b, "#### Switch cost: %d idle sessions, %d rotations\n\n", sw.k, len(sw.rotations))
	fmt.Fprintf(b, "Each session holds search_path, statement_timeout, app.tenant, two prepared statements and one LISTEN. "+
		"Switch time is the `took` of credswap's debug line \"session switched\" (capture the state on the old connection, replay it on a warm one, forward, close the old one).\n\n")
	b.WriteString("| rotation | generation → user | switches ok | logged | median ms | p90 ms | p99 ms | max ms | mean ms |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	var all []time.Duration
	okTotal := 0
	for i, r := range sw.rotations {
		took := cl.tookFor(r.gen)
		all = append(all, took...)
		ok := r.st.Drain.Results["ok"]
		okTotal += ok
		fmt.Fprintf(b, "| %d | %d → %s | %d | %d | %s |\n", i+1, r.gen, r.user, ok, len(took), distCells(newDist(took)))
	}
	fmt.Fprintf(b, "| **all** | | **%d** | **%d** | %s |\n", okTotal, len(all), boldCells(distCells(newDist(all))))
	if len(all) < okTotal {
		fmt.Fprintf(b, "\nOnly %d of %d switches were logged: credswap's JSON logger is zap's production configuration, whose sampler keeps the first 100 lines with the same message per second and then every 100th. The distribution is over the logged ones.\n", len(all), okTotal)
	}
	b.WriteString("\n")
	renderTimeline(b, sw.rotations, cl, time.Time{})
	// The drain's throughput covers every switch, logged or not.
	var rates []string
	for _, r := range sw.rotations {
		if d := r.st.Drain.CompletedAt.Sub(r.st.Drain.StartedAt); d > 0 {
			rates = append(rates, fmt.Sprintf("%.0f", float64(r.st.Drain.Results["ok"])/d.Seconds()))
		}
	}
	if len(rates) > 0 {
		fmt.Fprintf(b, "\nDrain throughput (switches ok ÷ drain start → complete), per rotation: %s sessions/s.\n", strings.Join(rates, ", "))
	}
}

// renderTimeline writes when each rotation was adopted, warmed and drained, relative to the
// moment the credential file was replaced. With t0 set, rotations are also placed in the run.
func renderTimeline(b *strings.Builder, rotations []rotation, cl credswapLog, t0 time.Time) {
	at := ""
	if !t0.IsZero() {
		at = " at (s of run) |"
	}
	fmt.Fprintf(b, "| rotation |%s file → adopted ms | warm-up ms (connections) | drain start → complete ms | file → drain complete ms (status poll) |\n", at)
	b.WriteString("|---|" + strings.Repeat("---:|", 4+boolInt(!t0.IsZero())) + "\n")
	for i, r := range rotations {
		row := []string{fmt.Sprint(i + 1)}
		if !t0.IsZero() {
			row = append(row, fmt.Sprintf("%.2f", r.wrote.Sub(t0).Seconds()))
		}
		adopted := "–"
		if c := r.st.Credential.Current; c != nil && !c.AdoptedAt.IsZero() {
			adopted = fmt.Sprintf("%.0f", ms(c.AdoptedAt.Sub(r.wrote)))
		}
		warm := "–"
		if d, ok := cl.drainFor(r.gen); ok {
			warm = fmt.Sprintf("%.1f (%d)", ms(d.warmTime), d.warmed)
		}
		drain := "–"
		if !r.st.Drain.StartedAt.IsZero() && !r.st.Drain.CompletedAt.IsZero() {
			drain = fmt.Sprintf("%.1f", ms(r.st.Drain.CompletedAt.Sub(r.st.Drain.StartedAt)))
		}
		row = append(row, adopted, warm, drain, fmt.Sprintf("%.0f", ms(r.seen.Sub(r.wrote))))
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
}

// renderLoad writes part 2: the pgbench run, the steady-state and switch-window latencies and
// TPS, and the rotations' timeline.
func renderLoad(b *strings.Builder, o options, ld *loadRun, cl credswapLog) {
	r := ld.analysis
	fmt.Fprintf(b, "#### Latency around a switch: `pgbench %s` (TPC-B-like, scale %d)\n\n", strings.Join(displayArgs(ld.args), " "), o.scale)
	var at []string
	for _, rot := range r.rotations {
		at = append(at, fmt.Sprintf("%.2f s", rot))
	}
	fmt.Fprintf(b, "Credential rotated at %s of the run. Steady state: seconds %s (the first %d s, the second before each rotation, the %d s from it and the last second left out); switch window: the %d s starting at each rotation. Latency percentiles are over the transactions that completed in the window.\n\n",
		strings.Join(at, " and "), describeSegments(r.segments), warmupSeconds, quietAfter, switchWindow)
	b.WriteString("| window | transactions | TPS | p50 ms | p99 ms | max ms | failed |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	row := func(w windowStat, bold bool) {
		name := w.name
		if bold {
			name = "**" + name + "**"
		}
		fmt.Fprintf(b, "| %s | %d | %.0f | %s | %s | %s | %d |\n", name, w.txns, w.tps, msCell(w.p50, w.txns), msCell(w.p99, w.txns), msCell(w.maxLat, w.txns), w.failed)
	}
	for _, w := range r.segments {
		row(w, false)
	}
	row(r.steady, true)
	for _, w := range r.switches {
		row(w, true)
	}
	b.WriteString("\n")
	b.WriteString("| rotation | TPS before | TPS in window | TPS after | steady p99 ms | window p99 ms | window p99 / steady p99 |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	for i, w := range r.switches {
		before, after, okB, okA := r.around(r.rotations[i])
		fmt.Fprintf(b, "| %d | %s | %.0f | %s | %s | %s | %s |\n", i+1, tpsCell(before, okB), w.tps, tpsCell(after, okA),
			msCell(r.steady.p99, r.steady.txns), msCell(w.p99, w.txns), ratioCell(w, r.steady))
	}
	b.WriteString("\n")

	failed := "unknown (no pgbench report)"
	if ld.summErr == nil {
		failed = fmt.Sprint(ld.summary.failed)
	}
	fmt.Fprintf(b, "pgbench: %s transactions, %s TPS overall; failed transactions: %s; aborted clients: %d; exit: %s. Per-transaction log: %d lines in %d files.\n\n",
		summaryCount(ld), summaryTPS(ld), failed, ld.aborted, exitCell(ld.exitErr), ld.txns, ld.logFiles)
	if ld.summErr != nil || ld.exitErr != nil || ld.aborted > 0 {
		fmt.Fprintf(b, "```\n%s\n```\n\n", benchkit.LastLines(ld.stderr, 12))
	}
	renderTimeline(b, ld.rotations, cl, ld.t0)
	logged, ok := 0, 0
	for _, rot := range ld.rotations {
		logged += len(cl.tookFor(rot.gen))
		ok += rot.st.Drain.Results["ok"]
	}
	if d := newDist(loadTook(ld, cl)); d.n > 0 {
		fmt.Fprintf(b, "\nSwitches of the busy pgbench sessions: %d ok (%d logged), `took` median %.3f ms, max %.3f ms.\n", ok, logged, ms(d.p50), ms(d.max))
	}
}

func loadTook(ld *loadRun, cl credswapLog) []time.Duration {
	var out []time.Duration
	for _, r := range ld.rotations {
		out = append(out, cl.tookFor(r.gen)...)
	}
	return out
}

// displayArgs replaces the log prefix, a temp path, with a placeholder.
func displayArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if i > 0 && args[i-1] == "--log-prefix" {
			a = "DIR/pgb"
		}
		out[i] = a
	}
	return out
}

func describeSegments(segs []windowStat) string {
	var parts []string
	for _, s := range segs {
		parts = append(parts, fmt.Sprintf("%.0f–%.0f", s.from, s.to-1))
	}
	return strings.Join(parts, ", ")
}

func distCells(d dist) string {
	if d.n == 0 {
		return "– | – | – | – | –"
	}
	return fmt.Sprintf("%.3f | %.3f | %.3f | %.3f | %.3f", ms(d.p50), ms(d.p90), ms(d.p99), ms(d.max), ms(d.mean))
}

func boldCells(cells string) string {
	parts := strings.Split(cells, " | ")
	for i, p := range parts {
		parts[i] = "**" + p + "**"
	}
	return strings.Join(parts, " | ")
}

func msCell(d time.Duration, n int) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", ms(d))
}

func tpsCell(w windowStat, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.0f (%s)", w.tps, strings.TrimPrefix(w.name, "steady "))
}

func ratioCell(w, steady windowStat) string {
	if w.txns == 0 || steady.txns == 0 || steady.p99 == 0 {
		return "–"
	}
	ratio := float64(w.p99) / float64(steady.p99)
	verdict := "within"
	if ratio > goalP99Ratio {
		verdict = "over"
	}
	return fmt.Sprintf("**%.2f×** (%s the %.0f× goal)", ratio, verdict, goalP99Ratio)
}

func summaryCount(ld *loadRun) string {
	if ld.summErr != nil {
		return "?"
	}
	return fmt.Sprint(ld.summary.processed)
}

func summaryTPS(ld *loadRun) string {
	if ld.summErr != nil {
		return "?"
	}
	return fmt.Sprintf("%.0f", ld.summary.tps)
}

func exitCell(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
