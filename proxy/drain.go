package proxy

import (
	"context"
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

// drainer moves sessions to the newest generation: it warms the pool,
// advances the target, switches idle sessions, retries, and applies the
// deadline. One goroutine (run) owns epochs; drainNow and run serialize
// on epochMu.
type drainer struct {
	b      *Backend
	kick   chan struct{}
	nudges chan Session

	epochMu sync.Mutex // held while an epoch or an admin drain runs

	mu       sync.Mutex // guards st, deadlineAt and warned
	st       DrainStatus
	warned   map[uint64]bool
	deadline *time.Timer
	expired  chan struct{}
}

func newDrainer(b *Backend) *drainer {
	return &drainer{
		b:       b,
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

// warm pre-dials one connection of gen per session behind it, so that a
// switch costs no login. It returns how many connections it added.
func (d *drainer) warm(ctx context.Context, gen *creds.Generation) int {
	b := d.b
	byKey := make(map[string][]Session)
	for _, s := range b.Sessions.Behind(gen.N) {
		byKey[s.PoolKey()] = append(byKey[s.PoolKey()], s)
	}
	if len(byKey) == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.ConnectTimeout)
	defer cancel()
	sem := make(chan struct{}, b.opts.WarmParallelism)
	var wg sync.WaitGroup
	var mu sync.Mutex
	added := 0
	for _, sessions := range byKey {
		for _, s := range sessions {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			wg.Add(1)
			go func(s Session) {
				defer wg.Done()
				defer func() { <-sem }()
				defer b.Recover(s, "warm")
				if cur := b.Store.Current(); cur != nil && cur.N > gen.N {
					return // superseded while warming: its credential may be gone
				}
				c, err := s.DialSpare(ctx, gen)
				if err != nil {
					b.log.Warn("warming a backend connection failed", zap.Uint64("generation", gen.N), zap.Error(err))
					return
				}
				if !b.Pool.PutWarm(c, gen.N) {
					c.Close()
					return
				}
				mu.Lock()
				added++
				mu.Unlock()
			}(s)
		}
	}
	wg.Wait()
	return added
}

// switchAll asks every session behind gen to switch. With all false,
// sessions whose last attempt found them pinned are left to switch at their
// own next safe point.
func (d *drainer) switchAll(ctx context.Context, gen *creds.Generation, all bool) {
	if gen == nil {
		return
	}
	sem := make(chan struct{}, d.b.opts.WarmParallelism)
	var wg sync.WaitGroup
	for _, s := range d.b.Sessions.Behind(gen.N) {
		if !all && s.Info().PinReason != "" {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(s Session) {
			defer wg.Done()
			defer func() { <-sem }()
			defer d.b.Recover(s, "drain")
			d.switchOne(ctx, s, gen)
		}(s)
	}
	wg.Wait()
}

// switchNudged switches a session that reached a safe point on its own,
// on the controller's goroutine: a panic ends that session, not the
// controller.
func (d *drainer) switchNudged(ctx context.Context, s Session) {
	defer d.b.Recover(s, "drain")
	d.switchOne(ctx, s, d.b.Target())
}

func (d *drainer) switchOne(ctx context.Context, s Session, gen *creds.Generation) SwitchResult {
	if gen == nil {
		return SwitchDone
	}
	ctx, cancel := context.WithTimeout(ctx, d.b.opts.ConnectTimeout)
	defer cancel()
	res, _ := s.Switch(ctx, gen) // the session logs its own failures
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
	sem := make(chan struct{}, d.b.opts.WarmParallelism)
	var wg sync.WaitGroup
	for _, s := range d.b.Sessions.Behind(cur.N) {
		sem <- struct{}{}
		wg.Add(1)
		go func(s Session) {
			defer wg.Done()
			defer func() { <-sem }()
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
