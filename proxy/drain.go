package proxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
)

// DrainStatus describes the latest drain: moving sessions to a newly
// adopted generation.
type DrainStatus struct {
	// Generation is the generation sessions are moved to; 0 before the first drain.
	Generation uint64    `json:"generation"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	// Deadline is when OnDeadline applies to sessions still behind.
	Deadline   time.Time `json:"deadline,omitzero"`
	OnDeadline string    `json:"on_deadline"`
	// Pending counts sessions still on an older generation.
	Pending     int       `json:"pending"`
	Complete    bool      `json:"complete"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	// Results counts switch outcomes in this drain by result.
	Results map[string]int `json:"results"`
}

// drainer moves sessions to the newest generation: it warms a few spare
// connections, advances the target, switches idle sessions, retries, and
// applies the deadline. One goroutine (run) owns epochs; drainNow and run
// serialize on epochMu.
//
// A drain holds at most DrainConnectionBudget backend connections beyond
// one per session: up to spares pre-dialed connections warmed before the
// first switch, and one per switch in flight (a switch takes a token from
// turns for its warm-up, switch and the closing of the old connection, and
// gives back a spare it warmed but did not use). Sessions are moved as a
// pipeline, never by dialing a spare for every session first: a database
// whose max_connections is sized to its load has no room for twice the
// sessions.
type drainer struct {
	b      *Backend
	kick   chan struct{}
	nudges chan Session
	// turns holds a token per switch in flight; spares is how many
	// connections a drain warms before its first switch.
	turns  chan struct{}
	spares int

	epochMu sync.Mutex // held while an epoch or an admin drain runs

	mu       sync.Mutex // guards st, deadlineAt and warned
	st       DrainStatus
	warned   map[uint64]bool
	deadline *time.Timer
	expired  chan struct{}
}

func newDrainer(b *Backend) *drainer {
	parallel := min(b.opts.WarmParallelism, max(b.opts.DrainConnectionBudget/2, 1))
	return &drainer{
		b:       b,
		turns:   make(chan struct{}, parallel),
		spares:  b.opts.DrainConnectionBudget - parallel,
		kick:    make(chan struct{}, 1),
		nudges:  make(chan Session, 1024),
		warned:  make(map[uint64]bool),
		expired: make(chan struct{}, 1),
		st:      DrainStatus{Complete: true, OnDeadline: b.opts.OnDeadline.String(), Results: map[string]int{}},
	}
}

func (d *drainer) kickNow() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *drainer) nudge(s Session) {
	select {
	case d.nudges <- s:
	default: // the retry ticker catches it
	}
}

// progress tells the controller that a session ended or moved, so it can
// notice promptly that the drain is complete.
func (d *drainer) progress() {
	d.mu.Lock()
	pending := !d.st.Complete
	d.mu.Unlock()
	if pending {
		d.kickNow()
	}
}

func (d *drainer) run(ctx context.Context) {
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	defer func() {
		d.mu.Lock()
		if d.deadline != nil {
			d.deadline.Stop()
		}
		d.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
			cur := d.b.Store.Current()
			if t := d.b.Target(); cur != nil && (t == nil || cur.N > t.N) {
				d.epoch(ctx, cur)
			}
			d.check()
		case s := <-d.nudges:
			if d.b.Behind(s.Generation()) {
				d.switchNudged(ctx, s)
			}
			d.check()
		case <-retry.C:
			if !d.complete() {
				d.switchAll(ctx, d.b.Target(), false)
				d.check()
			}
		case <-d.expired:
			d.applyDeadline()
			d.check()
		}
	}
}

func (d *drainer) complete() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.Complete
}

// epoch warms connections of gen for every session behind it, then makes
// gen the target and switches every session that is at a safe point.
func (d *drainer) epoch(ctx context.Context, gen *creds.Generation) {
	d.epochMu.Lock()
	defer d.epochMu.Unlock()
	b := d.b
	b.Pool.CloseBelow(gen.N)
	start := time.Now()
	warmed := d.warm(ctx, gen)
	d.begin(gen)
	b.log.Info("draining sessions to new credential generation",
		zap.Uint64("generation", gen.N), zap.String("username", gen.Cred.Username),
		zap.Int("warmed", warmed), zap.Duration("warm_time", time.Since(start)))
	d.switchAll(ctx, gen, true)
}

func (d *drainer) begin(gen *creds.Generation) {
	d.b.target.Store(gen)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.deadline != nil {
		d.deadline.Stop()
	}
	now := time.Now()
	deadline := d.b.opts.DrainDeadline
	// A leased credential (Vault dynamic secrets) is revoked when its lease
	// ends: sessions must have moved before that.
	if fb := d.b.Store.Fallback(); fb != nil && fb.Cred.LeaseID != "" && !fb.Cred.Expiry.IsZero() {
		left := time.Until(fb.Cred.Expiry)
		if byLease := left - max(left/10, time.Second); byLease < deadline {
			deadline = max(byLease, 0)
		}
	}
	d.st = DrainStatus{
		Generation: gen.N,
		StartedAt:  now,
		Deadline:   now.Add(deadline),
		OnDeadline: d.b.opts.OnDeadline.String(),
		Results:    map[string]int{},
	}
	d.warned = make(map[uint64]bool)
	d.deadline = time.AfterFunc(deadline, func() {
		select {
		case d.expired <- struct{}{}:
		default:
		}
	})
}

// warm pre-dials up to d.spares connections of gen for the first sessions
// behind it that can switch, so that the first switches cost no login
// (the switches after them warm their own). It returns how many
// connections it added.
func (d *drainer) warm(ctx context.Context, gen *creds.Generation) int {
	b := d.b
	var todo []Session
	for _, s := range b.Sessions.Behind(gen.N) {
		if len(todo) == d.spares {
			break
		}
		if s.Info().PinReason == "" {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.ConnectTimeout)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	added := 0
	for _, s := range todo {
		wg.Add(1)
		go func(s Session) {
			defer wg.Done()
			defer b.Recover(s, "warm")
			if d.warmOne(ctx, s, gen) {
				mu.Lock()
				added++
				mu.Unlock()
			}
		}(s)
	}
	wg.Wait()
	return added
}

// warmOne dials a spare connection of gen for s into the pool. While the
// database has no connection slot free it backs off and tries again, until
// ctx ends.
func (d *drainer) warmOne(ctx context.Context, s Session, gen *creds.Generation) bool {
	b := d.b
	backoff := 50 * time.Millisecond
	for {
		if cur := b.Store.Current(); cur != nil && cur.N > gen.N {
			return false // superseded while warming: its credential may be gone
		}
		c, err := s.DialSpare(ctx, gen)
		if err == nil {
			if !b.Pool.PutWarm(c, gen.N) {
				c.Close()
				return false
			}
			return true
		}
		if !errors.Is(err, ErrDatabaseFull) {
			b.log.Warn("warming a backend connection failed", zap.Uint64("generation", gen.N), zap.Error(err))
			return false
		}
		b.log.Debug("database full while warming a backend connection; backing off",
			zap.Uint64("generation", gen.N), zap.Duration("backoff", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// switchAll asks every session behind gen to switch. With all false,
// sessions whose last attempt found them pinned are left to switch at their
// own next safe point.
func (d *drainer) switchAll(ctx context.Context, gen *creds.Generation, all bool) {
	if gen == nil {
		return
	}
	var wg sync.WaitGroup
	for _, s := range d.b.Sessions.Behind(gen.N) {
		if !all && s.Info().PinReason != "" {
			continue
		}
		if !d.takeTurn(ctx) {
			break
		}
		wg.Add(1)
		go func(s Session) {
			defer wg.Done()
			defer d.endTurn()
			defer d.b.Recover(s, "drain")
			d.switchOne(ctx, s, gen)
		}(s)
	}
	wg.Wait()
}

// takeTurn waits for a switch token (see drainer); false when ctx ended.
func (d *drainer) takeTurn(ctx context.Context) bool {
	select {
	case d.turns <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (d *drainer) endTurn() { <-d.turns }

// switchNudged switches a session that reached a safe point on its own,
// on the controller's goroutine: a panic ends that session, not the
// controller.
func (d *drainer) switchNudged(ctx context.Context, s Session) {
	if !d.takeTurn(ctx) {
		return
	}
	defer d.endTurn()
	defer d.b.Recover(s, "drain")
	d.switchOne(ctx, s, d.b.Target())
}

// switchOne moves s to gen, holding a turn: it warms a connection for s
// first unless a spare is there (so the switch itself costs no login), and
// closes that spare again if s did not take it.
func (d *drainer) switchOne(ctx context.Context, s Session, gen *creds.Generation) SwitchResult {
	if gen == nil {
		return SwitchDone
	}
	ctx, cancel := context.WithTimeout(ctx, d.b.opts.ConnectTimeout)
	defer cancel()
	key := s.PoolKey()
	info := s.Info()
	warmed := false
	if info.PinReason == "" && info.State == StateIdle && !d.b.Pool.Has(key, gen.N) {
		warmed = d.warmOne(ctx, s, gen)
	}
	res, _ := s.Switch(ctx, gen) // the session logs its own failures
	if warmed && res != SwitchDone {
		if c := d.b.Pool.TakeWarm(key, gen.N); c != nil {
			c.Close()
		}
	}
	return res
}

// record counts a switch outcome in the current drain's status.
func (d *drainer) record(res SwitchResult) {
	if res == SwitchBusy {
		return
	}
	d.mu.Lock()
	d.st.Results[res.String()]++
	d.mu.Unlock()
}

// check marks the drain complete once no session is behind, and retires
// the fallback credential then.
func (d *drainer) check() {
	t := d.b.Target()
	if t == nil {
		return
	}
	pending := len(d.b.Sessions.Behind(t.N))
	d.mu.Lock()
	d.st.Pending = pending
	done := pending == 0 && !d.st.Complete && d.st.Generation == t.N
	if done {
		d.st.Complete = true
		d.st.CompletedAt = time.Now()
		if d.deadline != nil {
			d.deadline.Stop()
		}
	}
	started := d.st.StartedAt
	d.mu.Unlock()
	if done {
		d.b.Pool.CloseBelow(t.N)
		d.b.Store.RetireFallback(t.N - 1)
		d.b.log.Info("drain complete", zap.Uint64("generation", t.N), zap.Duration("took", time.Since(started)))
	}
}

// applyDeadline handles sessions still behind when the deadline passes.
func (d *drainer) applyDeadline() {
	t := d.b.Target()
	if t == nil {
		return
	}
	for _, s := range d.b.Sessions.Behind(t.N) {
		d.deadlineOne(s)
	}
}

// deadlineOne applies the deadline policy to one session behind the target.
func (d *drainer) deadlineOne(s Session) {
	defer d.b.Recover(s, "deadline")
	info := s.Info()
	fields := []zap.Field{zap.Uint64("session", info.ID), zap.Uint64("generation", info.Generation),
		zap.String("state", info.State), zap.String("pin_reason", info.PinReason)}
	switch d.b.opts.OnDeadline {
	case DeadlineClose:
		d.b.log.Warn("closing session still on a replaced credential after the drain deadline", fields...)
		s.Terminate(Errorf(CodeDrainDeadline, nil,
			"terminating connection: it held state that could not be moved to the rotated database credential before the drain deadline"))
		d.b.CountSwitch(SwitchFailed, 0)
		d.mu.Lock()
		d.st.Results["deadline_closed"]++
		d.mu.Unlock()
	default:
		d.mu.Lock()
		first := !d.warned[info.ID]
		d.warned[info.ID] = true
		d.mu.Unlock()
		if first {
			d.b.log.Warn("session stays on a replaced credential past the drain deadline (on_deadline: keep)", fields...)
		}
	}
}

// drainNow makes the current generation the target at once and tries to
// switch every session behind it.
func (d *drainer) drainNow(ctx context.Context) map[string]int {
	d.epochMu.Lock()
	defer d.epochMu.Unlock()
	cur := d.b.Store.Current()
	if cur == nil {
		return map[string]int{}
	}
	if t := d.b.Target(); t == nil || cur.N > t.N {
		d.b.Pool.CloseBelow(cur.N)
		d.begin(cur)
	}
	out := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range d.b.Sessions.Behind(cur.N) {
		if !d.takeTurn(ctx) {
			break
		}
		wg.Add(1)
		go func(s Session) {
			defer wg.Done()
			defer d.endTurn()
			defer d.b.Recover(s, "drain")
			res := d.switchOne(ctx, s, cur)
			mu.Lock()
			out[res.String()]++
			mu.Unlock()
		}(s)
	}
	wg.Wait()
	d.check()
	return out
}

func (d *drainer) status() DrainStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.st
	st.Results = make(map[string]int, len(d.st.Results))
	for k, v := range d.st.Results {
		st.Results[k] = v
	}
	return st
}

func (d *drainer) overdue() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.st.Complete && !d.st.Deadline.IsZero() && time.Now().After(d.st.Deadline)
}
