package creds

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fastRetry makes background retries quick.
func fastRetry(opts StoreOptions) StoreOptions {
	opts.MinBackoff, opts.MaxBackoff = time.Millisecond, 10*time.Millisecond
	return opts
}

func TestStoreStart(t *testing.T) {
	src := newTestSource("alice", "pw1")
	v := newTestVerifier()
	s := NewStore(StoreOptions{Source: src, Verify: v.verify})
	if s.Current() != nil || s.Fallback() != nil {
		t.Fatal("generation before Start")
	}
	if _, err := s.Refresh(t.Context()); !errors.Is(err, errNotStarted) {
		t.Fatalf("Refresh before Start: %v", err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if err := s.Start(t.Context()); err == nil {
		t.Fatal("second Start succeeded")
	}

	g := s.Current()
	if g.N != 1 || !g.Verified || g.Cred.Username != "alice" || g.Cred.Source != "test" || g.AdoptedAt.IsZero() {
		t.Fatalf("generation 1 = %+v", g)
	}
	if v.callsFor("alice") != 1 {
		t.Fatalf("verified %d times", v.callsFor("alice"))
	}
	st := s.Status()
	if st.Source != "test" || st.Current.Generation != 1 || st.Current.Username != "alice" || st.Current.Version != "v1" ||
		!st.Current.Verified || st.Fallback != nil || st.Failing || st.LastError != "" || st.LastRefresh.IsZero() {
		t.Fatalf("status %+v", st)
	}

	// An unchanged source adopts nothing and tests nothing.
	adopted, err := s.Refresh(t.Context())
	if adopted || err != nil || s.Current() != g || v.callsFor("alice") != 1 {
		t.Fatalf("Refresh of unchanged source: %v, %v", adopted, err)
	}
}

func TestStoreBoundsIO(t *testing.T) {
	var fetchDeadline, verifyDeadline time.Time
	src := NewStaticSource(Credential{Username: "u", Password: "p"})
	s := NewStore(StoreOptions{
		Source: sourceFunc(func(ctx context.Context) (Credential, error) {
			fetchDeadline, _ = ctx.Deadline()
			return src.Fetch(ctx)
		}),
		Verify: func(ctx context.Context, c Credential) error {
			verifyDeadline, _ = ctx.Deadline()
			return nil
		},
	})
	start := time.Now()
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	defer s.Stop()
	for name, d := range map[string]time.Time{"Fetch": fetchDeadline, "Verify": verifyDeadline} {
		if d.Before(start.Add(defaultIOTimeout)) || d.After(end.Add(defaultIOTimeout)) {
			t.Errorf("%s deadline %v after start, want %v", name, d.Sub(start), defaultIOTimeout)
		}
	}
	if s.Current().Cred.Source != "func" {
		t.Errorf("Source not filled from Kind: %+v", s.Current().Cred)
	}
}

// sourceFunc is a Source of kind "func" that leaves Credential.Source empty.
type sourceFunc func(ctx context.Context) (Credential, error)

func (sourceFunc) Kind() string { return "func" }

func (f sourceFunc) Fetch(ctx context.Context) (Credential, error) {
	c, err := f(ctx)
	c.Source = ""
	return c, err
}

func TestStoreStartFailsWithoutCredential(t *testing.T) {
	src := newTestSource("alice", "pw1")
	src.setErr(errors.New("permission denied"))
	s := NewStore(StoreOptions{Source: src})
	defer s.Stop()
	err := s.Start(t.Context())
	if err == nil || err.Error() != "reading test source: permission denied" {
		t.Fatalf("Start: %v", err)
	}
	if s.Current() != nil {
		t.Fatal("generation after failed Start")
	}
	// Start may be tried again.
	src.setErr(nil)
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("second Start: %v", err)
	}

	if err := NewStore(StoreOptions{}).Start(t.Context()); err == nil {
		t.Fatal("Start without a source succeeded")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := NewStore(StoreOptions{Source: src}).Start(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a canceled context: %v", err)
	}
}

func TestStoreVerifyFailureRetriedUntilAdopted(t *testing.T) {
	src := newTestSource("alice", "pw1")
	v := newTestVerifier()
	s := startStore(t, fastRetry(StoreOptions{Source: src, Verify: v.verify}))
	gens := subscribeChan(t, s)

	v.rejectUser("bob", true)
	src.set("bob", "pw2")
	adopted, err := s.Refresh(t.Context())
	if adopted || !errors.Is(err, ErrRejected) {
		t.Fatalf("Refresh: %v, %v", adopted, err)
	}
	const want = `test login as bob failed: password authentication failed for user "bob": credential rejected by the database`
	if err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
	st := s.Status()
	if !st.Failing || st.LastError != want || st.AdoptionFailures < 1 || st.Current.Generation != 1 || st.Current.Username != "alice" {
		t.Fatalf("status %+v", st)
	}
	if g := s.Current(); g.N != 1 || g.Cred.Username != "alice" {
		t.Fatalf("current changed to %+v", g)
	}

	// Retried in the background, re-reading the source each time.
	fetches := src.fetches.Load()
	waitFor(t, 5*time.Second, "three retries", func() bool { return v.callsFor("bob") >= 4 })
	if src.fetches.Load() <= fetches {
		t.Fatal("retries did not re-read the source")
	}

	v.rejectUser("bob", false)
	g := recvGen(t, gens, 5*time.Second)
	if g.N != 2 || g.Cred.Username != "bob" || !g.Verified {
		t.Fatalf("adopted %+v", g)
	}
	if s.Fallback().N != 1 || s.Fallback().Cred.Username != "alice" {
		t.Fatalf("fallback %+v", s.Fallback())
	}
	st = s.Status()
	if st.Failing || st.LastError != "" || st.Current.Generation != 2 || st.Fallback.Generation != 1 {
		t.Fatalf("status %+v", st)
	}
	// A success stops the retries: adoption failures stay where they are.
	failures := st.AdoptionFailures
	if _, err := s.Refresh(t.Context()); err != nil || s.Status().AdoptionFailures != failures {
		t.Fatalf("Refresh after adoption: %v, failures %d → %d", err, failures, s.Status().AdoptionFailures)
	}
}

func TestStoreUnverifiedGenerationOneBecomesVerified(t *testing.T) {
	src := newTestSource("alice", "pw1")
	v := newTestVerifier()
	v.rejectAll(true)
	s := NewStore(fastRetry(StoreOptions{Source: src, Verify: v.verify}))
	gens := subscribeChan(t, s)
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)

	g1 := s.Current()
	if g1.N != 1 || g1.Verified {
		t.Fatalf("generation 1 = %+v", g1)
	}
	if g := recvGen(t, gens, time.Second); g != g1 {
		t.Fatalf("subscriber got %+v", g)
	}
	st := s.Status()
	if !st.Failing || !strings.HasPrefix(st.LastError, "test login as alice failed: ") || st.AdoptionFailures != 1 || st.Current.Verified {
		t.Fatalf("status %+v", st)
	}
	waitFor(t, 5*time.Second, "retries of the initial credential", func() bool { return v.callsFor("alice") >= 3 })

	v.rejectAll(false)
	waitFor(t, 5*time.Second, "generation 1 verified", func() bool { return s.Current().Verified })
	g := s.Current()
	if g.N != 1 || g == g1 || g.Cred.Password != "pw1" || !g.AdoptedAt.Equal(g1.AdoptedAt) {
		t.Fatalf("verified generation %+v", g)
	}
	if g1.Verified {
		t.Fatal("the adopted Generation value was modified")
	}
	st = s.Status()
	if st.Failing || st.LastError != "" || !st.Current.Verified || st.Fallback != nil {
		t.Fatalf("status %+v", st)
	}
	// No second announcement of generation 1.
	if _, err := s.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-gens:
		t.Fatalf("subscriber called again with %+v", g)
	default:
	}
}

func TestStoreUnverifiedGenerationOneReplacedByChange(t *testing.T) {
	src := newTestSource("alice", "pw1")
	v := newTestVerifier()
	v.rejectUser("alice", true)
	s := startStore(t, fastRetry(StoreOptions{Source: src, Verify: v.verify}))
	gens := subscribeChan(t, s)
	if s.Current().Verified {
		t.Fatal("generation 1 verified")
	}
	src.set("bob", "pw2")
	g := recvGen(t, gens, 5*time.Second)
	if g.N != 2 || g.Cred.Username != "bob" || !g.Verified {
		t.Fatalf("adopted %+v", g)
	}
	if fb := s.Fallback(); fb.N != 1 || fb.Verified {
		t.Fatalf("fallback %+v", fb)
	}
	if st := s.Status(); st.Failing || st.LastError != "" {
		t.Fatalf("status %+v", st)
	}
}

func TestStoreFetchErrorKeepsCurrent(t *testing.T) {
	src := newTestSource("alice", "pw1")
	s := startStore(t, fastRetry(StoreOptions{Source: src}))
	gens := subscribeChan(t, s)

	src.setErr(errors.New("vault sealed"))
	adopted, err := s.Refresh(t.Context())
	if adopted || err == nil || err.Error() != "reading test source: vault sealed" {
		t.Fatalf("Refresh: %v, %v", adopted, err)
	}
	st := s.Status()
	if !st.Failing || st.LastError != "reading test source: vault sealed" || st.AdoptionFailures < 1 || st.Current.Generation != 1 {
		t.Fatalf("status %+v", st)
	}
	waitFor(t, 5*time.Second, "retries", func() bool { return s.Status().AdoptionFailures >= st.AdoptionFailures+2 })

	// The retry re-reads the source, and finds it fixed and changed.
	src.set("alice", "pw2")
	if g := recvGen(t, gens, 5*time.Second); g.N != 2 || g.Cred.Password != "pw2" {
		t.Fatalf("adopted %+v", g)
	}
	waitFor(t, time.Second, "errors cleared", func() bool { return !s.Status().Failing })
}

func TestStoreFailureClearedByUnchangedRefresh(t *testing.T) {
	src := newTestSource("alice", "pw1")
	v := newTestVerifier()
	s := startStore(t, StoreOptions{Source: src, Verify: v.verify, MinBackoff: time.Hour})
	v.rejectUser("bob", true)
	src.set("bob", "pw2")
	if _, err := s.Refresh(t.Context()); err == nil {
		t.Fatal("bob adopted")
	}
	// The source goes back to the current credential (same version).
	src.mu.Lock()
	src.cred = s.Current().Cred
	src.mu.Unlock()
	if adopted, err := s.Refresh(t.Context()); adopted || err != nil {
		t.Fatalf("Refresh: %v, %v", adopted, err)
	}
	if st := s.Status(); st.Failing || st.LastError != "" || st.AdoptionFailures != 1 {
		t.Fatalf("status %+v", st)
	}
}

func TestStoreFallbackAndRetire(t *testing.T) {
	src := newTestSource("alice", "pw1")
	s := startStore(t, StoreOptions{Source: src})
	if s.Fallback() != nil {
		t.Fatal("fallback after Start")
	}
	adopt := func(user, pass string, n uint64) {
		t.Helper()
		src.set(user, pass)
		adopted, err := s.Refresh(t.Context())
		if !adopted || err != nil || s.Current().N != n {
			t.Fatalf("Refresh: %v, %v, current %+v", adopted, err, s.Current())
		}
	}
	adopt("alice", "pw2", 2)
	if fb := s.Fallback(); fb.N != 1 || fb.Cred.Password != "pw1" {
		t.Fatalf("fallback %+v", fb)
	}
	s.RetireFallback(0)
	if s.Fallback() == nil {
		t.Fatal("RetireFallback(0) retired generation 1")
	}
	s.RetireFallback(1)
	if s.Fallback() != nil || s.Status().Fallback != nil {
		t.Fatal("RetireFallback(1) kept generation 1")
	}

	adopt("alice", "pw3", 3)
	adopt("alice", "pw4", 4)
	if fb := s.Fallback(); fb.N != 3 {
		t.Fatalf("fallback %+v", fb)
	}
	s.RetireFallback(2) // older than the fallback: no effect
	if s.Fallback() == nil {
		t.Fatal("RetireFallback(2) retired generation 3")
	}
	s.RetireFallback(10)
	if s.Fallback() != nil {
		t.Fatal("RetireFallback(10) kept generation 3")
	}

	// The same password with a new version is a new generation.
	src.set("alice", "pw4")
	if adopted, _ := s.Refresh(t.Context()); !adopted || s.Current().N != 5 {
		t.Fatalf("new version not adopted: %+v", s.Current())
	}
}

func TestStoreSubscribe(t *testing.T) {
	src := newTestSource("alice", "pw0")
	s := NewStore(StoreOptions{Source: src})
	var mu sync.Mutex
	var got []uint64
	unsubscribe := s.Subscribe(func(g *Generation) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, g.N)
	})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()

	// Adoptions race with refreshes that find no change and with other
	// subscribers coming and going.
	const generations = 20
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = s.Refresh(t.Context())
				un := s.Subscribe(func(*Generation) {})
				un()
				un() // idempotent
			}
		})
	}
	for i := range generations {
		src.set("alice", "pw"+string(rune('a'+i)))
		if _, err := s.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()

	unsubscribe()
	src.set("alice", "after")
	if adopted, _ := s.Refresh(t.Context()); !adopted {
		t.Fatal("not adopted")
	}

	mu.Lock()
	defer mu.Unlock()
	last := s.Current().N - 1
	if uint64(len(got)) != last {
		t.Fatalf("subscriber got %d generations, want %d: %v", len(got), last, got)
	}
	for i, n := range got {
		if n != uint64(i+1) {
			t.Fatalf("generations out of order or repeated: %v", got)
		}
	}
}

func TestStoreRefreshSingleflight(t *testing.T) {
	src := newTestSource("alice", "pw1")
	v := newTestVerifier()
	s := startStore(t, StoreOptions{Source: src, Verify: v.verify})
	gens := subscribeChan(t, s)
	<-src.entered // drain Start's Fetch

	src.set("alice", "pw2")
	release := src.hold()
	defer release()
	before := src.fetches.Load()

	const callers = 8
	type result struct {
		adopted bool
		err     error
	}
	results := make(chan result, callers)
	refresh := func() {
		adopted, err := s.Refresh(t.Context())
		results <- result{adopted, err}
	}
	go refresh()
	select {
	case <-src.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("first Refresh did not fetch")
	}
	for range callers - 1 {
		go refresh()
	}
	waitFor(t, 5*time.Second, "callers joining the refresh", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.flight != nil && s.flight.waiters == callers-1
	})
	release()

	for range callers {
		select {
		case r := <-results:
			if !r.adopted || r.err != nil {
				t.Fatalf("Refresh = %v, %v; every caller shares the adoption", r.adopted, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Refresh did not return")
		}
	}
	if n := src.fetches.Load() - before; n != 1 {
		t.Fatalf("%d fetches for %d concurrent refreshes", n, callers)
	}
	if v.callsFor("alice") != 2 || s.Current().N != 2 {
		t.Fatalf("verified %d times, generation %d", v.callsFor("alice"), s.Current().N)
	}
	recvGen(t, gens, time.Second)
	select {
	case g := <-gens:
		t.Fatalf("second announcement %+v", g)
	default:
	}
}

func TestStoreRefreshWaiterOutlivesCanceledLeader(t *testing.T) {
	src := newTestSource("alice", "pw1")
	s := startStore(t, StoreOptions{Source: src})
	<-src.entered
	src.set("alice", "pw2")
	release := src.hold()
	defer release()

	leaderCtx, cancelLeader := context.WithCancel(t.Context())
	leader := make(chan error, 1)
	go func() {
		_, err := s.Refresh(leaderCtx)
		leader <- err
	}()
	<-src.entered
	follower := make(chan bool, 1)
	go func() {
		adopted, err := s.Refresh(t.Context())
		follower <- adopted && err == nil
	}()
	waitFor(t, 5*time.Second, "the follower joining", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.flight != nil && s.flight.waiters == 1
	})
	cancelLeader()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v", err)
	}
	<-src.entered // the follower runs its own refresh
	release()
	if !<-follower {
		t.Fatal("follower did not adopt after the leader gave up")
	}
	if st := s.Status(); st.AdoptionFailures != 0 || st.Failing {
		t.Fatalf("a canceled refresh counted as a failure: %+v", st)
	}
}

func TestStoreRefreshInterval(t *testing.T) {
	src := newTestSource("alice", "pw1")
	s := startStore(t, StoreOptions{Source: src, RefreshInterval: 5 * time.Millisecond})
	gens := subscribeChan(t, s)
	src.set("alice", "pw2")
	if g := recvGen(t, gens, 5*time.Second); g.N != 2 || g.Cred.Password != "pw2" {
		t.Fatalf("adopted %+v", g)
	}
}

// watchSource is a testSource that is also a Watcher a test can trigger.
type watchSource struct {
	*testSource
	mu      sync.Mutex
	changed func() // of the running Watch, nil if none
	running chan bool
}

func newWatchSource(user, pass string) *watchSource {
	return &watchSource{testSource: newTestSource(user, pass), running: make(chan bool, 4)}
}

func (w *watchSource) Watch(ctx context.Context, changed func()) error {
	w.mu.Lock()
	w.changed = changed
	w.mu.Unlock()
	w.running <- true
	<-ctx.Done()
	w.mu.Lock()
	w.changed = nil
	w.mu.Unlock()
	w.running <- false
	return nil
}

func (w *watchSource) trigger() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.changed != nil {
		w.changed()
	}
}

func TestStoreWatcherAndSetSource(t *testing.T) {
	a := newWatchSource("alice", "pw1")
	s := startStore(t, StoreOptions{Source: a})
	gens := subscribeChan(t, s)
	if !<-a.running {
		t.Fatal("watch not started")
	}
	a.set("alice", "pw2")
	a.trigger()
	if g := recvGen(t, gens, 5*time.Second); g.N != 2 {
		t.Fatalf("adopted %+v", g)
	}

	b := newWatchSource("bob", "pw3")
	if err := s.SetSource(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if <-a.running {
		t.Fatal("old watch not stopped")
	}
	if !<-b.running {
		t.Fatal("new watch not started")
	}
	if g := recvGen(t, gens, time.Second); g.N != 3 || g.Cred.Username != "bob" || s.Status().Source != "test" {
		t.Fatalf("adopted %+v", g)
	}
	b.set("bob", "pw4")
	b.trigger()
	if g := recvGen(t, gens, 5*time.Second); g.N != 4 || g.Cred.Password != "pw4" {
		t.Fatalf("adopted %+v", g)
	}

	s.Stop()
	if <-b.running {
		t.Fatal("watch not stopped by Stop")
	}
	// Refresh still works after Stop; SetSource with nil does not.
	b.set("bob", "pw5")
	if adopted, err := s.Refresh(t.Context()); !adopted || err != nil {
		t.Fatalf("Refresh after Stop: %v, %v", adopted, err)
	}
	if err := s.SetSource(t.Context(), nil); err == nil {
		t.Fatal("SetSource(nil) succeeded")
	}
}

func TestStoreSetSourceBeforeStart(t *testing.T) {
	s := NewStore(StoreOptions{Source: newTestSource("alice", "pw1")})
	if err := s.SetSource(t.Context(), NewStaticSource(Credential{Username: "bob", Password: "pw"})); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if g := s.Current(); g.Cred.Username != "bob" || g.Cred.Source != "static" {
		t.Fatalf("generation 1 = %+v", g)
	}
}

func TestStoreSetSourceDuringRefresh(t *testing.T) {
	a := newTestSource("alice", "pw1")
	s := startStore(t, StoreOptions{Source: a})
	<-a.entered
	a.set("alice", "pw2")
	release := a.hold()
	defer release()
	first := make(chan error, 1)
	go func() {
		_, err := s.Refresh(t.Context())
		first <- err
	}()
	<-a.entered

	// SetSource must not return the result of the refresh of the old source.
	setDone := make(chan error, 1)
	go func() {
		setDone <- s.SetSource(t.Context(), NewStaticSource(Credential{Username: "bob", Password: "pw"}))
	}()
	waitFor(t, 5*time.Second, "SetSource swapping the source", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.srcEpoch == 1
	})
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-setDone; err != nil {
		t.Fatal(err)
	}
	if g := s.Current(); g.N != 3 || g.Cred.Username != "bob" {
		t.Fatalf("current %+v", g)
	}
}

func TestStoreStopIdempotent(t *testing.T) {
	s := NewStore(StoreOptions{Source: newWatchSource("alice", "pw1"), RefreshInterval: time.Millisecond})
	s.Stop() // before Start
	if err := s.Start(t.Context()); err == nil {
		t.Fatal("Start after Stop succeeded")
	}

	s = NewStore(StoreOptions{Source: newWatchSource("alice", "pw1"), RefreshInterval: time.Millisecond})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(s.Stop)
	}
	wg.Wait()
	s.Stop()
	if s.Current() == nil {
		t.Fatal("Stop forgot the credential")
	}
	// goleak in TestMain proves the goroutines are gone.
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, time.Second
	for n := 1; n < 100; n++ {
		want := min(lo<<min(n-1, 20), hi)
		for range 20 {
			d := backoff(n, lo, hi)
			if d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}
