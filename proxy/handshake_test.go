package proxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// addrConn is a connection from a given address that records Close.
type addrConn struct {
	net.Conn
	addr   net.Addr
	closed atomic.Bool
}

func (c *addrConn) RemoteAddr() net.Addr { return c.addr }
func (c *addrConn) Close() error         { c.closed.Store(true); return nil }

func connFrom(ip string) *addrConn {
	return &addrConn{addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestGate(max, perSource int) (*HandshakeGate, *fakeClock, *atomic.Int64) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	g := NewHandshakeGate(max, perSource)
	g.now = clk.now
	var evicted atomic.Int64
	g.evicted = func() { evicted.Add(1) }
	return g, clk, &evicted
}

func mustEnter(t *testing.T, g *HandshakeGate, c net.Conn) *Handshake {
	t.Helper()
	h, err := g.Enter(c, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatalf("Enter: %v", err)
	}
	return h
}

// TestHandshakeGateEvictsStalledOfSameSource: a source at its limit
// displaces its own oldest stalled handshake, never another source's.
func TestHandshakeGateEvictsStalledOfSameSource(t *testing.T) {
	g, clk, evicted := newTestGate(100, 2)
	other := connFrom("10.0.0.9")
	mustEnter(t, g, other)
	a1, a2 := connFrom("10.0.0.1"), connFrom("10.0.0.1")
	h1 := mustEnter(t, g, a1)
	mustEnter(t, g, a2)
	clk.add(evictAfter)
	a3 := connFrom("10.0.0.1")
	mustEnter(t, g, a3)
	if !a1.closed.Load() || !h1.Evicted() {
		t.Fatal("the oldest handshake of the full source was not closed")
	}
	if a2.closed.Load() || other.closed.Load() {
		t.Fatal("a handshake other than the source's oldest was closed")
	}
	if evicted.Load() != 1 || g.Len() != 3 {
		t.Fatalf("evicted %d, running %d; want 1 and 3", evicted.Load(), g.Len())
	}
	h1.Done() // the evicted connection's handler ends: nothing changes
	if g.Len() != 3 {
		t.Fatalf("running %d after Done of an evicted handshake, want 3", g.Len())
	}
}

// TestHandshakeGateWaitsForYoungHandshakes: a burst from one source beyond
// its limit waits for turns instead of closing handshakes that are still
// young, and each waiter gets in when a turn ends.
func TestHandshakeGateWaitsForYoungHandshakes(t *testing.T) {
	g, _, evicted := newTestGate(100, 2)
	h1 := mustEnter(t, g, connFrom("10.0.0.1"))
	mustEnter(t, g, connFrom("10.0.0.1"))
	got := make(chan *Handshake)
	go func() { got <- mustEnter(t, g, connFrom("10.0.0.1")) }()
	// Another source is not held up by the full one.
	mustEnter(t, g, connFrom("10.0.0.2"))
	select {
	case <-got:
		t.Fatal("a third handshake from the source started while two young ones ran")
	default:
	}
	h1.Done()
	if h := <-got; h == nil {
		t.Fatal("no turn")
	}
	if evicted.Load() != 0 {
		t.Fatalf("%d handshakes evicted, want 0", evicted.Load())
	}
}

// TestHandshakeGateGlobalLimit: at the total limit the oldest stalled
// handshake of any source makes room; with none stalled a newcomer waits
// until its deadline and is then refused.
func TestHandshakeGateGlobalLimit(t *testing.T) {
	g, clk, _ := newTestGate(3, 0)
	first := connFrom("10.0.0.1")
	mustEnter(t, g, first)
	clk.add(evictAfter / 2)
	mustEnter(t, g, connFrom("10.0.0.2"))
	mustEnter(t, g, connFrom("10.0.0.3"))
	// Nobody is stalled yet: a newcomer whose deadline has come is refused.
	if _, err := g.Enter(connFrom("10.0.0.4"), clk.now()); !errors.Is(err, ErrHandshakesFull) {
		t.Fatalf("Enter with every handshake young: %v, want ErrHandshakesFull", err)
	}
	clk.add(evictAfter / 2)
	mustEnter(t, g, connFrom("10.0.0.4"))
	if !first.closed.Load() {
		t.Fatal("the oldest handshake was not closed at the total limit")
	}
}

// TestHandshakeGateBoundsWaiters: no more connections wait than may log
// in at once; beyond that a newcomer is refused at once.
func TestHandshakeGateBoundsWaiters(t *testing.T) {
	g, _, _ := newTestGate(1, 0)
	h := mustEnter(t, g, connFrom("10.0.0.1"))
	entered := make(chan error, 1)
	go func() {
		_, err := g.Enter(connFrom("10.0.0.2"), time.Now().Add(time.Minute))
		entered <- err
	}()
	// Wait until the first newcomer waits.
	for deadline := time.Now().Add(10 * time.Second); ; {
		g.mu.Lock()
		w := g.waiting
		g.mu.Unlock()
		if w == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the newcomer never waited")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if _, err := g.Enter(connFrom("10.0.0.3"), time.Now().Add(time.Minute)); !errors.Is(err, ErrHandshakesFull) {
		t.Fatalf("Enter with the wait list full: %v, want ErrHandshakesFull", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("refusal took as long as a wait")
	}
	h.Done()
	if err := <-entered; err != nil {
		t.Fatalf("waiting newcomer: %v", err)
	}
}

// TestAuthThrottle: a source's sixth failure and a user's eleventh make
// further logins wait, doubling per failure up to the cap; failures decay
// by half every throttleHalfLife; engagement is reported once per scope.
func TestAuthThrottle(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	th := NewAuthThrottle()
	th.now = clk.now
	for i := range throttleFreeSource - 1 {
		if e := th.Failure("10.0.0.1", "app"); e != nil {
			t.Fatalf("failure %d engaged %v", i+1, e)
		}
	}
	if d, _ := th.Delay("10.0.0.1", "app"); d != 0 {
		t.Fatalf("delay after %d failures = %v, want 0", throttleFreeSource-1, d)
	}
	if e := th.Failure("10.0.0.1", "app"); len(e) != 1 || e[0] != ThrottleSource {
		t.Fatalf("failure %d engaged %v, want [source]", throttleFreeSource, e)
	}
	d, scope := th.Delay("10.0.0.1", "app")
	if d != throttleBase || scope != ThrottleSource {
		t.Fatalf("delay = %v %s, want %v source", d, scope, throttleBase)
	}
	if d, _ := th.Delay("10.0.0.2", "other"); d != 0 {
		t.Fatalf("another source and user wait %v", d)
	}
	th.Failure("10.0.0.1", "app")
	if d, _ := th.Delay("10.0.0.1", "app"); d != 2*throttleBase {
		t.Fatalf("delay after one more failure = %v, want %v", d, 2*throttleBase)
	}
	for range 20 {
		if e := th.Failure("10.0.0.1", "app"); len(e) > 0 && e[0] == ThrottleSource {
			t.Fatal("engagement of the source reported twice")
		}
	}
	if d, _ := th.Delay("10.0.0.1", "app"); d != throttleMax {
		t.Fatalf("delay after many failures = %v, want the cap %v", d, throttleMax)
	}
	// The user is throttled from any source now.
	if d, scope := th.Delay("10.0.0.7", "app"); d == 0 || scope != ThrottleUser {
		t.Fatalf("user delay from another source = %v %s", d, scope)
	}
	clk.add(10 * throttleHalfLife)
	if d, _ := th.Delay("10.0.0.1", "app"); d != 0 {
		t.Fatalf("delay after ten half-lives = %v, want 0", d)
	}
}

// TestAuthThrottleBoundsKeys: guessing with ever new user names keeps the
// table bounded.
func TestAuthThrottleBoundsKeys(t *testing.T) {
	th := NewAuthThrottle()
	for i := range 3 * throttleMaxKeys {
		th.Failure("10.0.0.1", "user"+string(rune('a'+i%26))+time.Duration(i).String())
	}
	th.mu.Lock()
	n := len(th.user)
	th.mu.Unlock()
	if n > throttleMaxKeys {
		t.Fatalf("%d user entries, want at most %d", n, throttleMaxKeys)
	}
}

// TestHandshakeGateBusiestSourceMakesRoom: at the total limit a newcomer
// from a quiet source displaces a handshake of the busiest source at once,
// however young; sources holding as few as the newcomer's are left alone.
func TestHandshakeGateBusiestSourceMakesRoom(t *testing.T) {
	g, _, _ := newTestGate(4, 0)
	busy := []*addrConn{connFrom("10.0.0.1"), connFrom("10.0.0.1"), connFrom("10.0.0.1")}
	for _, c := range busy {
		mustEnter(t, g, c)
	}
	quiet := connFrom("10.0.0.2")
	mustEnter(t, g, quiet)
	mustEnter(t, g, connFrom("10.0.0.3"))
	if !busy[0].closed.Load() || busy[1].closed.Load() || quiet.closed.Load() {
		t.Fatal("the newcomer did not displace the busiest source's oldest handshake")
	}
	// Now 10.0.0.1 holds 2, the others 1 each: a newcomer from 10.0.0.2
	// would hold 2 as well, so nobody young is displaced.
	if _, err := g.Enter(connFrom("10.0.0.2"), g.now()); !errors.Is(err, ErrHandshakesFull) {
		t.Fatalf("Enter: %v, want ErrHandshakesFull", err)
	}
}
