package postgres

import (
	"context"
	"errors"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// loopCarryRelease is the capacity above which an emptied carry buffer is
// dropped rather than kept for the next partial message.
const loopCarryRelease = 64 << 10

// carrySize is the capacity to grow a carry of capacity c holding n bytes
// to, before reading more of a message that needs need bytes in all (0 or
// at most n when the carry holds whole messages): at least a pooled
// buffer's worth, then as the bytes arrive (relaybuf.NextSize), never
// beyond the message.
func carrySize(c, n, need int) int {
	if need <= n {
		need = n + relaybuf.Size
	}
	return max(relaybuf.Size, relaybuf.NextSize(c, need))
}

// growCarry returns c with capacity size, holding the same bytes.
func growCarry(c []byte, size int) []byte {
	nc := make([]byte, len(c), size)
	copy(nc, c)
	return nc
}

// startLoop hands the session to relay loop l. The caller's goroutine may
// return afterwards: the loop relays, and the session ends through
// finish on a goroutine of its own.
func (s *session) startLoop(l *relayLoop) {
	s.lp = l
	s.sv = serverVisitor{s: s, be: s.be}
	s.h.b.Sessions.Add(s) // the relay mode is settled: the drain controller may see it
	if !l.post(s, func() {
		if err := l.attach(s); err != nil {
			go s.finish(false, err)
		}
	}) {
		go s.finish(false, errors.New("relay loop stopped"))
	}
}

// readInto reads from fd into p. It returns n > 0, or done with the error
// (io.EOF at end of stream); EAGAIN is (0, nil).
func readInto(fd int, p []byte) (int, error) {
	for {
		n, err := unix.Read(fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, nil
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// readBatch reads what fd has into the loop buffer, or after a partial
// message kept in carry (growing it as the message's bytes arrive, see
// carrySize). It returns the bytes to process, which alias the loop buffer
// or carry. The client side reads through readClient instead.
func readBatch(l *relayLoop, fd int, carry *[]byte, need int) ([]byte, error) {
	if len(*carry) == 0 {
		n, err := readInto(fd, l.buf)
		return l.buf[:n], err
	}
	c := *carry
	if len(c) == cap(c) || cap(c) < relaybuf.Size {
		c = growCarry(c, carrySize(cap(c), len(c), need))
	}
	return readCarry(fd, carry, c)
}

// readCarry reads from fd after the bytes of c, a carry with room, and
// stores the result in carry.
func readCarry(fd int, carry *[]byte, c []byte) ([]byte, error) {
	n, err := readInto(fd, c[len(c):cap(c)])
	c = c[:len(c)+n]
	*carry = c
	if n == 0 {
		return nil, err
	}
	return c, err
}

// keep stores the unforwarded tail of a batch for the next read.
func keep(carry *[]byte, rest []byte) {
	if len(rest) > 0 {
		*carry = append((*carry)[:0], rest...)
		return
	}
	if cap(*carry) > loopCarryRelease {
		*carry = nil
		return
	}
	*carry = (*carry)[:0]
}

// readClient is readBatch for the client socket: the growth of ccarry
// past relaybuf.Size is taken from the memory budget. When the budget
// does not have it, the client is parked (awaitMemory) and nothing is
// read.
func (s *session) readClient(l *relayLoop) ([]byte, error) {
	c := s.ccarry
	if len(c) == 0 {
		n, err := readInto(s.cep.fd, l.buf)
		return l.buf[:n], err
	}
	if len(c) == cap(c) || cap(c) < relaybuf.Size {
		size := carrySize(cap(c), len(c), s.cneed)
		if d := relaybuf.Charge(size) - s.cheld; d > 0 {
			if !s.h.b.Memory().TryTake(d) {
				s.parkClient(l, size, d)
				return nil, nil
			}
			s.cheld += d
		}
		c = growCarry(c, size)
	}
	return readCarry(s.cep.fd, &s.ccarry, c)
}

// parkClient stops reading from the client until the memory budget gives
// the d bytes that growing ccarry to size needs, or the wait fails.
func (s *session) parkClient(l *relayLoop, size, d int) {
	l.park(&s.cep)
	go s.awaitMemory(l, size, d)
}

// awaitMemory waits for the memory a parked client needs, on a goroutine
// of its own, and hands the outcome to the loop: it grows ccarry and reads
// the client again, or ends the session when the wait bound passed. A
// session that ended meanwhile (stop) gives the memory back.
func (s *session) awaitMemory(l *relayLoop, size, d int) {
	mem := s.h.b.Memory()
	err := mem.Take(d, s.stop.C())
	if !l.post(s, func() {
		if !s.attached || !s.cep.parked {
			if err == nil {
				mem.Release(d)
			}
			return
		}
		if err != nil {
			if !proxy.ErrMemoryWaitStopped(err) {
				l.end(s, false, err)
			}
			return
		}
		s.cheld += d
		if cap(s.ccarry) < size {
			s.ccarry = growCarry(s.ccarry, size)
		}
		s.settleCarry()
		l.unpark(&s.cep, len(s.cpend) == 0 && !s.held)
	}) && err == nil {
		mem.Release(d)
	}
}

// keepClient is keep for the client's carry: a grown carry left with at
// most a pooled buffer's worth is replaced by a small one, and the memory
// it no longer needs goes back to the budget.
func (s *session) keepClient(rest []byte) {
	if cap(s.ccarry) <= relaybuf.Size {
		keep(&s.ccarry, rest)
		return
	}
	switch {
	case len(rest) == 0:
		s.ccarry = nil
	case len(rest) <= relaybuf.Size:
		s.ccarry = append(make([]byte, 0, relaybuf.Size), rest...)
	default:
		s.ccarry = append(s.ccarry[:0], rest...)
	}
	s.settleCarry()
}

// settleCarry gives back the budget memory ccarry's capacity no longer
// needs.
func (s *session) settleCarry() {
	if c := relaybuf.Charge(cap(s.ccarry)); c < s.cheld {
		s.h.b.Memory().Release(s.cheld - c)
		s.cheld = c
	}
}

// fromClient handles readability of the client socket.
func (s *session) fromClient(l *relayLoop) {
	if s.cep.parked {
		return // waiting for memory (awaitMemory)
	}
	data, err := s.readClient(l)
	if len(data) > 0 {
		s.clientData(l, data, true)
	}
	if err != nil && s.attached {
		l.end(s, errors.Is(err, io.EOF), err)
	}
}

// clientData forwards a batch from the client. At a safe point with a newer
// generation to move to, the batch is held and the session switches first
// (trySwitch is false for a held batch coming back from that attempt).
func (s *session) clientData(l *relayLoop, data []byte, trySwitch bool) {
	if trySwitch && len(s.spend) == 0 && s.switchDue() {
		s.keepClient(data)
		l.detach(s)
		go s.loopSwitch(s.h.b.Target())
		return
	}
	if out := s.paramChanges(); len(out) > 0 && !s.send(l, &s.cep, &s.bep, &s.spend, out) {
		return
	}
	emit := func(p []byte) bool { return s.send(l, &s.bep, &s.cep, &s.cpend, p) }
	fwd, need, stop, hold, ok, scanErr := scanForward(&s.cfs, data, s.h.maxBody, s.clientWantSet, s, &s.inject, emit)
	if !ok {
		return
	}
	s.keepClient(data[fwd:])
	s.cneed = need
	if hold {
		// Resumed by fromServer once every Sync and Query is answered.
		s.held = true
		l.setInterest(&s.cep, false, s.cep.out)
		return
	}
	switch {
	case scanErr != nil:
		l.end(s, false, clientScanError(scanErr))
	case stop:
		l.end(s, true, nil)
	}
}

// fromServer handles readability of the backend socket.
func (s *session) fromServer(l *relayLoop) {
	data, err := readBatch(l, s.bep.fd, &s.scarry, s.sneed)
	if len(data) > 0 {
		v := &s.sv
		emit := func(p []byte) bool { return s.send(l, &s.cep, &s.bep, &s.spend, p) }
		fwd, need, _, _, ok, scanErr := scanForward(&s.sfs, data, 0, s.serverWantSet, v, nil, emit)
		if !ok {
			return
		}
		if scanErr != nil {
			s.loopBackendGone(l, scanErr, false)
			return
		}
		keep(&s.scarry, data[fwd:])
		s.sneed = need
		if v.rfq && s.held && s.outstanding.Load() == 0 {
			// A client message held until now may go.
			s.held = false
			l.setInterest(&s.cep, true, s.cep.out)
			s.clientData(l, s.ccarry, false)
			if !s.attached {
				return
			}
		}
		if v.rfq {
			v.rfq = false
			// Idle at a safe point on an old generation: move now,
			// before the client sends anything.
			if s.pin.Load() == nil && len(s.spend) == 0 && len(s.ccarry) == 0 && len(s.scarry) == 0 && err == nil &&
				s.switchDue() {
				l.detach(s)
				go s.loopSwitch(s.h.b.Target())
				return
			}
		}
	}
	if err != nil && s.attached {
		s.loopBackendGone(l, err, s.sv.fatal)
	}
}

// loopBackendGone ends the session after the backend connection failed.
func (s *session) loopBackendGone(l *relayLoop, err error, fatalSent bool) {
	var cause error
	if !fatalSent && len(s.spend) == 0 && s.sfs.atBoundary() {
		cause = proxy.Errorf(proxy.CodeBackendLost, err, "server closed the connection unexpectedly")
	}
	s.readerFailed.Store(true)
	l.end(s, false, cause)
}

// send writes p to dst without blocking; what the socket does not take is
// kept in pend, and src stops being read until it has drained.
func (s *session) send(l *relayLoop, dst, src *endpoint, pend *[]byte, p []byte) bool {
	if len(*pend) > 0 {
		*pend = append(*pend, p...)
		return true
	}
	n, err := writeSome(dst.fd, p)
	if err != nil {
		if dst.client {
			l.end(s, false, nil) // the client is gone
		} else {
			s.readerFailed.Store(true)
			l.end(s, false, proxy.Errorf(proxy.CodeBackendLost, err, "lost the connection to the database server"))
		}
		return false
	}
	if n < len(p) {
		*pend = append((*pend)[:0], p[n:]...)
		l.setInterest(src, false, src.out)
		l.setInterest(dst, dst.in, true)
	}
	return true
}

// flushPending writes bytes waiting for dst once it is writable again.
func (s *session) flushPending(l *relayLoop, dst *endpoint) {
	pend, src := &s.spend, &s.bep
	if !dst.client {
		pend, src = &s.cpend, &s.cep
	}
	n, err := writeSome(dst.fd, *pend)
	if err != nil {
		l.end(s, false, nil)
		return
	}
	rest := (*pend)[n:]
	if len(rest) > 0 {
		*pend = append((*pend)[:0], rest...)
		return
	}
	*pend = (*pend)[:0]
	if cap(*pend) > loopCarryRelease {
		*pend = nil
	}
	l.setInterest(dst, dst.in, false)
	l.setInterest(src, true, src.out)
}

// writeSome writes as much of p as the socket takes now.
func writeSome(fd int, p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Write(fd, p[done:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return done, nil
		case err != nil:
			return done, err
		}
		done += n
	}
	return done, nil
}

// loopSwitch runs on its own goroutine with the session detached from its
// loop: it moves the session to gen and hands it back to the loop, which
// then forwards any batch the client sent meanwhile.
func (s *session) loopSwitch(gen *creds.Generation) {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.b.ConnectTimeout())
	defer cancel()
	s.switchDetached(ctx, gen)
	s.reattach()
}

// switchDetached runs a switch of a session detached from its loop. A
// panic ends the session (reattach finishes it) and nothing else.
func (s *session) switchDetached(ctx context.Context, gen *creds.Generation) (res proxy.SwitchResult, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.recoverSwitch(&res, &err)
	if s.terminated.Load() {
		return proxy.SwitchBusy, nil
	}
	return s.performSwitch(ctx, gen)
}

// reattach gives a detached session back to its loop, or finishes it if it
// was terminated meanwhile.
func (s *session) reattach() {
	l := s.lp
	if s.terminated.Load() {
		s.finish(false, nil) // tells the client termErr, if any
		return
	}
	s.sv.be = s.be
	if !l.post(s, func() {
		if err := l.attach(s); err != nil {
			go s.finish(false, err)
			return
		}
		if len(s.ccarry) > 0 {
			s.clientData(l, s.ccarry, false)
		}
	}) {
		s.finish(false, errors.New("relay loop stopped"))
	}
}

// loopSwitchRequest implements Switch for a session in a relay loop: the
// loop detaches it if it is at a safe point, and the caller switches it.
func (s *session) loopSwitchRequest(ctx context.Context, gen *creds.Generation) (proxy.SwitchResult, error) {
	type answer struct {
		detached bool
		res      proxy.SwitchResult
	}
	ch := make(chan answer, 1)
	if !s.lp.post(s, func() {
		switch {
		case !s.attached || s.terminated.Load():
			ch <- answer{res: proxy.SwitchBusy}
		case s.gen.Load() >= gen.N:
			ch <- answer{res: proxy.SwitchDone}
		case !s.safePoint() || len(s.spend) > 0 || len(s.ccarry) > 0 || len(s.scarry) > 0:
			ch <- answer{res: proxy.SwitchBusy}
		case s.pinThrottled():
			ch <- answer{res: proxy.SwitchPinned}
		case !s.retry.Ready(time.Now(), s.h.b.Newest(gen).N):
			ch <- answer{res: proxy.SwitchBusy} // backing off after failed attempts
		default:
			s.lp.detach(s)
			ch <- answer{detached: true}
		}
	}) {
		return proxy.SwitchBusy, nil
	}
	var a answer
	select {
	case a = <-ch:
	case <-ctx.Done():
		// The loop answers anyway; a detached session must be taken over.
		go func() {
			if a := <-ch; a.detached {
				defer s.recoverDetached("reattach")
				s.reattach()
			}
		}()
		return proxy.SwitchBusy, ctx.Err()
	}
	if !a.detached {
		return a.res, nil
	}
	res, err := s.switchDetached(ctx, gen)
	s.reattach()
	return res, err
}

// loopTerminate implements Terminate for a session in a relay loop.
func (s *session) loopTerminate(e *proxy.Error) {
	l := s.lp
	if !l.post(s, func() {
		if !s.attached {
			return // a switch or finish in progress sees terminated
		}
		if len(s.spend) == 0 && s.sfs.atBoundary() {
			writeSome(s.cep.fd, appendFatal(nil, e))
		}
		l.end(s, false, nil)
	}) {
		s.client.Close()
	}
}
