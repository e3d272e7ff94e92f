package proxy

import (
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/credswap/credswap/internal/logging"
)

// EnterHandshake takes a turn for conn's handshake (see HandshakeGate),
// waiting until deadline at most. On ErrHandshakesFull the caller refuses
// conn with CodeTooManyClients. The turn ends with Handshake.Done, which
// the protocol calls as soon as the client has authenticated (before it
// takes a session slot with Admit) or its connection ends.
func (b *Backend) EnterHandshake(conn net.Conn, deadline time.Time) (*Handshake, error) {
	return b.handshakes.Enter(conn, deadline)
}

// ThrottleLogin makes a login attempt by user from conn's address wait as
// long as the failures recorded for that address or user demand (see
// AuthThrottle), before the proxy checks the password. It returns at once
// when there is nothing to wait for, and waits at most half the time left
// until the handshake's deadline, so that a throttled login is slowed but
// can still succeed.
func (b *Backend) ThrottleLogin(conn net.Conn, user string, deadline time.Time) {
	d, scope := b.throttle.Delay(sourceOf(conn), user)
	if d <= 0 {
		return
	}
	if !deadline.IsZero() {
		d = min(d, time.Until(deadline)/2)
	}
	b.m.loginDelays.WithLabelValues(string(scope)).Inc()
	time.Sleep(d)
}

// LoginFailed records a failed login (a wrong password or an unknown user)
// for throttling, and logs once when it makes a source address or a user
// name wait from now on.
func (b *Backend) LoginFailed(conn net.Conn, user string) {
	src := sourceOf(conn)
	for _, scope := range b.throttle.Failure(src, user) {
		f := zap.String("client_address", src)
		if scope == ThrottleUser {
			f = zap.String("user", user)
		}
		b.log.Warn("login throttling engaged: further logins wait before they are answered",
			zap.String("scope", string(scope)), f, logging.Audit())
	}
}
