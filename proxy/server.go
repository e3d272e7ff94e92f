package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Handler serves one accepted client connection until it ends. It owns
// conn and closes it before returning.
type Handler interface {
	ServeConn(ctx context.Context, conn net.Conn)
}

// Server accepts client connections on one listener and runs Handler for
// each on its own goroutine, recovering panics so that one connection
// cannot take the process down.
type Server struct {
	Backend *Backend
	Handler Handler

	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

// NewServer returns a Server for b with h serving connections.
func NewServer(b *Backend, h Handler) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{Backend: b, Handler: h, conns: make(map[net.Conn]struct{}), ctx: ctx, cancel: cancel}
}

// Listen opens the listener on addr.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.Backend.SetListening(ln.Addr().String(), false)
	return nil
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts connections until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve() error {
	log := s.Backend.Logger()
	s.Backend.SetListening("", true)
	defer s.Backend.SetListening("", false)
	var delay time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("delay", delay))
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if !s.track(conn) {
			conn.Close()
			return nil
		}
		s.wg.Add(1)
		go s.serve(conn)
	}
}

func (s *Server) serve(conn net.Conn) {
	defer s.wg.Done()
	defer s.untrack(conn)
	defer func() {
		if r := recover(); r != nil {
			s.Backend.RecordPanic(0, "client connection", r)
			conn.Close()
		}
	}()
	s.Handler.ServeConn(s.ctx, conn)
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops accepting, waits until every connection ended or ctx is
// done, then terminates the remaining sessions with CodeShutdown and closes
// any connection still in its handshake. It returns once every handler has
// returned (or after a further grace of five seconds).
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
	}
	// Sessions relayed by a loop have no handler goroutine: wait for the
	// registry to empty as well.
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		for {
			empty := s.Backend.Sessions.Empty()
			select {
			case <-empty:
				if s.Backend.Sessions.Len() == 0 {
					close(done)
					return
				}
			case <-s.ctx.Done():
				<-empty
				close(done)
				return
			}
		}
	}()
	select {
	case <-done:
		s.cancel()
		return
	case <-ctx.Done():
	}
	shutdownErr := Errorf(CodeShutdown, nil, "terminating connection because the proxy is shutting down")
	for _, sess := range s.Backend.Sessions.Snapshot() {
		sess.Terminate(shutdownErr)
	}
	s.cancel()
	select {
	case <-done:
		return
	case <-time.After(2 * time.Second):
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		s.Backend.Logger().Error("connections still running after shutdown")
	}
}
