package proxy

import (
	"math"
	"sync"
	"time"
)

// Login throttling: failures are scored per source address and per user
// name; a score decays by half every throttleHalfLife. Past a scope's free
// failures, every login attempt in that scope waits before the proxy
// answers it, doubling from throttleBase per further failure up to
// throttleMax. The wait comes before the password is checked, for right and
// wrong passwords alike: a wait only on failures would tell a guesser that
// an attempt failed as soon as no quick answer came, and it could give up
// and try again at once.
const (
	throttleHalfLife   = time.Minute
	throttleBase       = 100 * time.Millisecond
	throttleMax        = 2 * time.Second
	throttleFreeSource = 5
	throttleFreeUser   = 10
	// throttleMaxKeys bounds the entries kept per scope; guessing with
	// random user names cannot grow the table without bound.
	throttleMaxKeys = 10000
)

// ThrottleScope names what a login delay was keyed on.
type ThrottleScope string

// The scopes of a login delay.
const (
	ThrottleSource ThrottleScope = "source"
	ThrottleUser   ThrottleScope = "user"
)

// AuthThrottle slows down password guessing. Safe for concurrent use.
type AuthThrottle struct {
	mu     sync.Mutex
	source map[string]*failScore
	user   map[string]*failScore
	now    func() time.Time
}

type failScore struct {
	score float64
	at    time.Time
}

// NewAuthThrottle returns an empty throttle.
func NewAuthThrottle() *AuthThrottle {
	return &AuthThrottle{source: make(map[string]*failScore), user: make(map[string]*failScore), now: time.Now}
}

// decayed returns f's score at now.
func (f *failScore) decayed(now time.Time) float64 {
	if f == nil {
		return 0
	}
	return f.score * math.Exp2(-float64(now.Sub(f.at))/float64(throttleHalfLife))
}

// delayFor returns the wait for a score: none up to free failures, then
// throttleBase doubling per failure. The score is rounded so that failures
// in quick succession count whole despite the decay.
func delayFor(score float64, free int) time.Duration {
	over := math.Round(score) - float64(free) + 1
	if over < 1 {
		return 0
	}
	d := float64(throttleBase) * math.Exp2(over-1)
	return time.Duration(min(d, float64(throttleMax)))
}

// Delay returns how long a login attempt by user from source must wait
// before it is answered, and the scope that imposes the longer wait.
func (t *AuthThrottle) Delay(source, user string) (time.Duration, ThrottleScope) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	ds := delayFor(t.source[source].decayed(now), throttleFreeSource)
	du := delayFor(t.user[user].decayed(now), throttleFreeUser)
	if du > ds {
		return du, ThrottleUser
	}
	return ds, ThrottleSource
}

// Failure records a failed login by user from source. It reports which
// scopes started to delay logins with this failure (nil when none did), so
// that the caller logs once when throttling engages.
func (t *AuthThrottle) Failure(source, user string) (engaged []ThrottleScope) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if add(t.source, source, now, throttleFreeSource) {
		engaged = append(engaged, ThrottleSource)
	}
	if add(t.user, user, now, throttleFreeUser) {
		engaged = append(engaged, ThrottleUser)
	}
	return engaged
}

// add adds a failure to key's score and reports whether the key went from
// no delay to a delay.
func add(m map[string]*failScore, key string, now time.Time, free int) bool {
	f := m[key]
	if f == nil {
		if len(m) >= throttleMaxKeys {
			prune(m, now)
		}
		f = &failScore{}
		m[key] = f
	}
	before := f.decayed(now)
	f.score, f.at = before+1, now
	return delayFor(before, free) == 0 && delayFor(f.score, free) > 0
}

// prune drops entries whose score has decayed below one failure, and if
// that is not enough the lowest half.
func prune(m map[string]*failScore, now time.Time) {
	for k, f := range m {
		if f.decayed(now) < 1 {
			delete(m, k)
		}
	}
	if len(m) < throttleMaxKeys {
		return
	}
	var sum float64
	for _, f := range m {
		sum += f.decayed(now)
	}
	mean := sum / float64(len(m))
	for k, f := range m {
		if f.decayed(now) <= mean {
			delete(m, k)
		}
	}
}
