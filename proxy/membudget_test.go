package proxy

import (
	"errors"
	"testing"
	"time"
)

// waiting returns how many waits are registered with m.
func (m *MemoryBudget) waiting() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.waiters)
}

// TestMemoryBudget: takes succeed while the budget has room; a Take that
// does not fit waits until memory is given back, or until its quit
// channel closes, or past the wait bound with CodeOutOfMemory; a nil
// budget is unlimited.
func TestMemoryBudget(t *testing.T) {
	m := NewMemoryBudget(100, time.Minute, nil)
	if !m.TryTake(60) || m.TryTake(41) || !m.TryTake(40) || m.Used() != 100 {
		t.Fatalf("takes up to the limit: used %d", m.Used())
	}

	done := make(chan error, 1)
	go func() { done <- m.Take(30, nil) }()
	for m.waiting() == 0 {
		time.Sleep(time.Millisecond) // until the Take registered its wait
	}
	m.Release(20) // not enough: it waits again
	for m.waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Take returned with 20 bytes free: %v", err)
	default:
	}
	m.Release(40)
	if err := <-done; err != nil || m.Used() != 70 {
		t.Fatalf("Take after a release: %v, used %d", err, m.Used())
	}

	quit := make(chan struct{})
	go func() { done <- m.Take(50, quit) }()
	for m.waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(quit)
	if err := <-done; !ErrMemoryWaitStopped(err) || m.waiting() != 0 || m.Used() != 70 {
		t.Fatalf("Take after quit: %v, %d waiting, used %d", err, m.waiting(), m.Used())
	}

	short := NewMemoryBudget(10, 20*time.Millisecond, nil)
	short.TryTake(10)
	err := short.Take(1, nil)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeOutOfMemory || short.waiting() != 0 {
		t.Fatalf("Take past the wait bound: %v", err)
	}
	short.Release(10)
	if short.Used() != 0 {
		t.Fatalf("used after release: %d", short.Used())
	}

	var unlimited *MemoryBudget
	if !unlimited.TryTake(1<<40) || unlimited.Take(1<<40, nil) != nil || unlimited.Used() != 0 || unlimited.Limit() != 0 {
		t.Fatal("a nil budget is not unlimited")
	}
	unlimited.Release(1 << 40)
}
