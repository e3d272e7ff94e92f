package creds

import (
	"math/rand/v2"
	"time"
)

// Defaults of StoreOptions.
const (
	defaultMinBackoff = 250 * time.Millisecond
	defaultMaxBackoff = 30 * time.Second
	// defaultIOTimeout bounds each Fetch and each Verify.
	defaultIOTimeout = 10 * time.Second
)

// backoff returns the delay before retry number n (n >= 1): min doubled for
// every earlier failure, capped at max, with the upper half randomized so that
// many proxies sharing one secret store do not retry in lockstep.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if half := d / 2; half > 0 {
		d = half + rand.N(half+1)
	}
	return max(d, time.Millisecond)
}
