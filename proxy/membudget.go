package proxy

import (
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
)

// MemoryBudget bounds the memory that the client sessions of a process,
// over all its backends, hold in client messages that have not arrived
// whole and that the relay must read whole before it forwards them
// (PostgreSQL Query and Parse, a MySQL command's first frame or a
// prepared statement's text; everything else streams through). Such a
// message's buffer grows as its bytes arrive, never ahead of them; every
// byte of it beyond the pooled relay buffer a session uses anyway is taken
// from the budget, and given back once the message has been forwarded or
// the session ends.
//
// A session that finds the budget used up stops reading from its client
// (backpressure) until other sessions give memory back. One that waits
// longer than the budget's wait bound is ended with CodeOutOfMemory. The
// first session to wait after the budget had room again is logged, once.
//
// A nil *MemoryBudget is unlimited. Safe for concurrent use.
type MemoryBudget struct {
	limit int
	wait  time.Duration
	log   *zap.Logger

	mu      sync.Mutex
	used    int
	waiters map[*func()]struct{}
	// short is set once a session had to wait, and cleared when memory
	// given back finds nobody waiting: it limits the log to one line per
	// shortage.
	short bool
}

// NewMemoryBudget returns a budget of limit bytes (limit > 0) whose
// sessions wait at most wait for memory.
func NewMemoryBudget(limit int, wait time.Duration, log *zap.Logger) *MemoryBudget {
	if log == nil {
		log = zap.NewNop()
	}
	return &MemoryBudget{limit: limit, wait: wait, log: log, waiters: map[*func()]struct{}{}}
}

// errMemoryWaitStopped is Take's error when its quit channel closed.
var errMemoryWaitStopped = errors.New("stopped waiting for memory: the session is ending")

// ErrMemoryWaitStopped reports whether err is Take's error for a wait
// that its quit channel ended (the session is ending for another reason).
func ErrMemoryWaitStopped(err error) bool { return errors.Is(err, errMemoryWaitStopped) }

// TryTake takes n bytes if the budget has them now.
func (m *MemoryBudget) TryTake(n int) bool {
	ok, _ := m.take(n, nil)
	return ok
}

// take takes n bytes if the budget has them; otherwise, with notify, it
// registers notify to be called once memory is given back, and returns
// the key to unregister it with.
func (m *MemoryBudget) take(n int, notify func()) (bool, *func()) {
	if m == nil || n <= 0 {
		return true, nil
	}
	m.mu.Lock()
	if m.used+n <= m.limit {
		m.used += n
		m.mu.Unlock()
		return true, nil
	}
	var key *func()
	if notify != nil {
		key = &notify
		m.waiters[key] = struct{}{}
	}
	first := !m.short
	m.short = true
	used := m.used
	m.mu.Unlock()
	if first {
		m.log.Warn("memory for partially received client messages is used up; sessions that need more stop reading from their clients until other sessions give some back",
			zap.Int("limit_bytes", m.limit), zap.Int("used_bytes", used), zap.Int("wanted_bytes", n),
			zap.Duration("max_wait", m.wait))
	}
	return false, key
}

// Take takes n bytes, waiting while the budget does not have them. It
// gives up when quit is closed (ErrMemoryWaitStopped) or after the
// budget's wait bound, with a *Error of CodeOutOfMemory for the client.
func (m *MemoryBudget) Take(n int, quit <-chan struct{}) error {
	wake := make(chan struct{}, 1)
	notify := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	var timer *time.Timer
	for {
		ok, key := m.take(n, notify)
		if ok {
			if timer != nil {
				timer.Stop()
			}
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(m.wait)
		}
		select {
		case <-wake:
			continue
		case <-quit:
			m.forget(key)
			timer.Stop()
			return errMemoryWaitStopped
		case <-timer.C:
			m.forget(key)
			return Errorf(CodeOutOfMemory, nil,
				"out of memory: the proxy's memory for receiving large messages stayed in use by other sessions for %s", m.wait)
		}
	}
}

// forget unregisters a waiter that stopped waiting.
func (m *MemoryBudget) forget(key *func()) {
	if key == nil {
		return
	}
	m.mu.Lock()
	delete(m.waiters, key)
	m.mu.Unlock()
}

// Release gives back n bytes taken before, and wakes every session
// waiting for memory to try again.
func (m *MemoryBudget) Release(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.mu.Lock()
	m.used -= n
	if m.used < 0 {
		m.used = 0
	}
	var wake []func()
	for key := range m.waiters {
		wake = append(wake, *key)
		delete(m.waiters, key)
	}
	if len(wake) == 0 {
		m.short = false
	}
	m.mu.Unlock()
	for _, f := range wake {
		f()
	}
}

// Used returns the bytes taken now.
func (m *MemoryBudget) Used() int {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

// Limit returns the budget's size in bytes (0: unlimited).
func (m *MemoryBudget) Limit() int {
	if m == nil {
		return 0
	}
	return m.limit
}
