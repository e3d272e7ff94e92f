package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// notifier tells systemd about the service's state (sd_notify(3)) when
// credswap runs as a Type=notify unit (deploy/systemd/credswap.service):
// systemd names a unix datagram socket in $NOTIFY_SOCKET, a leading "@"
// meaning the abstract namespace (Go's net package maps it). Without the
// variable every call does nothing. It needs no cgo and no libsystemd: the
// protocol is one datagram of newline-separated assignments per call.
type notifier struct {
	addr *net.UnixAddr // nil: not run by systemd
}

func newNotifier() *notifier {
	s := os.Getenv("NOTIFY_SOCKET")
	if s == "" || (s[0] != '/' && s[0] != '@') {
		return &notifier{}
	}
	return &notifier{addr: &net.UnixAddr{Name: s, Net: "unixgram"}}
}

// notify sends the assignments, such as "READY=1", in one datagram.
func (n *notifier) notify(assignments ...string) error {
	if n.addr == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(strings.Join(assignments, "\n") + "\n")); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// ready reports that every listener is open: systemd then starts the
// units ordered after credswap, and `systemctl start` returns.
func (n *notifier) ready(status string) error {
	return n.notify("READY=1", "STATUS="+status)
}

// reloading reports that a SIGHUP reload started; ready ends it. systemd
// 253 and later (Type=notify-reload) want the CLOCK_MONOTONIC time with it.
func (n *notifier) reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return n.notify("RELOADING=1", "STATUS=reloading the configuration")
	}
	usec := ts.Nano() / 1000
	return n.notify("RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", usec), "STATUS=reloading the configuration")
}

// stopping reports that shutdown started (sessions may run on until
// shutdown_timeout).
func (n *notifier) stopping(status string) error {
	return n.notify("STOPPING=1", "STATUS="+status)
}
