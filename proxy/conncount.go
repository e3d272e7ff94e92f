package proxy

import "sync"

// ConnCounter counts open backend connections by generation, in use or
// idle. Protocol packages call Opened after a successful login and Closed
// when the connection ends. Safe for concurrent use.
type ConnCounter struct {
	mu sync.Mutex
	m  map[uint64]int
}

// Opened records a new connection of generation gen.
func (c *ConnCounter) Opened(gen uint64) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[uint64]int)
	}
	c.m[gen]++
	c.mu.Unlock()
}

// Closed records the end of a connection of generation gen.
func (c *ConnCounter) Closed(gen uint64) {
	c.mu.Lock()
	if c.m[gen]--; c.m[gen] <= 0 {
		delete(c.m, gen)
	}
	c.mu.Unlock()
}

// Snapshot returns the counts by generation.
func (c *ConnCounter) Snapshot() map[uint64]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[uint64]int, len(c.m))
	for k, v := range c.m {
		m[k] = v
	}
	return m
}
