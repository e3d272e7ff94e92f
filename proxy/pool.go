package proxy

import (
	"sync"
	"time"
)

// PooledConn is a backend connection the pool can hold while no session
// uses it. Implementations belong to the protocol packages.
type PooledConn interface {
	// Generation is the credential generation the connection logged in with.
	Generation() uint64
	// PoolKey identifies the connections interchangeable for a client:
	// same database and startup parameters.
	PoolKey() string
	// Healthy is a cheap, non-blocking check that the database has not
	// closed the connection or sent anything while it was idle.
	Healthy() bool
	// Close ends the connection politely (e.g. PostgreSQL Terminate).
	Close() error
}

// Pool keeps idle backend connections by key and generation. It never hands
// out a connection of another generation than asked for. Safe for
// concurrent use; connections are closed outside its lock.
type Pool struct {
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]idleConn // by PoolKey, most recently returned last
	n      int
	closed bool
	// floor is the highest generation passed to CloseBelow: connections
	// older than it are refused, so that a Put racing with CloseBelow
	// cannot leave an old-generation connection behind.
	floor uint64
}

type idleConn struct {
	c     PooledConn
	since time.Time
	warm  bool // pre-dialed for a drain; may exceed maxIdle for a while
}

// warmGrace is how long pre-dialed connections may keep the pool above
// maxIdle before the reaper trims them.
const warmGrace = 30 * time.Second

// NewPool returns a pool keeping at most maxIdle returned connections, each
// for at most idleTimeout.
func NewPool(maxIdle int, idleTimeout time.Duration) *Pool {
	return &Pool{maxIdle: maxIdle, idleTimeout: idleTimeout, idle: make(map[string][]idleConn)}
}

// Get returns a healthy idle connection for key of generation gen, or nil.
// Unhealthy connections met on the way are closed.
func (p *Pool) Get(key string, gen uint64) PooledConn {
	for {
		c := p.pop(key, gen)
		if c == nil {
			return nil
		}
		if c.Healthy() {
			return c
		}
		c.Close()
	}
}

func (p *Pool) pop(key string, gen uint64) PooledConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[key]
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].c.Generation() == gen {
			c := list[i].c
			list = append(list[:i], list[i+1:]...)
			p.set(key, list)
			p.n--
			return c
		}
	}
	return nil
}

func (p *Pool) set(key string, list []idleConn) {
	if len(list) == 0 {
		delete(p.idle, key)
		return
	}
	p.idle[key] = list
}

// Put offers c to the pool. It returns false, and the caller must close c,
// when the pool is full or closed or c is older than minGen.
func (p *Pool) Put(c PooledConn, minGen uint64) bool {
	return p.put(c, minGen, false)
}

// PutWarm adds a pre-dialed connection, allowed to exceed maxIdle for a
// while so that a drain finds one connection per session.
func (p *Pool) PutWarm(c PooledConn, minGen uint64) bool {
	return p.put(c, minGen, true)
}

func (p *Pool) put(c PooledConn, minGen uint64, warm bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || c.Generation() < max(minGen, p.floor) || (!warm && p.n >= p.maxIdle) {
		return false
	}
	key := c.PoolKey()
	p.idle[key] = append(p.idle[key], idleConn{c: c, since: time.Now(), warm: warm})
	p.n++
	return true
}

// CloseBelow closes every idle connection older than gen and returns how
// many it closed. From then on the pool refuses connections older than gen,
// whatever minGen a Put passes: "return to the pool" and "close everything
// below gen" are atomic with respect to each other.
func (p *Pool) CloseBelow(gen uint64) int {
	p.mu.Lock()
	p.floor = max(p.floor, gen)
	p.mu.Unlock()
	return p.closeWhere(time.Now(), func(ic idleConn, _ time.Time) bool { return ic.c.Generation() < gen })
}

// Reap closes connections idle longer than idleTimeout and trims the pool
// back to maxIdle once warm connections are past their grace period.
func (p *Pool) Reap(now time.Time) int {
	n := p.closeWhere(now, func(ic idleConn, now time.Time) bool { return now.Sub(ic.since) > p.idleTimeout })
	var victims []PooledConn
	p.mu.Lock()
	for key, list := range p.idle {
		for i := 0; i < len(list) && p.n > p.maxIdle; {
			if !list[i].warm || now.Sub(list[i].since) > warmGrace {
				victims = append(victims, list[i].c)
				list = append(list[:i], list[i+1:]...)
				p.n--
				continue
			}
			i++
		}
		p.set(key, list)
	}
	p.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
	return n + len(victims)
}

func (p *Pool) closeWhere(now time.Time, match func(idleConn, time.Time) bool) int {
	var victims []PooledConn
	p.mu.Lock()
	for key, list := range p.idle {
		kept := list[:0]
		for _, ic := range list {
			if match(ic, now) {
				victims = append(victims, ic.c)
				continue
			}
			kept = append(kept, ic)
		}
		p.n -= len(list) - len(kept)
		p.set(key, kept)
	}
	p.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
	return len(victims)
}

// Close closes every idle connection and refuses further Puts.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.closeWhere(time.Now(), func(idleConn, time.Time) bool { return true })
}

// Has reports whether an idle connection for key of generation gen is
// there (healthy or not).
func (p *Pool) Has(key string, gen uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ic := range p.idle[key] {
		if ic.c.Generation() == gen {
			return true
		}
	}
	return false
}

// TakeWarm removes and returns a pre-dialed connection for key of
// generation gen that nobody used, or nil.
func (p *Pool) TakeWarm(key string, gen uint64) PooledConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[key]
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].warm && list[i].c.Generation() == gen {
			c := list[i].c
			p.set(key, append(list[:i], list[i+1:]...))
			p.n--
			return c
		}
	}
	return nil
}

// Len returns the number of idle connections.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// LenByGeneration returns the number of idle connections per generation.
func (p *Pool) LenByGeneration() map[uint64]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[uint64]int)
	for _, list := range p.idle {
		for _, ic := range list {
			m[ic.c.Generation()]++
		}
	}
	return m
}
