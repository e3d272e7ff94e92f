//go:build !linux

package postgres

import (
	"context"
	"errors"
	"net"

	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy"
)

// Relay loops need epoll; on other systems every session uses the
// goroutine relay. These stubs keep the package building there.

// Loops is unavailable on this platform.
type Loops struct{}

// NewLoops reports that relay loops need Linux.
func NewLoops(int, *zap.Logger) (*Loops, error) { return nil, errors.New("relay loops need Linux") }

// Close does nothing.
func (*Loops) Close() {}

func (*Loops) pick() *relayLoop { return nil }

type relayLoop struct{}

type endpoint struct{}

type fdConn struct{ net.Conn }

func (*fdConn) peekHealthy() bool { return true }

func (c *fdConn) netConn() (net.Conn, error) { return c.Conn, nil }

func detachTCP(*net.TCPConn) (*fdConn, error) { return nil, errors.New("relay loops need Linux") }

func (s *session) startLoop(*relayLoop) { panic("relay loops need Linux") }

func (s *session) loopSwitchRequest(context.Context, *creds.Generation) (proxy.SwitchResult, error) {
	return proxy.SwitchBusy, nil
}

func (s *session) loopTerminate(*proxy.Error) { s.client.Close() }
