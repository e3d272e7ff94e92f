//go:build linux

package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Windows of the latency analysis, in seconds of the run (since t0).
const (
	warmupSeconds = 5 // the first seconds are not steady state
	switchWindow  = 2 // a rotation's window: the 2 s starting at the file replacement
	quietBefore   = 1 // steady state leaves out this many seconds before a rotation…
	quietAfter    = 5 // …and this many starting with the rotation's second
	tailSeconds   = 1 // …and the last second of the run, which pgbench cuts short
)

// secondStat is one second of the run: the transactions that completed in it.
type secondStat struct {
	sec              int
	txns, failed     int
	p50, p99, maxLat time.Duration // of the successful transactions; 0 if none
}

// windowStat is the transactions that completed in [from, to) seconds of the run.
type windowStat struct {
	name             string
	from, to         float64
	txns, failed     int
	tps              float64 // successful transactions per second of the window
	p50, p99, maxLat time.Duration
}

// loadResult is the per-second and per-window analysis of one pgbench run.
type loadResult struct {
	seconds   []secondStat
	segments  []windowStat // contiguous steady-state stretches
	steady    windowStat   // all of them together
	switches  []windowStat // one per rotation
	rotations []float64    // seconds of the run at which each credential file was replaced
}

// analyzeLoad bins the transactions by completion time relative to t0 into duration seconds.
// nominal are the rotation times asked for (whole seconds decide the steady-state seconds:
// from warmupSeconds to duration-1-tailSeconds, without the quietBefore seconds before and the
// quietAfter seconds from each rotation); rotated are the moments the credential file was
// replaced, which start the switch windows.
func analyzeLoad(txns []txn, t0 time.Time, duration int, nominal []int, rotated []time.Time) loadResult {
	var r loadResult
	for _, at := range rotated {
		r.rotations = append(r.rotations, at.Sub(t0).Seconds())
	}
	// Latencies of successful transactions by second, and failures by second.
	lat := make([][]time.Duration, duration)
	failed := make([]int, duration)
	type timed struct {
		at  float64
		txn txn
	}
	all := make([]timed, 0, len(txns))
	for _, t := range txns {
		at := t.end.Sub(t0).Seconds()
		all = append(all, timed{at, t})
		sec := int(math.Floor(at))
		if sec < 0 || sec >= duration || t.skipped {
			continue
		}
		if t.failed {
			failed[sec]++
			continue
		}
		lat[sec] = append(lat[sec], t.latency)
	}
	for sec := range duration {
		s := secondStat{sec: sec, txns: len(lat[sec]), failed: failed[sec]}
		if d := newDist(lat[sec]); d.n > 0 {
			s.p50, s.p99, s.maxLat = d.p50, d.p99, d.max
		}
		r.seconds = append(r.seconds, s)
	}

	steadySec := steadySeconds(duration, nominal)
	inSwitch := func(at float64) bool {
		for _, rot := range r.rotations {
			if at >= rot && at < rot+switchWindow {
				return true
			}
		}
		return false
	}
	window := func(name string, from, to float64, keep func(at float64) bool) windowStat {
		w := windowStat{name: name, from: from, to: to}
		var ls []time.Duration
		for _, t := range all {
			if t.at < from || t.at >= to || !keep(t.at) || t.txn.skipped {
				continue
			}
			if t.txn.failed {
				w.failed++
				continue
			}
			ls = append(ls, t.txn.latency)
		}
		d := newDist(ls)
		w.txns = d.n
		w.p50, w.p99, w.maxLat = d.p50, d.p99, d.max
		if to > from {
			w.tps = float64(d.n) / (to - from)
		}
		return w
	}
	isSteady := func(at float64) bool {
		sec := int(math.Floor(at))
		return sec >= 0 && sec < duration && steadySec[sec] && !inSwitch(at)
	}
	for _, seg := range segments(steadySec) {
		r.segments = append(r.segments, window(fmt.Sprintf("steady %d–%d s", seg[0], seg[1]-1), float64(seg[0]), float64(seg[1]), isSteady))
	}
	r.steady = window("steady state (all)", 0, float64(duration), isSteady)
	r.steady.tps = 0
	if n := countTrue(steadySec); n > 0 {
		r.steady.tps = float64(r.steady.txns) / float64(n)
	}
	for i, rot := range r.rotations {
		r.switches = append(r.switches, window(fmt.Sprintf("rotation %d: %.2f–%.2f s", i+1, rot, rot+switchWindow), rot, rot+switchWindow, func(float64) bool { return true }))
	}
	return r
}

// steadySeconds marks the seconds of a run of duration seconds that count as steady state
// around rotations at the nominal seconds.
func steadySeconds(duration int, nominal []int) []bool {
	steady := make([]bool, duration)
	for sec := warmupSeconds; sec < duration-tailSeconds; sec++ {
		steady[sec] = true
	}
	for _, rot := range nominal {
		for sec := rot - quietBefore; sec < rot+quietAfter; sec++ {
			if sec >= 0 && sec < duration {
				steady[sec] = false
			}
		}
	}
	return steady
}

// segments returns the contiguous runs of true in marks as [first, end) pairs.
func segments(marks []bool) [][2]int {
	var out [][2]int
	for i := 0; i < len(marks); {
		if !marks[i] {
			i++
			continue
		}
		j := i
		for j < len(marks) && marks[j] {
			j++
		}
		out = append(out, [2]int{i, j})
		i = j
	}
	return out
}

func countTrue(xs []bool) int {
	n := 0
	for _, x := range xs {
		if x {
			n++
		}
	}
	return n
}

// around returns the steady segment that ends last before at and the one that starts first
// after it; ok is false for a missing one.
func (r loadResult) around(at float64) (before, after windowStat, okBefore, okAfter bool) {
	for _, s := range r.segments {
		if s.to <= at {
			before, okBefore = s, true
		}
	}
	for _, s := range slices.Backward(r.segments) {
		if s.from >= at {
			after, okAfter = s, true
		}
	}
	return before, after, okBefore, okAfter
}
