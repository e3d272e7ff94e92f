//go:build linux

package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the nearest-rank method:
// the smallest value such that at least p% of the values are less than or equal to it. sorted
// must be sorted ascending and not empty.
func percentile[T int64 | float64 | time.Duration](sorted []T, p float64) T {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// dist summarizes a sample of durations.
type dist struct {
	n                  int
	p50, p90, p99, max time.Duration
	mean               time.Duration
}

// newDist sorts a copy of xs and computes its summary; an empty xs gives n == 0.
func newDist(xs []time.Duration) dist {
	s := slices.Clone(xs)
	slices.Sort(s)
	d := dist{n: len(s)}
	if len(s) == 0 {
		return d
	}
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	d.p50 = percentile(s, 50)
	d.p90 = percentile(s, 90)
	d.p99 = percentile(s, 99)
	d.max = s[len(s)-1]
	d.mean = sum / time.Duration(len(s))
	return d
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
