package proxytest

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// StateFuzzCases returns how many generated cases a state fuzzer runs and
// the seed of the first: CREDSWAP_STATEFUZZ_CASES (default 240) and
// CREDSWAP_STATEFUZZ_SEED (default 1; "random" picks one). It logs both,
// so a failing run can be repeated.
func StateFuzzCases(t testing.TB) (n int, first uint64) {
	n, first = 240, 1
	if v := os.Getenv("CREDSWAP_STATEFUZZ_CASES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			t.Fatalf("CREDSWAP_STATEFUZZ_CASES=%q is not a count", v)
		}
	}
	switch v := os.Getenv("CREDSWAP_STATEFUZZ_SEED"); v {
	case "":
	case "random":
		first = rand.Uint64() >> 1
	default:
		var err error
		if first, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("CREDSWAP_STATEFUZZ_SEED=%q is not a seed", v)
		}
	}
	t.Logf("%d generated cases from seed %d", n, first)
	return n, first
}
