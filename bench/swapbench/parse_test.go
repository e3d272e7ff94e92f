//go:build linux

package main

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePgbenchLogLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want txn
	}{
		{"0 199 2241 0 1175850568 995598", txn{client: 0, latency: 2241 * time.Microsecond, end: time.Unix(1175850568, 995598000)}},
		{"15 3 12 0 1700000000 0", txn{client: 15, latency: 12 * time.Microsecond, end: time.Unix(1700000000, 0)}},
		// --rate adds schedule_lag; --max-tries adds retries.
		{"0 81 4621 0 1412881037 912698 3005", txn{latency: 4621 * time.Microsecond, end: time.Unix(1412881037, 912698000)}},
		{"3 0 47423 0 1499414498 34501 3", txn{client: 3, latency: 47423 * time.Microsecond, end: time.Unix(1499414498, 34501000)}},
		{"0 83 skipped 0 1412881037 914578 5217", txn{skipped: true, end: time.Unix(1412881037, 914578000)}},
		{"2 0 failed 0 1499414498 86248 9", txn{client: 2, failed: true, end: time.Unix(1499414498, 86248000)}},
		{"2 0 serialization 0 1499414498 86248 9", txn{client: 2, failed: true, end: time.Unix(1499414498, 86248000)}},
		{"2 0 deadlock 0 1499414498 86248", txn{client: 2, failed: true, end: time.Unix(1499414498, 86248000)}},
	} {
		got, err := parsePgbenchLogLine(tc.line)
		if err != nil {
			t.Errorf("parsePgbenchLogLine(%q): %v", tc.line, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parsePgbenchLogLine(%q) = %+v, want %+v", tc.line, got, tc.want)
		}
	}
	for _, line := range []string{
		"",
		"0 199 2241 0 1175850568",            // too few fields
		"0 199 2241 0 1175850568 1 2 3 4",    // too many
		"x 199 2241 0 1175850568 995598",     // client
		"0 199 oops 0 1175850568 995598",     // time
		"0 199 -5 0 1175850568 995598",       // negative latency
		"0 199 2241 0 1175850568 1000000",    // time_us out of range
		"0 199 2241 0 yesterday 995598",      // time_epoch
		"progress: 1.0 s, 4000.0 tps, lat 4", // not a log line
	} {
		if got, err := parsePgbenchLogLine(line); err == nil {
			t.Errorf("parsePgbenchLogLine(%q) = %+v, want an error", line, got)
		}
	}
}

func TestParsePgbenchLog(t *testing.T) {
	got, err := parsePgbenchLog(strings.NewReader("0 1 100 0 10 0\n\n1 1 200 0 10 500000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].latency != 200*time.Microsecond {
		t.Errorf("parsePgbenchLog = %+v", got)
	}
	if _, err := parsePgbenchLog(strings.NewReader("0 1 100 0 10 0\ngarbage\n")); err == nil {
		t.Error("parsePgbenchLog accepted a bad line")
	}
}

const credswapLogSample = `{"level":"info","ts":"2026-11-25T19:02:11.001Z","msg":"credential adopted","backend":"bench","generation":2}
{"level":"info","ts":"2026-11-25T19:02:11.050Z","msg":"draining sessions to new credential generation","backend":"bench","generation":2,"username":"swap_b","warmed":200,"warm_time":0.412345}
{"level":"debug","ts":"2026-11-25T19:02:11.051Z","msg":"session switched","backend":"bench","session":1,"generation":2,"took":0.000812345}
{"level":"debug","ts":"2026-11-25T19:02:11.052Z","msg":"session switched","backend":"bench","session":2,"generation":2,"took":0.0012}
{"level":"debug","ts":"2026-11-25T19:02:12.052Z","msg":"session switched","backend":"bench","session":2,"generation":3,"took":2.5e-05}
{"level":"warn","ts":"2026-11-25T19:02:13.000Z","msg":"session switch failed","generation":3,"error":"replaying session state: boom"}
not json at all
{"level":"debug","msg":"session started","generation":3}
`

func TestParseCredswapLog(t *testing.T) {
	got, err := parseCredswapLog(strings.NewReader(credswapLogSample))
	if err != nil {
		t.Fatal(err)
	}
	wantSwitches := []switchEvent{
		{gen: 2, took: 812345 * time.Nanosecond},
		{gen: 2, took: 1200 * time.Microsecond},
		{gen: 3, took: 25 * time.Microsecond},
	}
	if !reflect.DeepEqual(got.switches, wantSwitches) {
		t.Errorf("switches = %+v, want %+v", got.switches, wantSwitches)
	}
	if want := []drainEvent{{gen: 2, warmed: 200, warmTime: 412345 * time.Microsecond}}; !reflect.DeepEqual(got.drains, want) {
		t.Errorf("drains = %+v, want %+v", got.drains, want)
	}
	if want := []string{"warn: session switch failed: replaying session state: boom"}; !reflect.DeepEqual(got.warnings, want) {
		t.Errorf("warnings = %q, want %q", got.warnings, want)
	}
	if took := got.tookFor(2); len(took) != 2 {
		t.Errorf("tookFor(2) = %v", took)
	}
	if _, ok := got.drainFor(3); ok {
		t.Error("drainFor(3) found a drain line")
	}

	for _, bad := range []string{
		`{"level":"debug","msg":"session switched","generation":2}`,
		`{"level":"debug","msg":"session switched","took":0.001}`,
		`{"level":"info","msg":"draining sessions to new credential generation","generation":2}`,
	} {
		if _, err := parseCredswapLog(strings.NewReader(bad + "\n")); err == nil {
			t.Errorf("parseCredswapLog(%s) accepted a line without its fields", bad)
		}
	}
}

func TestPercentile(t *testing.T) {
	xs := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		p    float64
		want int64
	}{
		{50, 5}, {90, 9}, {99, 10}, {100, 10}, {10, 1}, {11, 2}, {0.001, 1},
	} {
		if got := percentile(xs, tc.p); got != tc.want {
			t.Errorf("percentile(1..10, %v) = %d, want %d", tc.p, got, tc.want)
		}
	}
	if got := percentile([]float64{42}, 99); got != 42 {
		t.Errorf("percentile([42], 99) = %v", got)
	}
	// 200 values: p99 is the 198th, not the maximum.
	var ds []time.Duration
	for i := 1; i <= 200; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(ds, 99); got != 198*time.Millisecond {
		t.Errorf("percentile(1..200 ms, 99) = %v, want 198ms", got)
	}
}

func TestNewDist(t *testing.T) {
	d := newDist([]time.Duration{5, 1, 4, 2, 3})
	if d.n != 5 || d.p50 != 3 || d.p90 != 5 || d.p99 != 5 || d.max != 5 || d.mean != 3 {
		t.Errorf("newDist = %+v", d)
	}
	if d := newDist(nil); d.n != 0 {
		t.Errorf("newDist(nil) = %+v", d)
	}
}

func TestParsePgbenchSummary(t *testing.T) {
	const out = `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 10
query mode: prepared
number of clients: 16
number of threads: 2
maximum number of tries: 1
duration: 60 s
number of transactions actually processed: 240123
number of failed transactions: 0 (0.000%)
latency average = 3.996 ms
latency stddev = 2.100 ms
initial connection time = 40.123 ms
tps = 4002.050000 (without initial connection time)
`
	got, err := parsePgbenchSummary(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := (pgbenchSummary{tps: 4002.05, processed: 240123, failed: 0}); got != want {
		t.Errorf("parsePgbenchSummary = %+v, want %+v", got, want)
	}
	got, err = parsePgbenchSummary(strings.Replace(out, "failed transactions: 0 (0.000%)", "failed transactions: 7 (0.003%)", 1))
	if err != nil || got.failed != 7 {
		t.Errorf("parsePgbenchSummary with failures = %+v, %v", got, err)
	}
	if _, err := parsePgbenchSummary(""); err == nil {
		t.Error("parsePgbenchSummary accepted an empty report")
	}
}

func TestAbortedAndProgress(t *testing.T) {
	stderr := `pgbench (15.20 (Debian 15.20-0+deb12u1))
starting vacuum...end.
progress: 1.0 s, 4100.9 tps, lat 3.880 ms stddev 1.527, 0 failed
pgbench: error: client 3 script 0 aborted in command 4 query 0: ERROR:  boom
pgbench: error: client 7 aborted while establishing connection
pgbench: fatal: Run was aborted; the above results are incomplete.
`
	if n := abortedClients(stderr); n != 2 {
		t.Errorf("abortedClients = %d, want 2", n)
	}
	if s, ok := progressSeconds("progress: 12.0 s, 4100.9 tps, lat 3.880 ms stddev 1.527, 0 failed"); !ok || s != 12 {
		t.Errorf("progressSeconds = %v, %v", s, ok)
	}
	if _, ok := progressSeconds("starting vacuum...end."); ok {
		t.Error("progressSeconds accepted a non-progress line")
	}
}

func TestAnalyzeLoad(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }
	var txns []txn
	// 10 transactions of 1 ms in every tenth of every second of a 30 s run, except that the
	// second after the rotation at 10.5 s has 10 of 20 ms and one failure.
	for tenth := range 300 {
		sec := float64(tenth) / 10
		lat := time.Millisecond
		if sec >= 10.5 && sec < 11.5 {
			lat = 20 * time.Millisecond
		}
		txns = append(txns, txn{latency: lat, end: at(sec + 0.01)})
	}
	txns = append(txns, txn{failed: true, end: at(11)}, txn{latency: time.Hour, end: at(-1)}, txn{skipped: true, end: at(3)})
	r := analyzeLoad(txns, t0, 30, []int{10}, []time.Time{at(10.5)})

	if len(r.seconds) != 30 || r.seconds[3].txns != 10 || r.seconds[11].failed != 1 {
		t.Errorf("seconds = %+v", r.seconds[:12])
	}
	if r.seconds[10].p99 != 20*time.Millisecond || r.seconds[10].p50 != time.Millisecond {
		t.Errorf("second 10 = %+v", r.seconds[10])
	}
	// Steady seconds: 5–8 (9 is before the rotation, 10–14 after) and 15–28.
	var names []string
	for _, s := range r.segments {
		names = append(names, s.name)
	}
	if want := []string{"steady 5–8 s", "steady 15–28 s"}; !reflect.DeepEqual(names, want) {
		t.Errorf("segments = %q, want %q", names, want)
	}
	if r.steady.txns != 180 || r.steady.p99 != time.Millisecond || r.steady.tps != 10 {
		t.Errorf("steady = %+v", r.steady)
	}
	if len(r.switches) != 1 {
		t.Fatalf("switches = %+v", r.switches)
	}
	w := r.switches[0]
	if w.txns != 20 || w.failed != 1 || w.p99 != 20*time.Millisecond || w.tps != 10 {
		t.Errorf("switch window = %+v", w)
	}
	before, after, okB, okA := r.around(r.rotations[0])
	if !okB || !okA || before.name != "steady 5–8 s" || after.name != "steady 15–28 s" {
		t.Errorf("around = %q %v, %q %v", before.name, okB, after.name, okA)
	}
}

func TestSteadySecondsDefaults(t *testing.T) {
	// The defaults give the seconds 5–18, 25–38 and 45–58 of a 60 s run.
	got := segments(steadySeconds(60, []int{20, 40}))
	if want := [][2]int{{5, 19}, {25, 39}, {45, 59}}; !reflect.DeepEqual(got, want) {
		t.Errorf("segments = %v, want %v", got, want)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-k", "10", "-rotate-at", "5, 9", "-T", "12", "-parts", "load"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if o.k != 10 || o.r != 5 || o.seconds != 12 || !reflect.DeepEqual(o.rotateAt, []int{5, 9}) || !reflect.DeepEqual(o.parts, []string{"load"}) {
		t.Errorf("parseFlags = %+v", o)
	}
	for _, args := range [][]string{
		{"-k", "0"},
		{"-rotate-at", "60"},
		{"-rotate-at", "40,20"},
		{"-rotate-at", "x"},
		{"-parts", "both"},
		{"-threads", "4", "-clients", "2"},
		{"extra"},
	} {
		if _, err := parseFlags(args, &strings.Builder{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestPlotScript(t *testing.T) {
	o := options{clients: 16, seconds: 60}
	s := plotScript("/tmp/a.csv", "/tmp/it's.png", o, loadResult{rotations: []float64{20.01, 40.02}})
	for _, want := range []string{
		"set output '/tmp/it''s.png'",
		"set xlabel",
		"set ylabel",
		"set y2label",
		"set arrow 2 from 40.020, graph 0 to 40.020, graph 1 nohead",
		"rotated at 20.0 s and 40.0 s",
		"title 'p99 latency (right axis)'",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("plot script lacks %q:\n%s", want, s)
		}
	}
}
