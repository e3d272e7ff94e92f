package mysql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/pingcap/tidb/pkg/parser/charset"
	"go.uber.org/zap"

	"github.com/credswap/credswap/proxy"
)

// changeUserReq is a parsed COM_CHANGE_USER
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_change_user.html).
type changeUserReq struct {
	user       string
	db         string
	collation  byte
	hasCharset bool
	attrs      map[string]string
}

func parseChangeUser(p []byte, caps uint32) (*changeUserReq, bool) {
	r := &changeUserReq{}
	pos := 1
	cstr := func() (string, bool) {
		i := bytes.IndexByte(p[pos:], 0)
		if i < 0 {
			return "", false
		}
		s := string(p[pos : pos+i])
		pos += i + 1
		return s, true
	}
	var ok bool
	if pos > len(p) {
		return nil, false
	}
	if r.user, ok = cstr(); !ok {
		return nil, false
	}
	if caps&capSecureConnection != 0 {
		if pos >= len(p) {
			return nil, false
		}
		l := int(p[pos])
		pos += 1 + l
		if pos > len(p) {
			return nil, false
		}
	} else if _, ok = cstr(); !ok {
		return nil, false
	}
	if pos < len(p) {
		if r.db, ok = cstr(); !ok {
			return nil, false
		}
	}
	if pos+2 <= len(p) {
		r.collation = p[pos] // the low byte: collation ids of the handshake are one byte
		r.hasCharset = true
		pos += 2
	}
	if caps&capPluginAuth != 0 && pos < len(p) {
		if _, ok = cstr(); !ok {
			return nil, false
		}
	}
	if caps&capConnectAttrs != 0 && pos < len(p) {
		total, k, ok := lenenc(p[pos:])
		if !ok || uint64(len(p)-pos-k) < total {
			return nil, false
		}
		pos += k
		end := pos + int(total)
		r.attrs = map[string]string{}
		for pos < end {
			key, n, _, err := lenencString(p[pos:end])
			if err != nil {
				return nil, false
			}
			pos += n
			val, n, _, err := lenencString(p[pos:end])
			if err != nil {
				return nil, false
			}
			pos += n
			r.attrs[string(key)] = string(val)
		}
	}
	return r, true
}

// changeUser handles COM_CHANGE_USER, which go-mysql's server does not:
// the new user authenticates against the local users (an AuthSwitchRequest
// with a fresh scramble for the user's plugin, checked against the
// configured password), then the backend connection is reset with
// COM_RESET_CONNECTION and moved to the requested database. A wrong
// password ends the session with 1045, as the database does.
func (s *session) changeUser(ctx context.Context, n int, seq byte) (err error) {
	payload, last, err := s.readPacket(n)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beginCommand(last)
	defer func() { s.endCommand(err) }()
	req, ok := parseChangeUser(payload, s.caps)
	if !ok {
		return proxy.Errorf(proxy.CodeProtocolViolation, nil, "malformed COM_CHANGE_USER")
	}
	s.h.b.ThrottleLogin(s.client, req.user, time.Now().Add(s.h.handshakeTimeout))
	users := s.h.users.Load()
	u, known := users.Lookup(req.user)
	_, plugin := users.credential(req.user) // an unknown user's is its decoy's
	salt := gomysql.RandomBuf(20)
	sw := append([]byte{hdrEOF}, plugin...)
	sw = append(sw, 0)
	sw = append(sw, salt...)
	sw = append(sw, 0)
	out, _ := appendPacket(nil, last+1, sw)
	if err := s.writeClient(out, false, last+2); err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	if err := s.crd.Ensure(&s.cbuf, 4); err != nil {
		return s.clientReadError(err)
	}
	resp, rseq, err := s.readPacket(frameLen(s.cbuf.B))
	if err != nil {
		return err
	}
	next := rseq + 1
	s.wmu.Lock()
	s.outSeq = next
	s.wmu.Unlock()
	if !known || !u.checkScramble(salt, resp) {
		s.h.b.CountClientAuthFailure()
		s.h.b.LoginFailed(s.client, req.user)
		return proxy.Errorf(proxy.CodeClientAuthFailed, nil, "Access denied for user '%s' (using password: YES)", req.user)
	}
	if plugin == AuthCachingSHA2 {
		if err := s.writeClient([]byte{2, 0, 0, next, hdrMoreData, gomysql.CACHE_SHA2_FAST_AUTH}, false, next+1); err != nil {
			return fmt.Errorf("%w: %w", errClientGone, err)
		}
		next++
	}

	// Reset the backend connection: the new user starts with a clean
	// session, in its database and character set.
	params := s.params
	params.database = req.db
	if req.hasCharset {
		params.collation = req.collation
	}
	if req.attrs != nil {
		params.attrs = req.attrs
	}
	be := s.be
	cmds := appendCommand(nil, comResetConnection, nil)
	kinds := []respKind{respSingle}
	if req.db != "" {
		cmds = appendCommand(cmds, comInitDB, []byte(req.db))
		kinds = append(kinds, respSingle)
	}
	if params.collation != s.params.collation {
		if c, err := charset.GetCollationByID(int(params.collation)); err == nil {
			cmds = appendQuery(cmds, be.caps, "SET NAMES "+c.CharsetName+" COLLATE "+c.Name)
			kinds = append(kinds, respSingle)
		}
	}
	xctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := exchange(xctx, be, &s.h.bufs, cmds, kinds, nil)
	if err != nil {
		return backendLost(err)
	}
	if res[0].err != nil {
		// No COM_RESET_CONNECTION (MySQL before 5.7.3): refuse, and keep
		// the session as it was.
		s.log().Info("COM_CHANGE_USER refused: the database cannot reset the connection", zap.Uint16("mysql_error", res[0].err.Code))
		e := &myError{Code: erNotSupportedYet, State: "42000",
			Message: "COM_CHANGE_USER is not supported by this proxy with this database server"}
		if err := s.reply(appendErr(nil, next, e)); err != nil {
			return fmt.Errorf("%w: %w", errClientGone, err)
		}
		return nil
	}
	s.st.reset()
	s.st.setDB(req.db)
	s.pin.Store(nil)
	for _, r := range res[1:] {
		if r.err != nil {
			// The database refused the new database or character set:
			// tell the client and end the session, whose state is now
			// neither the old nor the new one.
			s.reply(appendErr(nil, next, r.err))
			s.wmu.Lock()
			s.errWritten = true
			s.wmu.Unlock()
			return fmt.Errorf("change user: %w", errors.New(r.err.Message))
		}
	}
	s.status.Store(uint32(res[len(res)-1].status))
	s.params = params
	s.key = poolKey(params)
	be.key = s.key
	user := req.user
	s.user.Store(&user)
	s.log().Info("client changed user", zap.String("new_user", req.user), zap.String("new_database", req.db))
	return s.replyOK(next - 1)
}

// resetForPool runs COM_RESET_CONNECTION (and returns to db) so that the
// connection carries nothing of the last client into the next.
func (h *Handler) resetForPool(ctx context.Context, c *serverConn, db string) error {
	req := appendCommand(nil, comResetConnection, nil)
	kinds := []respKind{respSingle}
	var current []byte
	hasDB := false
	if db != "" {
		req = appendCommand(req, comInitDB, []byte(db))
		kinds = append(kinds, respSingle)
	} else {
		req = appendQuery(req, c.caps, "SELECT DATABASE()")
		kinds = append(kinds, respQuery)
	}
	res, err := exchange(ctx, c, &h.bufs, req, kinds, func(_ int, cols [][]byte) error {
		if len(cols) == 1 && cols[0] != nil {
			current, hasDB = append(current[:0], cols[0]...), true
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.err != nil {
			return r.err
		}
	}
	if hasDB {
		return fmt.Errorf("the connection uses database %q and cannot return to none", current)
	}
	return nil
}
