package proxytest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// HeapAlloc returns the bytes of live heap objects of the test process
// (which runs the proxy) after a garbage collection.
func HeapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// WaitRead waits until the proxy has read everything c sent: its end of
// the TCP connection has nothing left in its receive queue
// (/proc/net/tcp, Linux; the test is skipped elsewhere). c is a client
// connection to the proxy's listener, plain or TLS.
func (p *Proxy) WaitRead(t testing.TB, c net.Conn) {
	t.Helper()
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("WaitRead: %T is not a TCP connection", c.LocalAddr())
	}
	Eventually(t, 30*time.Second, "the proxy to read what the client sent", func() bool {
		n, err := recvQueue(p.Port, local.Port)
		if os.IsNotExist(err) {
			t.Skipf("no /proc/net/tcp: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}

// recvQueue returns the receive queue of the IPv4 TCP socket bound to
// localPort and connected from remotePort on the same host.
func recvQueue(localPort, remotePort int) (int, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", localPort)
	from := fmt.Sprintf(":%04X", remotePort)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue ...
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 || !strings.HasSuffix(fs[1], want) || !strings.HasSuffix(fs[2], from) {
			continue
		}
		_, rx, ok := strings.Cut(fs[4], ":")
		if !ok {
			return 0, fmt.Errorf("/proc/net/tcp: malformed queue field %q", fs[4])
		}
		n, err := strconv.ParseInt(rx, 16, 64)
		return int(n), err
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/net/tcp: no socket on port %d from port %d", localPort, remotePort)
}
