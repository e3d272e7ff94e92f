//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/credswap/credswap/bench/internal/benchkit"
)

// Messages of credswap's log that the benchmark reads (proxy/postgres/switch.go,
// proxy/drain.go).
const (
	msgSwitched = "session switched"
	msgDraining = "draining sessions to new credential generation"
)

// switchEvent is one "session switched" line: a session moved to generation gen in took.
type switchEvent struct {
	gen  uint64
	took time.Duration
}

// drainEvent is one "draining sessions to new credential generation" line: the warm-up before
// the drain to gen opened warmed connections in warmTime.
type drainEvent struct {
	gen      uint64
	warmed   int
	warmTime time.Duration
}

// credswapLog is what the benchmark takes from credswap's JSON log.
type credswapLog struct {
	switches []switchEvent
	drains   []drainEvent
	warnings []string // the message of every line at level warn or above, for the report
}

// logLine holds the fields of a zap JSON line (production encoder: durations are seconds as a
// float) that the benchmark reads.
type logLine struct {
	Level      string   `json:"level"`
	Msg        string   `json:"msg"`
	Generation *uint64  `json:"generation"`
	Took       *float64 `json:"took"`
	Warmed     *int     `json:"warmed"`
	WarmTime   *float64 `json:"warm_time"`
	Error      string   `json:"error"`
}

// parseCredswapLog reads credswap's log. Lines that are not JSON objects (a panic, say) are
// skipped; a "session switched" or "draining" line without its fields is an error, since the
// measurement would silently lose it.
func parseCredswapLog(r io.Reader) (credswapLog, error) {
	var out credswapLog
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var l logLine
		if err := json.Unmarshal(line, &l); err != nil {
			continue
		}
		switch l.Msg {
		case msgSwitched:
			if l.Generation == nil || l.Took == nil {
				return out, fmt.Errorf("credswap log line %d: %q without generation or took: %s", n, l.Msg, benchkit.Truncate(string(line), 200))
			}
			out.switches = append(out.switches, switchEvent{gen: *l.Generation, took: seconds(*l.Took)})
		case msgDraining:
			if l.Generation == nil || l.Warmed == nil || l.WarmTime == nil {
				return out, fmt.Errorf("credswap log line %d: %q without generation, warmed or warm_time: %s", n, l.Msg, benchkit.Truncate(string(line), 200))
			}
			out.drains = append(out.drains, drainEvent{gen: *l.Generation, warmed: *l.Warmed, warmTime: seconds(*l.WarmTime)})
		}
		switch l.Level {
		case "warn", "error", "dpanic", "panic", "fatal":
			w := l.Level + ": " + l.Msg
			if l.Error != "" {
				w += ": " + l.Error
			}
			out.warnings = append(out.warnings, w)
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read credswap log: %w", err)
	}
	return out, nil
}

// seconds converts zap's float seconds to a Duration, rounded to the nanosecond.
func seconds(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }

// tookFor returns the switch times of generation gen.
func (l credswapLog) tookFor(gen uint64) []time.Duration {
	var out []time.Duration
	for _, s := range l.switches {
		if s.gen == gen {
			out = append(out, s.took)
		}
	}
	return out
}

// drainFor returns the drain line of generation gen.
func (l credswapLog) drainFor(gen uint64) (drainEvent, bool) {
	for _, d := range l.drains {
		if d.gen == gen {
			return d, true
		}
	}
	return drainEvent{}, false
}

// txn is one line of pgbench's per-transaction log (--log, without --aggregate-interval).
type txn struct {
	client  int
	latency time.Duration // 0 for a failed or skipped transaction
	end     time.Time     // completion time
	failed  bool          // "failed", "serialization" or "deadlock" in the time column
	skipped bool          // "skipped" (only with --rate and --latency-limit)
}

// parsePgbenchLogLine parses one line of pgbench's per-transaction log. The columns
// (PostgreSQL 15, "Per-Transaction Logging" in the pgbench documentation) are
//
//	client_id transaction_no time script_no time_epoch time_us [schedule_lag] [retries]
//
// time is the latency in microseconds, or "failed", "serialization", "deadlock" or
// "skipped"; time_epoch and time_us give the completion time. schedule_lag (only with
// --rate) and retries (only with --max-tries other than 1) are accepted and ignored.
func parsePgbenchLogLine(line string) (txn, error) {
	f := strings.Fields(line)
	if len(f) < 6 || len(f) > 8 {
		return txn{}, fmt.Errorf("pgbench log line %q: %d fields, want 6 to 8", benchkit.Truncate(line, 80), len(f))
	}
	var t txn
	var err error
	if t.client, err = strconv.Atoi(f[0]); err != nil || t.client < 0 {
		return txn{}, fmt.Errorf("pgbench log line %q: client_id %q is not a number", benchkit.Truncate(line, 80), f[0])
	}
	if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
		return txn{}, fmt.Errorf("pgbench log line %q: transaction_no %q is not a number", benchkit.Truncate(line, 80), f[1])
	}
	switch f[2] {
	case "failed", "serialization", "deadlock":
		t.failed = true
	case "skipped":
		t.skipped = true
	default:
		us, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || us < 0 {
			return txn{}, fmt.Errorf("pgbench log line %q: time %q is neither microseconds nor failed/skipped", benchkit.Truncate(line, 80), f[2])
		}
		t.latency = time.Duration(us) * time.Microsecond
	}
	epoch, err := strconv.ParseInt(f[4], 10, 64)
	if err != nil {
		return txn{}, fmt.Errorf("pgbench log line %q: time_epoch %q is not a number", benchkit.Truncate(line, 80), f[4])
	}
	us, err := strconv.ParseInt(f[5], 10, 64)
	if err != nil || us < 0 || us >= 1e6 {
		return txn{}, fmt.Errorf("pgbench log line %q: time_us %q is not a microsecond count below 1e6", benchkit.Truncate(line, 80), f[5])
	}
	t.end = time.Unix(epoch, us*1000)
	return t, nil
}

// parsePgbenchLog reads one per-transaction log file.
func parsePgbenchLog(r io.Reader) ([]txn, error) {
	var out []txn
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		t, err := parsePgbenchLogLine(sc.Text())
		if err != nil {
			return out, err
		}
		out = append(out, t)
	}
	return out, sc.Err()
}

// pgbenchSummary is what pgbench's final report says.
type pgbenchSummary struct {
	tps       float64 // "tps = N (without initial connection time)"
	processed int64   // "number of transactions actually processed: N"
	failed    int64   // "number of failed transactions: N"
}

var (
	tpsRE      = regexp.MustCompile(`(?m)^tps = ([0-9]+(?:\.[0-9]+)?) \(without initial connection time\)`)
	txnsRE     = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	failedRE   = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
	abortedRE  = regexp.MustCompile(`\bclient [0-9]+ (?:script [0-9]+ )?aborted`)
	progressRE = regexp.MustCompile(`^progress: ([0-9]+(?:\.[0-9]+)?) s,`)
)

// parsePgbenchSummary extracts the TPS, transaction and failure counts from pgbench's report.
// The "failed transactions" line (PostgreSQL 15 and later) is required: without it a run cannot
// be shown to be clean.
func parsePgbenchSummary(out string) (pgbenchSummary, error) {
	var s pgbenchSummary
	m := failedRE.FindStringSubmatch(out)
	if m == nil {
		return s, errors.New(`no "number of failed transactions" line in the pgbench output`)
	}
	s.failed, _ = strconv.ParseInt(m[1], 10, 64)
	if m = tpsRE.FindStringSubmatch(out); m == nil {
		return s, errors.New(`no "tps = N (without initial connection time)" line in the pgbench output`)
	}
	s.tps, _ = strconv.ParseFloat(m[1], 64)
	if m = txnsRE.FindStringSubmatch(out); m == nil {
		return s, errors.New(`no "number of transactions actually processed" line in the pgbench output`)
	}
	s.processed, _ = strconv.ParseInt(m[1], 10, 64)
	return s, nil
}

// abortedClients counts the "client N aborted" errors in pgbench's stderr.
func abortedClients(stderr string) int { return len(abortedRE.FindAllString(stderr, -1)) }

// progressSeconds returns the elapsed seconds of a `-P` progress line, or false for any other
// line.
func progressSeconds(line string) (float64, bool) {
	m := progressRE.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	s, err := strconv.ParseFloat(m[1], 64)
	return s, err == nil
}
