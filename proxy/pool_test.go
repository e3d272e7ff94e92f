package proxy

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/credswap/credswap/creds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeConn struct {
	gen     uint64
	key     string
	healthy bool
	closed  atomic.Bool
}

func (c *fakeConn) Generation() uint64 { return c.gen }
func (c *fakeConn) PoolKey() string    { return c.key }
func (c *fakeConn) Healthy() bool      { return c.healthy }
func (c *fakeConn) Close() error       { c.closed.Store(true); return nil }

func TestPoolGenerationsAndLimits(t *testing.T) {
	p := NewPool(2, time.Minute)
	a1 := &fakeConn{gen: 1, key: "db", healthy: true}
	a2 := &fakeConn{gen: 2, key: "db", healthy: true}
	other := &fakeConn{gen: 2, key: "other", healthy: true}
	if !p.Put(a1, 1) || !p.Put(a2, 1) {
		t.Fatal("Put refused below max_idle")
	}
	if p.Put(other, 1) {
		t.Fatal("Put accepted beyond max_idle")
	}
	if p.Put(&fakeConn{gen: 1, key: "db"}, 2) {
		t.Fatal("Put accepted a connection older than minGen")
	}
	if got := p.Get("db", 3); got != nil {
		t.Fatalf("Get returned a connection of generation %d for generation 3", got.Generation())
	}
	if got := p.Get("other", 2); got != nil {
		t.Fatal("Get returned a connection for another key")
	}
	if got := p.Get("db", 2); got != a2 {
		t.Fatalf("Get(db, 2) = %v", got)
	}
	if n := p.CloseBelow(2); n != 1 || !a1.closed.Load() {
		t.Fatalf("CloseBelow closed %d", n)
	}
	if p.Len() != 0 {
		t.Fatalf("Len = %d", p.Len())
	}
}

// TestPoolPutAfterCloseBelow is the race of a session returning its
// connection (having read the current generation before a rotation) with
// the drain closing older generations: the late Put must be refused.
func TestPoolPutAfterCloseBelow(t *testing.T) {
	p := NewPool(4, time.Minute)
	p.CloseBelow(3)
	late := &fakeConn{gen: 2, key: "db", healthy: true}
	if p.Put(late, 2) || p.PutWarm(late, 2) {
		t.Fatal("a generation-2 connection entered the pool after CloseBelow(3)")
	}
	if !p.Put(&fakeConn{gen: 3, key: "db", healthy: true}, 2) {
		t.Fatal("a current connection was refused")
	}
	p.CloseBelow(1) // the floor never goes down
	if p.Put(&fakeConn{gen: 2, key: "db", healthy: true}, 1) {
		t.Fatal("the floor went down")
	}
}

func TestPoolSkipsUnhealthyAndReaps(t *testing.T) {
	p := NewPool(1, time.Millisecond)
	sick := &fakeConn{gen: 1, key: "db"}
	p.Put(sick, 1)
	if got := p.Get("db", 1); got != nil || !sick.closed.Load() {
		t.Fatalf("unhealthy connection handed out (%v) or not closed", got)
	}
	old := &fakeConn{gen: 1, key: "db", healthy: true}
	p.Put(old, 1)
	if n := p.Reap(time.Now().Add(time.Second)); n != 1 || !old.closed.Load() {
		t.Fatalf("Reap closed %d", n)
	}
	// Warm connections may exceed max_idle until their grace period ends.
	w1, w2 := &fakeConn{gen: 2, key: "db", healthy: true}, &fakeConn{gen: 2, key: "db", healthy: true}
	p2 := NewPool(1, time.Hour)
	p2.PutWarm(w1, 2)
	p2.PutWarm(w2, 2)
	if p2.Reap(time.Now()) != 0 || p2.Len() != 2 {
		t.Fatal("warm connections trimmed during their grace period")
	}
	if p2.Reap(time.Now().Add(warmGrace+time.Second)) != 1 || p2.Len() != 1 {
		t.Fatal("warm connections not trimmed to max_idle after the grace period")
	}
	p2.Close()
	if p2.Put(&fakeConn{gen: 2, key: "db"}, 2) {
		t.Fatal("Put after Close")
	}
}

type fakeSession struct {
	id  uint64
	gen atomic.Uint64
}

func (s *fakeSession) ID() uint64         { return s.id }
func (s *fakeSession) Generation() uint64 { return s.gen.Load() }
func (s *fakeSession) PoolKey() string    { return "db" }
func (s *fakeSession) Info() SessionInfo  { return SessionInfo{ID: s.id, Generation: s.gen.Load()} }
func (s *fakeSession) Terminate(*Error)   {}
func (s *fakeSession) DialSpare(context.Context, *creds.Generation) (PooledConn, error) {
	return &fakeConn{key: "db", healthy: true}, nil
}
func (s *fakeSession) Switch(_ context.Context, g *creds.Generation) (SwitchResult, error) {
	s.gen.Store(g.N)
	return SwitchDone, nil
}

func TestRegistry(t *testing.T) {
	r := NewRegistry(nil)
	select {
	case <-r.Empty():
	default:
		t.Fatal("a new registry is not empty")
	}
	a, b := &fakeSession{id: 1}, &fakeSession{id: 2}
	a.gen.Store(1)
	b.gen.Store(2)
	r.Add(a)
	r.Add(b)
	empty := r.Empty()
	select {
	case <-empty:
		t.Fatal("Empty closed with sessions registered")
	default:
	}
	if got := r.Behind(2); len(got) != 1 || got[0] != a {
		t.Fatalf("Behind(2) = %v", got)
	}
	r.Remove(a)
	r.Remove(b)
	select {
	case <-empty:
	case <-time.After(time.Second):
		t.Fatal("Empty not closed after the last Remove")
	}
}

func TestErrorCodes(t *testing.T) {
	for c := CodeInternal; c <= CodeFeatureNotSupported; c++ {
		if c.String() == "" || c.String()[0] == 'c' && c.String() != "client_auth_failed" {
			t.Errorf("code %d has no name: %q", c, c.String())
		}
	}
	e := AsError(context.Canceled)
	if e.Code != CodeInternal || e.Msg != "internal proxy error" {
		t.Fatalf("AsError(non-proxy error) = %+v", e)
	}
	if p, err := ParseDeadlinePolicy("close"); err != nil || p != DeadlineClose {
		t.Fatal("ParseDeadlinePolicy(close)")
	}
	if _, err := ParseDeadlinePolicy("later"); err == nil {
		t.Fatal("ParseDeadlinePolicy accepted an unknown policy")
	}
}
