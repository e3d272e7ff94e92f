package proxytest

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Flood is a swarm of connections to a listener that never log in, as an
// attacker keeps them: each connection sends first (nothing when empty),
// then holds on until the server closes it, and is opened again 20 ms
// later.
type Flood struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// Dials counts connections opened.
	Dials atomic.Int64
	// Closed counts connections the server closed.
	Closed atomic.Int64
}

// StartFlood opens perSource connections to addr from each of sources
// (loopback addresses such as "127.0.0.2": Linux routes all of 127.0.0.0/8
// to lo) and keeps them open until Stop or the end of the test.
func StartFlood(t testing.TB, addr string, sources []string, perSource int, first []byte) *Flood {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &Flood{cancel: cancel}
	for _, src := range sources {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		for range perSource {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.hold(ctx, &d, addr, first)
			}()
		}
	}
	t.Cleanup(f.Stop)
	return f
}

func (f *Flood) hold(ctx context.Context, d *net.Dialer, addr string, first []byte) {
	var buf [512]byte
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			// Out of ports or refused: try again, without spinning.
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		f.Dials.Add(1)
		stop := context.AfterFunc(ctx, func() { c.Close() })
		if len(first) > 0 {
			c.Write(first)
		}
		for {
			if _, err := c.Read(buf[:]); err != nil {
				break
			}
		}
		if stop() {
			f.Closed.Add(1)
		}
		c.Close()
		// Reconnect at once, but leave the two cores of a test machine to
		// the proxy and the logins under test.
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop closes every connection and waits for the swarm to end.
// Idempotent.
func (f *Flood) Stop() {
	f.cancel()
	f.wg.Wait()
}

var freshSource atomic.Uint32

// DialFresh connects to addr from a loopback address not used by the
// previous 50,000 calls, so that a test that fails many logins on purpose
// is not slowed by the login throttling, which is keyed by the client
// address (and by the user name, which such a test varies).
func DialFresh(addr string, timeout time.Duration) (net.Conn, error) {
	n := freshSource.Add(1) % 50000
	src := net.IPv4(127, byte(100+n/250), byte(n%250+1), 1)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: timeout}
	return d.Dial("tcp", addr)
}
