package mysql

import (
	"context"
	"errors"
	"fmt"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
)

// Clients see the proxy's connection id in the greeting (the mariadb CLI
// prints it, Connector/J cancels with it), while CONNECTION_ID() returns
// the backend's thread id, which changes when the session moves. KILL
// [QUERY|CONNECTION] n and COM_PROCESS_KILL n for a proxy id are answered
// by the proxy: it runs KILL on a connection of its own, logged in with
// the credential of the target's backend connection, for the target's
// current backend thread. Any other id goes to the database unchanged.

// errKilled ends a session that killed its own connection.
var errKilled = errors.New("connection killed by its own KILL")

// killedError is what a killed session's client gets.
var killedError = &myError{Code: erConnectionKilled, State: "70100", Message: "Connection was killed"}

// kill answers a KILL for target's proxy id, sent by s as the command
// with sequence number seq. Callers hold s.mu (not target's).
func (s *session) kill(ctx context.Context, target *session, query bool, seq byte) error {
	if target == s {
		if query {
			// Nothing of this session runs while it sends KILL QUERY.
			return s.replyOK(seq)
		}
		s.wmu.Lock()
		s.client.Write(appendErr(nil, seq+1, killedError))
		s.errWritten = true
		s.wmu.Unlock()
		return errKilled
	}
	if !query {
		target.killed.Store(true)
	}
	if err := target.killBackend(ctx, query); err != nil {
		target.killed.Store(false)
		var myErr *gomysql.MyError
		me := &myError{Code: erUnknownError, State: "HY000", Message: "KILL failed: could not reach the database server"}
		if errors.As(err, &myErr) {
			me = &myError{Code: myErr.Code, State: myErr.State, Message: myErr.Message}
		}
		s.log().Info("KILL of a proxy connection id failed", zap.Uint32("target", target.connID), zap.Error(err))
		if werr := s.reply(appendErr(nil, seq+1, me)); werr != nil {
			return fmt.Errorf("%w: %w", errClientGone, werr)
		}
		return nil
	}
	s.log().Info("killed on behalf of the client", zap.Uint32("target", target.connID), zap.Bool("query", query))
	if !query {
		target.terminateKilled()
	}
	return s.replyOK(seq)
}

// replyOK answers the command with sequence number seq with OK.
func (s *session) replyOK(seq byte) error {
	if err := s.reply(appendOK(nil, seq+1, uint16(s.status.Load()), s.caps)); err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return nil
}

// killBackend runs KILL QUERY or KILL CONNECTION for the session's
// current backend thread, with the credential of the generation that
// thread logged in with (another user could not kill it), or the current
// one if that is gone.
func (s *session) killBackend(ctx context.Context, query bool) error {
	gen := s.gen.Load()
	thread := s.thread.Load()
	cred := s.h.b.Store.Current()
	if fb := s.h.b.Store.Fallback(); fb != nil && fb.N == gen {
		cred = fb
	}
	if cred == nil {
		return errors.New("no backend credential")
	}
	ctx, cancel := context.WithTimeout(ctx, s.h.b.ConnectTimeout())
	defer cancel()
	return s.h.dialer.kill(ctx, credOf(cred), thread, query)
}

func credOf(g *creds.Generation) creds.Credential { return g.Cred }

// terminateKilled ends a session whose backend connection was killed on a
// client's request, telling its client what the database would:
// "Connection was killed".
func (s *session) terminateKilled() { s.terminate(killedError, 0, false) }
