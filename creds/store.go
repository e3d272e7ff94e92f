package creds

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// StoreOptions configures a Store.
type StoreOptions struct {
	// Source is where credentials come from. Required.
	Source Source
	// Verify performs a test login before a credential is adopted. Nil
	// adopts without a test login (tests, check); such generations count as
	// verified.
	Verify VerifyFunc
	// RefreshInterval re-reads the source this often; 0 disables polling
	// (a Watcher source still announces changes).
	RefreshInterval time.Duration
	// Logger receives adoption events; nil discards them.
	Logger *zap.Logger
	// MinBackoff and MaxBackoff bound the retry delay after a failed read or
	// adoption (defaults 250ms and 30s).
	MinBackoff, MaxBackoff time.Duration
}

// errNotStarted is returned by Refresh before Start succeeded.
var errNotStarted = errors.New("creds: store not started")

// Store holds the current credential of one backend and its generation.
//
// Start begins watching the source; Stop ends it. Current, Fallback and
// Status are safe for concurrent use and never block on I/O. At most one
// refresh (read, test login, adoption) runs at a time, whoever asked for it,
// so generations are adopted and announced to subscribers strictly in order.
type Store struct {
	// Set by NewStore, read-only afterwards (ioTimeout may be lowered by
	// in-package tests before Start).
	verify                 VerifyFunc
	interval               time.Duration
	log                    *zap.Logger
	minBackoff, maxBackoff time.Duration
	ioTimeout              time.Duration

	// cur and fb are read without a lock; they are written only while mu is
	// held so that Status sees them consistent with the fields below.
	cur, fb atomic.Pointer[Generation]
	// ready is set once Start adopted generation 1 and announced it.
	ready atomic.Bool

	// mu guards the fields below.
	mu          sync.Mutex
	src         Source
	srcEpoch    uint64  // incremented by SetSource; a refresh reads one epoch's source
	flight      *flight // the refresh in progress, if any
	lastRefresh time.Time
	lastErr     string
	lastErrAt   time.Time
	failing     bool
	failures    uint64
	streak      int // consecutive failures; > 0 means a retry is due
	subs        []subscriber
	nextSub     uint64

	// wake (capacity 1) tells the loop that the watcher saw a change;
	// resched (capacity 1) that a Refresh outside the loop changed streak.
	wake, resched chan struct{}

	// life serializes Start, Stop and SetSource and guards the fields below.
	life      sync.Mutex
	state     storeState
	bgCtx     context.Context
	cancel    context.CancelFunc // cancels bgCtx
	loopDone  chan struct{}      // closed when the loop goroutine returned
	watchStop func()             // stops the watcher goroutine and waits; nil if none
}

// storeState is the lifecycle of a Store.
type storeState int

const (
	storeNew storeState = iota
	storeRunning
	storeStopped
)

// subscriber is one Subscribe registration.
type subscriber struct {
	id uint64
	fn func(*Generation)
}

// NewStore returns a Store that has not yet read its source.
func NewStore(opts StoreOptions) *Store {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = defaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = defaultMaxBackoff
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	return &Store{
		verify:     opts.Verify,
		interval:   max(opts.RefreshInterval, 0),
		log:        opts.Logger,
		minBackoff: opts.MinBackoff,
		maxBackoff: opts.MaxBackoff,
		ioTimeout:  defaultIOTimeout,
		src:        opts.Source,
		wake:       make(chan struct{}, 1),
		resched:    make(chan struct{}, 1),
	}
}

// Start reads the source once and adopts the credential as generation 1
// (verified if Verify succeeds; adopted unverified if the database cannot be
// reached or refuses it, since nothing else is available), then watches for
// changes in the background until Stop. It fails only if the source cannot be
// read at all, if ctx ends first, or if the Store was started or stopped
// before.
//
// An unverified generation 1 is retried in the background with backoff: when
// the same credential later passes the test login, Current is replaced by a
// Generation with the same N and Verified set (subscribers are not called
// again); if the source changed meanwhile, the new credential becomes
// generation 2. ctx bounds only this first read and test login; the
// background work lasts until Stop.
func (s *Store) Start(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	switch s.state {
	case storeRunning:
		return errors.New("creds: store already started")
	case storeStopped:
		return errors.New("creds: store stopped")
	}
	s.mu.Lock()
	src := s.src
	s.mu.Unlock()
	if src == nil {
		return errors.New("creds: StoreOptions.Source is nil")
	}

	c, err := s.fetch(ctx, src)
	if err != nil {
		return fmt.Errorf("reading %s source: %w", src.Kind(), err)
	}
	verr := s.verifyCred(ctx, c)
	if verr != nil && ctx.Err() != nil {
		return fmt.Errorf("test login as %s: %w", c.Username, ctx.Err())
	}

	now := time.Now()
	g := &Generation{N: 1, Cred: c, AdoptedAt: now, Verified: verr == nil}
	s.mu.Lock()
	s.cur.Store(g)
	s.lastRefresh = now
	if verr != nil {
		s.recordFailureLocked(fmt.Errorf("test login as %s failed: %w", c.Username, verr), now)
	}
	subs := slices.Clone(s.subs)
	s.mu.Unlock()

	fields := []zap.Field{
		zap.Uint64("generation", 1),
		zap.String("source", c.Source),
		zap.String("username", c.Username),
		zap.String("version", c.Version),
	}
	if verr != nil {
		s.log.Warn("adopted initial credential without a successful test login; retrying",
			append(fields, zap.Error(verr))...)
	} else {
		s.log.Info("adopted initial credential", fields...)
	}
	for _, sub := range subs {
		sub.fn(g)
	}
	s.ready.Store(true)

	// The background lives until Stop, not until ctx ends, but keeps ctx's values.
	s.bgCtx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.loopDone = make(chan struct{})
	go s.loop(s.bgCtx, s.loopDone)
	s.startWatchLocked(src)
	s.state = storeRunning
	return nil
}

// Stop ends background work and waits for it. It is idempotent, and a Store
// cannot be started again after Stop. It waits for a Start in progress and
// must not be called from a Subscribe callback. Current, Status and Refresh
// keep working after Stop; only the background triggers end.
func (s *Store) Stop() {
	s.life.Lock()
	defer s.life.Unlock()
	if s.state == storeRunning {
		if s.watchStop != nil {
			s.watchStop()
			s.watchStop = nil
		}
		s.cancel()
		<-s.loopDone
	}
	s.state = storeStopped
}

// Current returns the adopted generation, or nil before Start succeeded.
// The Generation must not be modified.
func (s *Store) Current() *Generation { return s.cur.Load() }

// Fallback returns the generation before Current until RetireFallback, or nil.
// The Generation must not be modified.
func (s *Store) Fallback() *Generation { return s.fb.Load() }

// RetireFallback forgets the fallback generation if it is older than or
// equal to gen.
//
// If the source is a Retirer, it is then asked (in the background) to
// release every credential but those of generations newer than gen: the
// caller promises that no session uses generation gen or older any more.
func (s *Store) RetireFallback(gen uint64) {
	s.mu.Lock()
	var keep []Credential
	if cur := s.cur.Load(); cur != nil {
		keep = append(keep, cur.Cred)
	}
	if fb := s.fb.Load(); fb != nil && fb.N <= gen {
		s.fb.Store(nil)
		s.log.Info("retired fallback credential", zap.Uint64("generation", fb.N), zap.String("username", fb.Cred.Username))
	} else if fb != nil {
		keep = append(keep, fb.Cred)
	}
	r, ok := s.src.(Retirer)
	s.mu.Unlock()
	s.life.Lock()
	bg := s.bgCtx
	s.life.Unlock()
	if !ok || bg == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(bg, 30*time.Second)
		defer cancel()
		if err := r.Retire(ctx, keep...); err != nil {
			s.log.Warn("releasing retired credentials failed", zap.Error(err))
		}
	}()
}

// Refresh re-reads the source now. If the credential changed it is verified
// and adopted; adopted reports whether a new generation resulted. Concurrent
// calls share one read: a call made while a refresh of the same source is
// running (started by another caller, the watcher, the ticker or a retry)
// waits for it and returns its result, even though that read may have begun
// just before the call; a change it missed is found by the next trigger. A
// failure is also recorded in Status and, while the Store runs, retried in
// the background with backoff. Refresh fails before Start succeeded.
func (s *Store) Refresh(ctx context.Context) (adopted bool, err error) {
	if !s.ready.Load() {
		return false, errNotStarted
	}
	adopted, err = s.refreshShared(ctx)
	poke(s.resched)
	return adopted, err
}

// SetSource replaces the source (configuration reload) and refreshes. The
// old source's watcher is stopped and, while the Store runs, the new one's
// started. Before Start it only replaces the source.
//
// A new FileSource or EnvSource reports new versions even for unchanged
// content (see their Version), so SetSource with such a source adopts a new
// generation after a successful test login.
func (s *Store) SetSource(ctx context.Context, src Source) error {
	if src == nil {
		return errors.New("creds: SetSource with a nil source")
	}
	s.life.Lock()
	if s.watchStop != nil {
		s.watchStop()
		s.watchStop = nil
	}
	s.mu.Lock()
	s.src = src
	s.srcEpoch++
	s.mu.Unlock()
	if s.state == storeRunning {
		s.startWatchLocked(src)
	}
	s.life.Unlock()

	if !s.ready.Load() {
		return nil
	}
	_, err := s.Refresh(ctx)
	return err
}

// Subscribe registers fn to be called with every newly adopted generation,
// including generation 1 if Subscribe is called before Start. fn runs on the
// adopting goroutine after Current was updated, one call at a time and in
// generation order; it must not block, nor call Stop or SetSource. To miss
// nothing, subscribe first and then read Current. The returned func
// unregisters fn and is idempotent; an adoption that was already announcing
// when it is called may still call fn once.
func (s *Store) Subscribe(fn func(*Generation)) (unsubscribe func()) {
	s.mu.Lock()
	s.nextSub++
	id := s.nextSub
	s.subs = append(s.subs, subscriber{id: id, fn: fn})
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.subs = slices.DeleteFunc(s.subs, func(sub subscriber) bool { return sub.id == id })
	}
}

// Status returns a snapshot for the admin API and metrics. It never holds a
// password.
func (s *Store) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		Current:          generationInfo(s.cur.Load()),
		Fallback:         generationInfo(s.fb.Load()),
		LastRefresh:      s.lastRefresh,
		LastError:        s.lastErr,
		LastErrorAt:      s.lastErrAt,
		Failing:          s.failing,
		AdoptionFailures: s.failures,
	}
	if s.src != nil {
		st.Source = s.src.Kind()
	}
	return st
}

// generationInfo describes g without its password; nil for nil.
func generationInfo(g *Generation) *GenerationInfo {
	if g == nil {
		return nil
	}
	return &GenerationInfo{
		Generation: g.N,
		Username:   g.Cred.Username,
		Version:    g.Cred.Version,
		Source:     g.Cred.Source,
		Expiry:     g.Cred.Expiry,
		AdoptedAt:  g.AdoptedAt,
		Verified:   g.Verified,
	}
}

// poke makes a non-blocking send on a channel of capacity 1: a signal that
// is already pending absorbs the new one.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
