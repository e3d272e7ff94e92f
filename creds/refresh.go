package creds

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
)

// flight is one refresh in progress; callers that arrive while it runs wait
// on done and share its result.
type flight struct {
	done    chan struct{} // closed when the fields below are set
	epoch   uint64        // srcEpoch of the source it reads
	adopted bool
	err     error
	// aborted is set when the leader's context ended: the result says
	// nothing about the source, so waiters with a live context retry.
	aborted bool
	waiters int // callers sharing the result, for tests; guarded by Store.mu
}

// loop is the background goroutine started by Start and stopped by Stop
// (through ctx). It refreshes on watcher announcements, on the refresh
// ticker, and on the retry timer while refreshes fail.
func (s *Store) loop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	var tick <-chan time.Time
	if s.interval > 0 {
		t := time.NewTicker(s.interval)
		defer t.Stop()
		tick = t.C
	}
	// Go 1.23 timer semantics: Stop and Reset need no draining.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	s.armRetry(retry) // an unverified generation 1 is due for a retry

	for {
		select {
		case <-ctx.Done():
			return
		case <-s.resched:
			s.armRetry(retry)
			continue
		case <-s.wake:
		case <-tick:
		case <-retry.C:
		}
		// The outcome is recorded in Status and logged by the refresh.
		_, _ = s.refreshShared(ctx)
		if ctx.Err() != nil {
			return
		}
		s.armRetry(retry)
	}
}

// armRetry schedules the next retry after consecutive failures, or cancels
// it when the last refresh succeeded.
func (s *Store) armRetry(retry *time.Timer) {
	s.mu.Lock()
	streak := s.streak
	s.mu.Unlock()
	if streak == 0 {
		retry.Stop()
		return
	}
	d := backoff(streak, s.minBackoff, s.maxBackoff)
	retry.Reset(d)
	s.log.Debug("credential refresh retry scheduled", zap.Int("attempt", streak), zap.Duration("retry_in", d))
}

// startWatchLocked starts a goroutine running src's Watch if src is a
// Watcher, and sets watchStop to stop it. s.life must be held and the Store
// running or starting.
func (s *Store) startWatchLocked(src Source) {
	w, ok := src.(Watcher)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(s.bgCtx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.watch(ctx, w, src.Kind())
	}()
	s.watchStop = func() {
		cancel()
		<-done
	}
}

// watch runs w.Watch until ctx ends, restarting it with backoff if it
// returns early. Meanwhile the refresh ticker is the only trigger.
func (s *Store) watch(ctx context.Context, w Watcher, kind string) {
	changed := func() { poke(s.wake) }
	for attempt := 1; ; attempt++ {
		began := time.Now()
		err := w.Watch(ctx, changed)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > s.maxBackoff {
			attempt = 1 // it had been working: start the backoff over
		}
		d := backoff(attempt, s.minBackoff, s.maxBackoff)
		s.log.Warn("credential source watch ended; restarting",
			zap.String("source", kind), zap.Error(err), zap.Duration("retry_in", d))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// refreshShared runs a refresh, or waits for the one in progress if it reads
// the current source, and returns its result.
func (s *Store) refreshShared(ctx context.Context) (adopted bool, err error) {
	for {
		s.mu.Lock()
		f := s.flight
		if f == nil {
			f = &flight{done: make(chan struct{}), epoch: s.srcEpoch}
			s.flight = f
			src := s.src
			s.mu.Unlock()

			f.adopted, f.err = s.refreshOnce(ctx, src)
			f.aborted = ctx.Err() != nil
			s.mu.Lock()
			s.flight = nil
			s.mu.Unlock()
			close(f.done)
			return f.adopted, f.err
		}
		// A refresh started before SetSource reads the old source: wait
		// for it to end, then run one of our own.
		share := f.epoch == s.srcEpoch
		if share {
			f.waiters++
		}
		s.mu.Unlock()

		select {
		case <-f.done:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		if share && !f.aborted {
			return f.adopted, f.err
		}
	}
}

// refreshOnce reads src and adopts what it finds if it differs from Current
// and passes the test login. Only one runs at a time (see refreshShared).
// Failures are recorded in Status unless ctx ended.
func (s *Store) refreshOnce(ctx context.Context, src Source) (adopted bool, err error) {
	cur := s.cur.Load()
	c, err := s.fetch(ctx, src)
	if err != nil {
		if ctx.Err() != nil {
			return false, err
		}
		err = fmt.Errorf("reading %s source: %w", src.Kind(), err)
		s.recordFailure(err)
		fields := []zap.Field{zap.String("source", src.Kind()), zap.Uint64("generation", cur.N), zap.Error(err)}
		if exp := cur.Cred.Expiry; !exp.IsZero() {
			left := time.Until(exp)
			fields = append(fields, zap.Time("credential_expires", exp), zap.Duration("expires_in", left))
			// The source is unreachable and the credential in use will
			// stop working soon: say so loudly.
			if left < max(2*s.maxBackoff, time.Minute) {
				s.log.Error("cannot read credential source and the current credential expires before the next retries can succeed", fields...)
				return false, err
			}
		}
		s.log.Warn("cannot read credential source; keeping the current credential", fields...)
		return false, err
	}
	now := time.Now()
	s.mu.Lock()
	s.lastRefresh = now
	s.mu.Unlock()

	same := c.Equal(cur.Cred) && c.Version == cur.Cred.Version
	if same && cur.Verified {
		s.mu.Lock()
		s.clearFailureLocked()
		s.mu.Unlock()
		s.log.Debug("credential unchanged", zap.Uint64("generation", cur.N),
			zap.String("username", c.Username), zap.String("version", c.Version))
		return false, nil
	}

	if verr := s.verifyCred(ctx, c); verr != nil {
		if ctx.Err() != nil {
			return false, verr
		}
		err = fmt.Errorf("test login as %s failed: %w", c.Username, verr)
		s.recordFailure(err)
		msg := "test login with new credential failed; keeping the current credential"
		if same {
			msg = "test login with the initial credential failed again"
		}
		s.log.Warn(msg, zap.Uint64("generation", cur.N), zap.String("source", c.Source),
			zap.String("username", c.Username), zap.String("version", c.Version), zap.Error(verr))
		return false, err
	}

	if same {
		// Generation 1, adopted unverified at Start, now passes: replace it
		// by a verified copy with the same number. Generations are
		// immutable, so this is a new value; subscribers already have N.
		g := *cur
		g.Verified = true
		s.mu.Lock()
		s.cur.Store(&g)
		s.clearFailureLocked()
		s.mu.Unlock()
		s.log.Info("initial credential verified", zap.Uint64("generation", g.N),
			zap.String("username", c.Username), zap.String("version", c.Version))
		return false, nil
	}

	g := &Generation{N: cur.N + 1, Cred: c, AdoptedAt: time.Now(), Verified: true}
	s.mu.Lock()
	s.fb.Store(cur)
	s.cur.Store(g)
	s.clearFailureLocked()
	subs := slices.Clone(s.subs)
	s.mu.Unlock()
	s.log.Info("adopted new credential", zap.Uint64("generation", g.N),
		zap.Uint64("previous_generation", cur.N), zap.String("source", c.Source),
		zap.String("username", c.Username), zap.String("version", c.Version))
	for _, sub := range subs {
		sub.fn(g)
	}
	return true, nil
}

// fetch reads src with a timeout and checks the result.
func (s *Store) fetch(ctx context.Context, src Source) (Credential, error) {
	if err := ctx.Err(); err != nil {
		return Credential{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.ioTimeout)
	defer cancel()
	c, err := src.Fetch(ctx)
	if err != nil {
		return Credential{}, err
	}
	if c.IsZero() {
		return Credential{}, errors.New("source returned a credential without a username")
	}
	if c.Source == "" {
		c.Source = src.Kind()
	}
	return c, nil
}

// verifyCred performs the test login with a timeout; nil Verify accepts all.
func (s *Store) verifyCred(ctx context.Context, c Credential) error {
	if s.verify == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.ioTimeout)
	defer cancel()
	return s.verify(ctx, c)
}

// recordFailure notes a failed read or adoption in Status.
func (s *Store) recordFailure(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordFailureLocked(err, time.Now())
}

func (s *Store) recordFailureLocked(err error, at time.Time) {
	s.lastErr = err.Error()
	s.lastErrAt = at
	s.failing = true
	s.failures++
	s.streak++
}

func (s *Store) clearFailureLocked() {
	s.lastErr = ""
	s.lastErrAt = time.Time{}
	s.failing = false
	s.streak = 0
}
