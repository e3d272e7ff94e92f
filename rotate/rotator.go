package rotate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/logging"
	"github.com/credswap/credswap/proxy"
)

// ErrBusy is returned when a rotation of the backend is already running.
var ErrBusy = errors.New("a rotation of this backend is already running")

// Metrics counts rotations by backend, strategy and result.
type Metrics struct {
	rotations    *prometheus.CounterVec
	sessionsLeft *prometheus.GaugeVec
}

// NewMetrics registers credswap_rotations_total with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "credswap", Name: "rotations_total",
		Help: "Finished rotations by strategy and result (succeeded, failed, rolled_back).",
	}, []string{"backend", "strategy", "result"}),
		sessionsLeft: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "credswap", Name: "rotation_retired_user_sessions",
			Help: "Sessions of the user the last rotation retired that other clients (other proxies) still held when its fleet_deadline passed; they were left running. 0 when every client had moved.",
		}, []string{"backend"}),
	}
	if reg != nil {
		reg.MustRegister(m.rotations, m.sessionsLeft)
	}
	return m
}

// Options configures a Rotator.
type Options struct {
	// Backend is the running backend whose credential rotates.
	Backend *proxy.Backend
	// Config is the backend's rotation block (with defaults applied).
	Config config.Rotation
	// Credential is the backend's credential block: where to publish.
	Credential config.Credential
	// DB changes logins in the database.
	DB Database
	// Admin supplies the admin credential; nil lets a single-user
	// rotation change its own password with the current credential.
	Admin creds.Source
	// Vault is the client for vault-kv publishing and vault-static.
	Vault *creds.Vault
	// DrainDeadline bounds the drain phase (the backend's drain_deadline).
	DrainDeadline time.Duration
	Logger        *zap.Logger
	Metrics       *Metrics
	// AfterPhase, if set, runs after each phase is journaled. It exists
	// for crash-recovery tests (fault injection) and is otherwise nil.
	AfterPhase func(phase string)
}

// Status is the rotation part of a backend's /v1/status.
type Status struct {
	Strategy string   `json:"strategy"`
	Running  *Record  `json:"running,omitempty"`
	Last     *Record  `json:"last,omitempty"`
	Schedule Schedule `json:"schedule"`
}

// Schedule is the state of periodic rotation.
type Schedule struct {
	Enabled  bool      `json:"enabled"`
	Interval string    `json:"interval"`
	Next     time.Time `json:"next,omitzero"`
}

// Rotator runs the rotations of one backend. Safe for concurrent use.
type Rotator struct {
	o   Options
	log *zap.Logger
	pub publisher

	mu       sync.Mutex
	j        *journal
	running  *Record
	pend     *pending
	done     chan struct{} // closed when the running rotation ends
	schedOn  bool
	interval time.Duration
	next     time.Time
	kick     chan struct{}

	ctx    context.Context // the Rotator's lifetime, from Start to Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens the journal and returns a Rotator; Start resumes an
// interrupted rotation and starts the schedule.
func New(o Options) (*Rotator, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	path := o.Config.Journal
	if path == "" {
		path = "credswap-" + o.Backend.Name() + ".rotation.json"
	}
	if _, ok := o.DB.(MySQL); ok {
		if err := checkMySQLAlphabet(o.Config.Password.Alphabet); err != nil {
			return nil, err
		}
		if o.Admin == nil && o.Config.Strategy != "vault-static" {
			return nil, errors.New("rotation on MySQL and MariaDB needs an admin_credential (changing accounts needs the CREATE USER privilege)")
		}
	}
	j, err := openJournal(path)
	if err != nil {
		return nil, err
	}
	// Every rotation line is an audit record: never sampled away.
	r := &Rotator{o: o, log: o.Logger.With(zap.String("backend", o.Backend.Name()), logging.Audit()), j: j,
		schedOn: o.Config.Schedule.Enabled, interval: o.Config.Schedule.Interval.D(), kick: make(chan struct{}, 1)}
	switch o.Config.Publish.To {
	case "file":
		r.pub = filePublisher{path: o.Credential.Path}
	case "vault-kv":
		if o.Vault == nil {
			return nil, errors.New("publish to vault-kv needs the vault block")
		}
		r.pub = vaultPublisher{v: o.Vault, mount: o.Credential.Mount, path: o.Credential.Path,
			userKey: o.Credential.UsernameKey, passwordKey: o.Credential.PasswordKey}
	default:
		r.pub = nopPublisher{}
	}
	return r, nil
}

// Start resumes a rotation the journal shows as interrupted and runs the
// schedule until Stop.
func (r *Rotator) Start(ctx context.Context) {
	ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.mu.Lock()
	r.ctx = ctx
	if cur := r.j.data.Current; cur != nil && cur.State == StateRunning {
		rec := cur.clone()
		rec.Trigger = "resume"
		r.running, r.pend = &rec, r.j.data.Pending
		r.done = make(chan struct{})
		r.log.Warn("resuming a rotation interrupted by a restart", zap.String("rotation", rec.ID),
			zap.Strings("phases_done", phasesDone(&rec)))
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.resume(ctx) }()
	}
	r.armLocked()
	r.mu.Unlock()
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.scheduleLoop(ctx) }()
}

// Stop ends the schedule and stops a running rotation at its next
// blocking step, leaving it in the journal to resume after a restart.
// Idempotent.
func (r *Rotator) Stop() {
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
}

func phasesDone(rec *Record) []string {
	var out []string
	for _, p := range rec.Phases {
		if p.Outcome == "ok" {
			out = append(out, p.Name)
		}
	}
	return out
}

// Rotate starts a rotation and returns its record at once, or ErrBusy.
// With wait it returns when the rotation ended (or ctx did).
func (r *Rotator) Rotate(ctx context.Context, trigger string, wait bool) (Record, error) {
	r.mu.Lock()
	if r.running != nil {
		id := r.running.ID
		r.mu.Unlock()
		return Record{ID: id}, ErrBusy
	}
	var b [6]byte
	rand.Read(b[:])
	rec := &Record{
		ID:        r.o.Backend.Name() + "-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:]),
		Backend:   r.o.Backend.Name(),
		Strategy:  r.o.Config.Strategy,
		Trigger:   trigger,
		State:     StateRunning,
		StartedAt: time.Now().UTC(),
	}
	r.running, r.pend = rec, nil
	r.done = make(chan struct{})
	done := r.done
	r.j.data.Current, r.j.data.Pending = rec, nil
	if err := r.j.save(); err != nil {
		r.running = nil
		close(done)
		r.mu.Unlock()
		return Record{}, err
	}
	snap := rec.clone()
	r.mu.Unlock()
	r.log.Info("rotation started", zap.String("rotation", rec.ID), zap.String("strategy", rec.Strategy), zap.String("trigger", trigger))
	runCtx := r.ctx
	if runCtx == nil {
		runCtx = context.WithoutCancel(ctx)
	}
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.execute(runCtx, nil) }()
	if !wait {
		return snap, nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		return r.Get(snap.ID)
	}
	rec2, _ := r.Get(snap.ID)
	return rec2, nil
}

// Get returns the record of rotation id, running or recent.
func (r *Rotator) Get(id string) (Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running != nil && r.running.ID == id {
		return r.running.clone(), nil
	}
	for i := len(r.j.data.History) - 1; i >= 0; i-- {
		if r.j.data.History[i].ID == id {
			return r.j.data.History[i].clone(), nil
		}
	}
	return Record{}, fmt.Errorf("no rotation %q", id)
}

// Status returns the rotation state for /v1/status.
func (r *Rotator) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{Strategy: r.o.Config.Strategy, Schedule: Schedule{Enabled: r.schedOn, Interval: r.interval.String()}}
	if r.schedOn {
		st.Schedule.Next = r.next
	}
	if r.running != nil {
		c := r.running.clone()
		st.Running = &c
	}
	if n := len(r.j.data.History); n > 0 {
		c := r.j.data.History[n-1].clone()
		st.Last = &c
	}
	return st
}

// SetSchedule turns periodic rotation on or off and changes its interval
// (0 keeps it).
func (r *Rotator) SetSchedule(enabled bool, interval time.Duration) Schedule {
	r.mu.Lock()
	r.schedOn = enabled
	if interval > 0 {
		r.interval = interval
	}
	r.armLocked()
	st := Schedule{Enabled: r.schedOn, Interval: r.interval.String()}
	if r.schedOn {
		st.Next = r.next
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	r.log.Info("rotation schedule changed", zap.Bool("enabled", enabled), zap.Duration("interval", r.interval))
	return st
}

func (r *Rotator) armLocked() {
	if r.schedOn {
		r.next = time.Now().Add(r.interval)
	} else {
		r.next = time.Time{}
	}
}

func (r *Rotator) scheduleLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		r.mu.Lock()
		next := r.next
		r.mu.Unlock()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			continue
		case <-t.C:
		}
		r.mu.Lock()
		due := r.schedOn && !r.next.IsZero() && !time.Now().Before(r.next)
		if due {
			r.armLocked()
		}
		r.mu.Unlock()
		if due {
			if _, err := r.Rotate(ctx, "schedule", false); err != nil && !errors.Is(err, ErrBusy) {
				r.log.Error("scheduled rotation did not start", zap.Error(err))
			}
		}
	}
}
