package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/logging"
)

// DeadlinePolicy says what happens to sessions still on a replaced
// credential when the drain deadline passes.
type DeadlinePolicy int

const (
	// DeadlineKeep leaves them on the old credential and warns.
	DeadlineKeep DeadlinePolicy = iota
	// DeadlineClose closes them with CodeDrainDeadline.
	DeadlineClose
)

// ParseDeadlinePolicy parses "keep" or "close".
func ParseDeadlinePolicy(s string) (DeadlinePolicy, error) {
	switch s {
	case "", "keep":
		return DeadlineKeep, nil
	case "close":
		return DeadlineClose, nil
	}
	return 0, fmt.Errorf("unknown on_deadline policy %q", s)
}

func (p DeadlinePolicy) String() string {
	if p == DeadlineClose {
		return "close"
	}
	return "keep"
}

// BackendOptions configures a Backend.
type BackendOptions struct {
	Name     string
	Protocol string
	// Listen and Upstream are shown in the status.
	Listen, Upstream string
	// Store supplies the backend credential. Required.
	Store *creds.Store
	// MaxClientConns caps admitted client sessions.
	MaxClientConns int
	// MaxHandshakes and MaxHandshakesPerSource bound the client
	// connections that have not authenticated yet, in total and per source
	// address (see HandshakeGate; 0 per source: unlimited). MaxHandshakes
	// defaults to 256.
	MaxHandshakes          int
	MaxHandshakesPerSource int
	// MaxIdle and IdleTimeout configure the pool.
	MaxIdle     int
	IdleTimeout time.Duration
	// ConnectTimeout bounds how long a client waits for a backend connection.
	ConnectTimeout time.Duration
	// DrainDeadline and OnDeadline govern sessions that cannot move.
	DrainDeadline time.Duration
	OnDeadline    DeadlinePolicy
	// DrainConnectionBudget bounds the backend connections a drain holds
	// beyond one per session (pre-dialed spares and switches in flight;
	// default 8).
	DrainConnectionBudget int
	// WarmParallelism bounds concurrent switches while draining (default
	// 4, at most DrainConnectionBudget).
	WarmParallelism int
	// MemoryBudget bounds the memory sessions hold in partially received
	// client messages; it is shared by every backend of a process (nil:
	// unlimited).
	MemoryBudget *MemoryBudget
	Logger       *zap.Logger
	Metrics      *Metrics
}

// Backend is the protocol-neutral runtime of one configured backend: its
// credential store, sessions, pool of idle connections, drain controller and
// client limit. The protocol package owns the listener's connections and
// reports into it.
type Backend struct {
	opts BackendOptions
	log  *zap.Logger
	m    *backendMetrics

	// Store supplies credentials; Pool holds idle backend connections;
	// Sessions lists live client sessions; Conns counts backend connections
	// by generation.
	Store    *creds.Store
	Pool     *Pool
	Sessions *Registry
	Conns    ConnCounter

	clients    atomic.Int64
	handshakes *HandshakeGate
	throttle   *AuthThrottle
	listening  atomic.Bool
	listen     atomic.Pointer[string]
	// target is the generation sessions are moved to. It trails
	// Store.Current while a new generation's pool is warmed.
	target atomic.Pointer[creds.Generation]

	drain *drainer

	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	unsub    func()
}

// NewBackend returns a Backend; call Start before serving clients.
func NewBackend(opts BackendOptions) *Backend {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.WarmParallelism <= 0 {
		opts.WarmParallelism = 4
	}
	if opts.DrainConnectionBudget <= 0 {
		opts.DrainConnectionBudget = 8
	}
	opts.WarmParallelism = min(opts.WarmParallelism, opts.DrainConnectionBudget)
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.MaxHandshakes <= 0 {
		opts.MaxHandshakes = 256
	}
	b := &Backend{
		opts:  opts,
		log:   opts.Logger,
		Store: opts.Store,
		Pool:  NewPool(opts.MaxIdle, opts.IdleTimeout),
	}
	b.listen.Store(&opts.Listen)
	b.m = opts.Metrics.forBackend(opts.Name)
	b.handshakes = NewHandshakeGate(opts.MaxHandshakes, opts.MaxHandshakesPerSource)
	b.handshakes.evicted = b.m.handshakesEvicted.Inc
	b.throttle = NewAuthThrottle()
	b.drain = newDrainer(b)
	b.Sessions = NewRegistry(b.drain.progress)
	opts.Metrics.track(b)
	return b
}

// Name returns the backend's configured name.
func (b *Backend) Name() string { return b.opts.Name }

// Protocol returns "postgres" or "mysql".
func (b *Backend) Protocol() string { return b.opts.Protocol }

// Logger returns the backend's logger.
func (b *Backend) Logger() *zap.Logger { return b.log }

// ConnectTimeout is how long a client may wait for a backend connection.
func (b *Backend) ConnectTimeout() time.Duration { return b.opts.ConnectTimeout }

// Memory returns the budget for partially received client messages (nil:
// unlimited).
func (b *Backend) Memory() *MemoryBudget { return b.opts.MemoryBudget }

// Start begins the drain controller and the pool reaper. The Store must
// have been started.
func (b *Backend) Start(ctx context.Context) {
	ctx, b.cancel = context.WithCancel(ctx)
	if cur := b.Store.Current(); cur != nil {
		b.target.Store(cur)
	}
	b.unsub = b.Store.Subscribe(func(*creds.Generation) { b.drain.kickNow() })
	b.wg.Add(2)
	go func() { defer b.wg.Done(); b.drain.run(ctx) }()
	go func() { defer b.wg.Done(); b.reap(ctx) }()
}

// Stop ends background work, waits for it and closes idle connections.
// Idempotent.
func (b *Backend) Stop() {
	b.stopOnce.Do(func() {
		if b.unsub != nil {
			b.unsub()
		}
		if b.cancel != nil {
			b.cancel()
		}
		b.wg.Wait()
		b.Pool.Close()
	})
}

func (b *Backend) reap(ctx context.Context) {
	interval := min(b.opts.IdleTimeout/2, 10*time.Second)
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			b.Pool.Reap(now)
		}
	}
}

// SetListening records whether the listener is accepting, and its address.
func (b *Backend) SetListening(addr string, up bool) {
	if addr != "" {
		b.listen.Store(&addr)
	}
	b.listening.Store(up)
}

// ListenAddr returns the listener's address.
func (b *Backend) ListenAddr() string { return *b.listen.Load() }

// Admit reserves a client slot; it reports false past MaxClientConns.
// Every true must be matched by Release.
func (b *Backend) Admit() bool {
	if b.clients.Add(1) > int64(b.opts.MaxClientConns) {
		b.clients.Add(-1)
		return false
	}
	return true
}

// Release returns a slot taken by Admit.
func (b *Backend) Release() { b.clients.Add(-1) }

// Target returns the generation sessions should be on.
func (b *Backend) Target() *creds.Generation { return b.target.Load() }

// Newest returns the newest of gen, the drain's target and the store's
// current generation. A switch aims at it: while the credential alternates
// faster than a drain completes, an older generation's credential may
// already have been changed again, and a session moved there would have to
// move once more.
func (b *Backend) Newest(gen *creds.Generation) *creds.Generation {
	for _, g := range []*creds.Generation{b.target.Load(), b.Store.Current()} {
		if g != nil && (gen == nil || g.N > gen.N) {
			gen = g
		}
	}
	return gen
}

// Behind reports whether a session on generation gen should switch.
func (b *Backend) Behind(gen uint64) bool {
	t := b.target.Load()
	return t != nil && gen < t.N
}

// Nudge tells the drain controller that s reached a safe point while on an
// older generation. It never blocks.
func (b *Backend) Nudge(s Session) { b.drain.nudge(s) }

// CountClientError counts an error reported to a client.
func (b *Backend) CountClientError(code Code) {
	b.m.clientErrors.WithLabelValues(code.String()).Inc()
}

// CountClientAuthFailure counts a failed local login.
func (b *Backend) CountClientAuthFailure() { b.m.clientAuthFailures.Inc() }

// CountSwitch counts the outcome of a switch attempt (busy is not
// counted) and, for a completed one, how long it took; a completed switch
// may complete the drain.
func (b *Backend) CountSwitch(r SwitchResult, took time.Duration) {
	if r == SwitchDone && took > 0 {
		b.m.switchSeconds.Observe(took.Seconds())
	}
	if r != SwitchBusy {
		b.m.switches.WithLabelValues(r.String()).Inc()
		b.drain.record(r)
	}
	if r == SwitchDone {
		b.drain.progress()
	}
}

// DialFunc logs in a new backend connection with the credential of gen.
type DialFunc func(ctx context.Context, gen *creds.Generation) (PooledConn, error)

// Connect returns a backend connection for key: an idle one of the current
// generation from the pool, or a new one from dial. When the database
// rejects the credential (creds.ErrRejected) it refreshes the source and
// retries with the fresh credential, then with the fallback; every failure
// is retried with backoff until ctx ends, so clients wait through a
// rotation instead of failing, except errors marked ErrPermanent, which are
// returned at once. The error returned is the last dial error.
func (b *Backend) Connect(ctx context.Context, key string, dial DialFunc) (PooledConn, error) {
	backoff := 50 * time.Millisecond
	var lastErr error
	for {
		gen := b.Store.Current()
		if gen == nil {
			lastErr = errors.New("no backend credential available")
		} else {
			if c := b.Pool.Get(key, gen.N); c != nil {
				return c, nil
			}
			c, err := dial(ctx, gen)
			if err == nil {
				return c, nil
			}
			lastErr = err
			if errors.Is(err, ErrUpstreamAuthRefused) {
				// An impostor on the upstream address, or a server set up
				// for weaker authentication than upstream_auth allows.
				b.log.Error("broke off a backend login: the database asked for an authentication upstream_auth does not allow; the password was not sent",
					logging.Audit(), zap.String("username", gen.Cred.Username), zap.Uint64("generation", gen.N), zap.Error(err))
			}
			if errors.Is(err, ErrPermanent) {
				return nil, err
			}
			if errors.Is(err, creds.ErrRejected) {
				b.m.backendAuthFailures.Inc()
				b.log.Warn("backend rejected credential", zap.String("username", gen.Cred.Username),
					zap.Uint64("generation", gen.N), zap.Error(err))
				if adopted, _ := b.Store.Refresh(ctx); adopted {
					continue
				}
				if fb := b.Store.Fallback(); fb != nil && fb.N != gen.N {
					if c, err := dial(ctx, fb); err == nil {
						return c, nil
					} else if errors.Is(err, creds.ErrRejected) {
						b.m.backendAuthFailures.Inc()
					}
				}
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return nil, lastErr
		case <-t.C:
		}
		backoff = min(backoff*2, time.Second)
	}
}

// Drain moves every session behind the current generation now, without
// waiting for the warm pool, and returns the outcomes by result.
func (b *Backend) Drain(ctx context.Context) map[string]int {
	return b.drain.drainNow(ctx)
}

// Ready reports whether the listener is up and the credential verified,
// with the reasons when not.
func (b *Backend) Ready() (bool, []string) {
	var reasons []string
	if !b.listening.Load() {
		reasons = append(reasons, "listener is not accepting connections")
	}
	cur := b.Store.Current()
	switch {
	case cur == nil:
		reasons = append(reasons, "no credential")
	case !cur.Verified:
		reasons = append(reasons, "credential not verified by a test login")
	}
	return len(reasons) == 0, reasons
}

// Degraded reports what is wrong while the backend still serves with its
// current credential: the credential source cannot be read or a changed
// credential cannot be adopted.
func (b *Backend) Degraded() []string {
	st := b.Store.Status()
	if !st.Failing {
		return nil
	}
	reason := "credential source failing: " + st.LastError
	if st.Current != nil && !st.Current.Expiry.IsZero() {
		reason += fmt.Sprintf(" (current credential expires %s)", st.Current.Expiry.UTC().Format(time.RFC3339))
	}
	return []string{reason}
}

// BackendStatus is one backend in /v1/status.
type BackendStatus struct {
	Name       string       `json:"name"`
	Protocol   string       `json:"protocol"`
	Listen     string       `json:"listen"`
	Upstream   string       `json:"upstream"`
	Ready      bool         `json:"ready"`
	NotReady   []string     `json:"not_ready,omitempty"`
	Degraded   []string     `json:"degraded,omitempty"`
	Credential creds.Status `json:"credential"`
	// TargetGeneration is the generation sessions are being moved to.
	TargetGeneration   uint64           `json:"target_generation"`
	Sessions           SessionCounts    `json:"sessions"`
	BackendConnections ConnectionCounts `json:"backend_connections"`
	PinnedSessions     []SessionInfo    `json:"pinned_sessions"`
	// SwitchFailing lists sessions whose last switch attempts failed, with
	// the stage, the error and when they try again.
	SwitchFailing []SessionInfo `json:"switch_failing"`
	Drain         DrainStatus   `json:"drain"`
}

// SessionCounts counts client sessions.
type SessionCounts struct {
	Total        int            `json:"total"`
	ByGeneration map[string]int `json:"by_generation"`
}

// ConnectionCounts counts backend connections.
type ConnectionCounts struct {
	Total        int            `json:"total"`
	Idle         int            `json:"idle"`
	ByGeneration map[string]int `json:"by_generation"`
}

// Status returns a snapshot for the admin API.
func (b *Backend) Status() BackendStatus {
	ready, reasons := b.Ready()
	st := BackendStatus{
		Name:       b.opts.Name,
		Protocol:   b.opts.Protocol,
		Listen:     b.ListenAddr(),
		Upstream:   b.opts.Upstream,
		Ready:      ready,
		NotReady:   reasons,
		Degraded:   b.Degraded(),
		Credential: b.Store.Status(),
		Sessions:   SessionCounts{ByGeneration: map[string]int{}},
		BackendConnections: ConnectionCounts{
			ByGeneration: map[string]int{},
			Idle:         b.Pool.Len(),
		},
		PinnedSessions: []SessionInfo{},
		SwitchFailing:  []SessionInfo{},
		Drain:          b.drain.status(),
	}
	if t := b.Target(); t != nil {
		st.TargetGeneration = t.N
	}
	for _, s := range b.Sessions.Snapshot() {
		info := s.Info()
		st.Sessions.Total++
		st.Sessions.ByGeneration[strconv.FormatUint(info.Generation, 10)]++
		if info.PinReason != "" {
			st.PinnedSessions = append(st.PinnedSessions, info)
		}
		if info.SwitchFailure != nil {
			st.SwitchFailing = append(st.SwitchFailing, info)
		}
	}
	for gen, n := range b.Conns.Snapshot() {
		st.BackendConnections.ByGeneration[strconv.FormatUint(gen, 10)] = n
		st.BackendConnections.Total += n
	}
	return st
}

// DrainOverdue reports whether the current drain is past its deadline and
// still incomplete.
func (b *Backend) DrainOverdue() bool { return b.drain.overdue() }
