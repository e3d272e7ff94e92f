package benchkit

import "slices"

// Sample is one run of one benchmark target: the client tool's parsed
// result R and the proxy's CPU time per transaction.
type Sample[R any] struct {
	Round  int
	Res    R
	CPUUS  float64 // proxy CPU µs per transaction; valid if HasCPU
	HasCPU bool
	Err    error // the run does not count if set
}

// Results holds every run of a benchmark by cell C (mode, client count,
// target, …); it is used by one goroutine.
type Results[C comparable, R any] struct {
	Runs map[C][]Sample[R]
	tps  func(R) float64
}

// NewResults returns empty results whose runs' throughput tps reads.
func NewResults[C comparable, R any](tps func(R) float64) *Results[C, R] {
	return &Results[C, R]{Runs: make(map[C][]Sample[R]), tps: tps}
}

// Add records one run of c.
func (r *Results[C, R]) Add(c C, s Sample[R]) { r.Runs[c] = append(r.Runs[c], s) }

// Summary is the medians of a cell's successful runs.
type Summary struct {
	OK, Total int
	TPS       float64 // valid if OK > 0
	CPUUS     float64 // valid if HasCPU
	HasCPU    bool
}

// Summarize returns the medians of c's successful runs.
func (r *Results[C, R]) Summarize(c C) Summary {
	var tps, cpu []float64
	s := Summary{Total: len(r.Runs[c])}
	for _, run := range r.Runs[c] {
		if run.Err != nil {
			continue
		}
		tps = append(tps, r.tps(run.Res))
		if run.HasCPU {
			cpu = append(cpu, run.CPUUS)
		}
	}
	s.OK = len(tps)
	if s.OK > 0 {
		s.TPS = Median(tps)
	}
	if len(cpu) > 0 {
		s.CPUUS, s.HasCPU = Median(cpu), true
	}
	return s
}

// RoundTPS returns the throughput of the successful run of c in round, if
// there is one.
func (r *Results[C, R]) RoundTPS(c C, round int) (float64, bool) {
	for _, s := range r.Runs[c] {
		if s.Round == round && s.Err == nil {
			return r.tps(s.Res), true
		}
	}
	return 0, false
}

// Median returns the median of xs (the mean of the middle two for an even
// count); xs must not be empty. xs is not modified.
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
