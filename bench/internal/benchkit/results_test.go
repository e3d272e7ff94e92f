package benchkit

import (
	"errors"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestResults(t *testing.T) {
	r := NewResults[string](func(tps float64) float64 { return tps })
	r.Add("a", Sample[float64]{Round: 1, Res: 100, CPUUS: 30, HasCPU: true})
	r.Add("a", Sample[float64]{Round: 2, Res: 300, Err: errors.New("failed")})
	r.Add("a", Sample[float64]{Round: 3, Res: 200, CPUUS: 50, HasCPU: true})
	r.Add("a", Sample[float64]{Round: 4, Res: 400})
	s := r.Summarize("a")
	if s.OK != 3 || s.Total != 4 || s.TPS != 200 || !s.HasCPU || s.CPUUS != 40 {
		t.Errorf("Summarize = %+v", s)
	}
	if tps, ok := r.RoundTPS("a", 3); !ok || tps != 200 {
		t.Errorf("RoundTPS(3) = %v %v", tps, ok)
	}
	if _, ok := r.RoundTPS("a", 2); ok {
		t.Error("RoundTPS counted a failed run")
	}
	if s := r.Summarize("none"); s.OK != 0 || s.Total != 0 || s.HasCPU {
		t.Errorf("Summarize of an empty cell = %+v", s)
	}
}
