package mysql

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy"
)

// Capture reads, in one query on the old backend connection, every
// session variable that differs from its global value, the user
// variables, the current database, LAST_INSERT_ID() and whether the
// GET_LOCK locks the session took are still held. MariaDB lists them in
// information_schema (SYSTEM_VARIABLES, USER_VARIABLES); MySQL 5.7 and 8
// in performance_schema (variables_by_thread, user_variables_by_thread).
// Values travel hex-encoded, so no character set conversion of the
// connection can alter them. information_schema.USER_VARIABLES converts
// string values to utf8mb3 and cuts them at 2048 characters, so string
// user variables are read exactly with HEX(@name): for the names the
// relay saw in the client's SQL within the same query, for others with
// one more query.

// Row kinds of the capture query: (kind, name, type, value, extra).
const (
	rowSysVar  = "v" // name, type (MariaDB) or NULL, HEX(value), NULL
	rowUserVar = "u" // name, type, value of numeric variables or HEX (MySQL), 'null' or charset
	rowSession = "s" // DATABASE(), NULL, LAST_INSERT_ID(), NULL
	rowExact   = "w" // index, COLLATION(@v), HEX(@v), CHARSET(@v)
	rowLock    = "l" // index, NULL, IS_USED_LOCK(x) = CONNECTION_ID(), NULL
)

// notReplayed are session variables that are not state the client set
// (per-statement or per-thread values) or that need privileges to set.
var notReplayed = map[string]bool{
	"timestamp": true, "pseudo_thread_id": true, "rand_seed1": true, "rand_seed2": true,
	"insert_id": true, "last_insert_id": true, "identity": true, "warning_count": true,
	"error_count": true, "gtid_next": true, "gtid_owned": true, "original_commit_timestamp": true,
	"original_server_version": true, "immediate_server_version": true, "pseudo_replica_mode": true,
	"pseudo_slave_mode": true, "external_user": true, "proxy_user": true, "in_transaction": true,
	"last_gtid": true, "gtid_seq_no": true, "server_id": true,
}

// numericSysVarTypes are MariaDB's VARIABLE_TYPEs whose values must be set
// unquoted (SET wait_timeout = '100' fails with 1232).
var numericSysVarTypes = map[string]bool{
	"BIGINT": true, "BIGINT UNSIGNED": true, "INT": true, "INT UNSIGNED": true, "DOUBLE": true,
}

// threadIDSQL is the current connection's performance_schema thread id
// (PS_CURRENT_THREAD_ID() exists only from MySQL 8.0.16).
const threadIDSQL = "(SELECT THREAD_ID FROM performance_schema.threads WHERE PROCESSLIST_ID = CONNECTION_ID())"

// captureSQL returns the capture query for a MariaDB or MySQL server,
// reading exactUserVars exactly and checking the GET_LOCK literals locks.
func captureSQL(mariaDB bool, exactUserVars, locks []string) string {
	var b strings.Builder
	if mariaDB {
		b.WriteString("SELECT 'v', VARIABLE_NAME, VARIABLE_TYPE, HEX(SESSION_VALUE), NULL" +
			" FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_SCOPE = 'SESSION' AND READ_ONLY = 'NO'" +
			" AND (NOT (SESSION_VALUE <=> GLOBAL_VALUE) OR VARIABLE_NAME IN (" + handshakeVarList(true) + "))")
		b.WriteString(" UNION ALL SELECT 'u', VARIABLE_NAME, VARIABLE_TYPE," +
			" IF(VARIABLE_TYPE IN ('INT', 'INT UNSIGNED', 'DECIMAL', 'DOUBLE'), VARIABLE_VALUE, NULL)," +
			" IF(VARIABLE_VALUE IS NULL, CONCAT('null:', CHARACTER_SET_NAME), CHARACTER_SET_NAME) FROM information_schema.USER_VARIABLES")
	} else {
		b.WriteString("SELECT 'v', t.VARIABLE_NAME, NULL, HEX(t.VARIABLE_VALUE), NULL" +
			" FROM performance_schema.variables_by_thread t" +
			" JOIN performance_schema.global_variables g ON g.VARIABLE_NAME = t.VARIABLE_NAME" +
			" WHERE t.THREAD_ID = " + threadIDSQL + " AND (NOT (t.VARIABLE_VALUE <=> g.VARIABLE_VALUE)" +
			" OR t.VARIABLE_NAME IN (" + handshakeVarList(false) + "))")
		b.WriteString(" UNION ALL SELECT 'u', u.VARIABLE_NAME, NULL, HEX(u.VARIABLE_VALUE)," +
			" IF(u.VARIABLE_VALUE IS NULL, 'null', NULL) FROM performance_schema.user_variables_by_thread u" +
			" WHERE u.THREAD_ID = " + threadIDSQL)
	}
	b.WriteString(" UNION ALL SELECT 's', DATABASE(), NULL, CAST(LAST_INSERT_ID() AS CHAR), NULL")
	writeExactRows(&b, exactUserVars)
	for i, lit := range locks {
		fmt.Fprintf(&b, " UNION ALL SELECT 'l', '%d', NULL, CAST(IS_USED_LOCK(%s) = CONNECTION_ID() AS CHAR), NULL", i, lit)
	}
	b.WriteString(noSelectLimit)
	return b.String()
}

// noSelectLimit ends the capture queries: an explicit LIMIT on the whole
// UNION overrides the session's sql_select_limit, which would otherwise
// cut the capture short (SET sql_select_limit = 3 lost every variable
// after the third).
const noSelectLimit = " LIMIT 18446744073709551615"

// handshakeVars are the session variables a new connection takes from its
// handshake rather than from the global values, in the order a replay must
// set them: each character set resets its collation, so the collation goes
// last. They are always captured and replayed: a session that ran
// SET NAMES back to the server's default must not get the handshake's
// character set on its next connection.
var handshakeVars = []string{"character_set_client", "character_set_results", "character_set_connection", "collation_connection"}

// handshakeVarList returns handshakeVars as an SQL list, upper case for
// MariaDB's information_schema.
func handshakeVarList(mariaDB bool) string {
	var b strings.Builder
	for i, v := range handshakeVars {
		if i > 0 {
			b.WriteString(", ")
		}
		if mariaDB {
			v = strings.ToUpper(v)
		}
		b.WriteString("'" + v + "'")
	}
	return b.String()
}

// handshakeOrder sorts session variable assignments so that handshakeVars
// come last, in their order; the others keep theirs.
func handshakeOrder(as []assign) {
	rank := func(a assign) int {
		return slices.Index(handshakeVars, strings.TrimPrefix(a.target, "@@SESSION.")) + 1
	}
	slices.SortStableFunc(as, func(a, b assign) int { return cmp.Compare(rank(a), rank(b)) })
}

// writeExactRows appends the rows reading user variables exactly.
func writeExactRows(b *strings.Builder, names []string) {
	for i, n := range names {
		if b.Len() > 0 {
			b.WriteString(" UNION ALL ")
		}
		v := userVarRef(n)
		fmt.Fprintf(b, "SELECT 'w', '%d', COLLATION(%s), HEX(%s), CHARSET(%s)", i, v, v, v)
	}
}

// userVarRef quotes a user variable name: @`name`.
func userVarRef(name string) string { return "@`" + strings.ReplaceAll(name, "`", "``") + "`" }

// replayableName reports whether a user variable name can be written
// back exactly: printable ASCII (names arrive in the connection's result
// character set, which may not be the replay's).
func replayableName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] >= 0x7f {
			return false
		}
	}
	return true
}

func isSysVarName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '_' || '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'z') {
			return false
		}
	}
	return true
}

func isIdentName(name string) bool { return isSysVarName(name) }

// isNumber reports whether s is a plain decimal or floating point number.
func isNumber(s string) bool {
	if s == "" {
		return false
	}
	_, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E') {
			return false
		}
	}
	return true
}

// assign is one "target = literal" of the replay's SET statement.
type assign struct{ target, value string }

// capturedState is what capture found on the old backend connection.
type capturedState struct {
	assigns   []assign
	db        *string
	pinReason string
}

// userVarRow is a user variable listed by the server.
type userVarRow struct {
	name, typ string
	value     []byte // numeric value (MariaDB) or HEX (MySQL); nil when absent
	isNull    bool
	charset   string // of a NULL (MariaDB)
}

// exactVal is a user variable read with HEX(@v).
type exactVal struct {
	collation, hexValue, charset string
	isNull                       bool
}

// capture reads the session's movable state from c and finds pins.
func (s *session) capture(ctx context.Context, c *serverConn) (*capturedState, error) {
	exact := make([]string, 0, len(s.st.userVars))
	for n := range s.st.userVars {
		exact = append(exact, n)
	}
	slices.Sort(exact)
	locks := make([]string, 0, len(s.st.locks))
	for l := range s.st.locks {
		locks = append(locks, l)
	}
	slices.Sort(locks)

	cs := &capturedState{}
	var sysVars []assign
	var users []userVarRow
	exactVals := map[string]exactVal{}
	held := map[string]bool{}
	var lastInsertID string
	rowErr := func(format string, args ...any) error { return fmt.Errorf("capture: "+format, args...) }
	handle := func(_ int, cols [][]byte) error {
		if len(cols) != 5 || cols[0] == nil {
			return rowErr("unexpected row shape")
		}
		switch string(cols[0]) {
		case rowSysVar:
			name := strings.ToLower(string(cols[1]))
			if notReplayed[name] || !isSysVarName(name) {
				return nil
			}
			if name == "character_set_results" && len(cols[3]) == 0 {
				// SET character_set_results = NULL (results unconverted)
				// reads back as ''.
				sysVars = append(sysVars, assign{"@@SESSION." + name, "NULL"})
				return nil
			}
			lit, err := sysVarLiteral(c.mariaDB, string(cols[2]), cols[3])
			if err != nil {
				return rowErr("session variable %s: %v", name, err)
			}
			sysVars = append(sysVars, assign{"@@SESSION." + name, lit})
		case rowUserVar:
			extra := string(cols[4])
			cs, isNull := strings.CutPrefix(extra, "null:")
			users = append(users, userVarRow{name: string(cols[1]), typ: string(cols[2]), value: cols[3],
				isNull: isNull || extra == "null", charset: cs})
			if cols[3] != nil {
				users[len(users)-1].value = append([]byte(nil), cols[3]...)
			}
		case rowSession:
			if cols[1] != nil {
				db := string(cols[1])
				cs.db = &db
			}
			lastInsertID = string(cols[3])
		case rowExact:
			i, err := strconv.Atoi(string(cols[1]))
			if err != nil || i < 0 || i >= len(exact) {
				return rowErr("bad user variable index")
			}
			exactVals[exact[i]] = exactVal{collation: string(cols[2]), hexValue: string(cols[3]),
				charset: string(cols[4]), isNull: cols[3] == nil}
		case rowLock:
			i, err := strconv.Atoi(string(cols[1]))
			if err != nil || i < 0 || i >= len(locks) {
				return rowErr("bad lock index")
			}
			held[locks[i]] = string(cols[3]) == "1"
		}
		return nil
	}
	q := captureSQL(c.mariaDB, exact, locks)
	res, err := exchange(ctx, c, &s.h.bufs, appendQuery(nil, c.caps, q), []respKind{respQuery}, handle)
	if err != nil {
		return nil, err
	}
	if res[0].err != nil {
		return nil, res[0].err
	}
	for _, l := range locks {
		if held[l] {
			cs.pinReason = PinUserLock
		} else {
			delete(s.st.locks, l)
		}
	}

	// String user variables the relay never saw named: read them exactly.
	var missing []string
	for _, u := range users {
		if _, ok := exactVals[u.name]; !ok && c.mariaDB && !u.isNull && !numericUserVarType(u.typ) && replayableName(u.name) {
			missing = append(missing, u.name)
		}
	}
	if len(missing) > 0 {
		exact = missing
		var b strings.Builder
		writeExactRows(&b, missing)
		b.WriteString(noSelectLimit)
		res, err := exchange(ctx, c, &s.h.bufs, appendQuery(nil, c.caps, b.String()), []respKind{respQuery}, handle)
		if err != nil {
			return nil, err
		}
		if res[0].err != nil {
			return nil, res[0].err
		}
		s.st.addUserVars(missing)
	}

	handshakeOrder(sysVars)
	cs.assigns = sysVars
	for _, u := range users {
		if !replayableName(u.name) {
			if cs.pinReason == "" {
				cs.pinReason = PinUserVariable
			}
			continue
		}
		lit, ok := userVarLiteral(c.mariaDB, u, exactVals)
		if !ok {
			if cs.pinReason == "" {
				cs.pinReason = PinUserVariable
			}
			continue
		}
		cs.assigns = append(cs.assigns, assign{userVarRef(u.name), lit})
	}
	if lastInsertID != "" && lastInsertID != "0" && isNumber(lastInsertID) {
		cs.assigns = append(cs.assigns, assign{"@@SESSION.last_insert_id", lastInsertID})
	}
	return cs, nil
}

func numericUserVarType(t string) bool {
	return t == "INT" || t == "INT UNSIGNED" || t == "DECIMAL" || t == "DOUBLE"
}

// sysVarLiteral writes a session variable's value for SET: numbers
// unquoted (checked to be numbers), everything else as a utf8mb4 hex
// literal, which no sql_mode or character set can misread.
func sysVarLiteral(mariaDB bool, typ string, hexValue []byte) (string, error) {
	if hexValue == nil {
		return "NULL", nil
	}
	raw, err := hex.DecodeString(string(hexValue))
	if err != nil {
		return "", err
	}
	numeric := numericSysVarTypes[typ]
	if !mariaDB {
		numeric = isNumber(string(raw))
	}
	if numeric {
		if !isNumber(string(raw)) {
			return "", fmt.Errorf("value of type %s is not a number", typ)
		}
		return string(raw), nil
	}
	return "_utf8mb4 X'" + string(hexValue) + "'", nil
}

// userVarLiteral writes a user variable's value so that it keeps its type:
// integers and decimals as they are, doubles with an exponent, strings as
// hex literals with their character set and collation.
func userVarLiteral(mariaDB bool, u userVarRow, exact map[string]exactVal) (string, bool) {
	if u.isNull {
		return nullLiteral(mariaDB, u), true
	}
	if mariaDB {
		switch u.typ {
		case "INT", "DECIMAL":
			return string(u.value), isNumber(string(u.value))
		case "INT UNSIGNED":
			// A literal would be a signed integer: SET @id =
			// LAST_INSERT_ID() holds an unsigned one.
			if _, err := strconv.ParseUint(string(u.value), 10, 64); err != nil {
				return "", false
			}
			return "CAST(" + string(u.value) + " AS UNSIGNED)", true
		case "DOUBLE":
			v := string(u.value)
			if !isNumber(v) {
				return "", false
			}
			if !strings.ContainsAny(v, "eE") {
				v += "e0"
			}
			return v, true
		}
	}
	if e, ok := exact[u.name]; ok {
		if e.isNull {
			return nullLiteral(mariaDB, u), true
		}
		if !isIdentName(e.charset) || !isIdentName(e.collation) {
			return "", false
		}
		if !mariaDB && e.charset == "binary" {
			if raw, err := hex.DecodeString(e.hexValue); err == nil && isNumber(string(raw)) {
				return string(raw), true
			}
		}
		if e.charset == "binary" {
			return "X'" + e.hexValue + "'", true
		}
		return "_" + e.charset + " X'" + e.hexValue + "' COLLATE " + e.collation, true
	}
	if mariaDB || u.value == nil {
		return "", false
	}
	// MySQL without an exact read: performance_schema kept the bytes.
	raw, err := hex.DecodeString(string(u.value))
	if err != nil {
		return "", false
	}
	if isNumber(string(raw)) {
		return string(raw), true
	}
	if utf8.Valid(raw) {
		return "_utf8mb4 X'" + string(u.value) + "'", true
	}
	return "X'" + string(u.value) + "'", true
}

// nullLiteral writes a NULL user variable so that it keeps its type:
// MariaDB keeps the type of the last value when NULL is assigned
// (SET @n = 0; SET @n = NULL leaves an INT), and a plain NULL would be a
// binary string.
func nullLiteral(mariaDB bool, u userVarRow) string {
	if !mariaDB {
		return "NULL"
	}
	switch u.typ {
	case "INT":
		return "CAST(NULL AS SIGNED)"
	case "INT UNSIGNED":
		return "CAST(NULL AS UNSIGNED)"
	case "DECIMAL":
		return "CAST(NULL AS DECIMAL)"
	case "DOUBLE":
		return "CAST(NULL AS DOUBLE)"
	}
	if u.charset != "" && u.charset != "binary" && isIdentName(u.charset) {
		return "CAST(NULL AS CHAR CHARACTER SET " + u.charset + ")"
	}
	return "NULL"
}

// setStatement joins assignments into one SET statement.
func setStatement(as []assign) string {
	if len(as) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("SET ")
	for i, a := range as {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.target)
		b.WriteString(" = ")
		b.WriteString(a.value)
	}
	return b.String()
}

// Switch implements proxy.Session. It never waits for a busy session,
// which switches itself before its next command.
func (s *session) Switch(ctx context.Context, gen *creds.Generation) (proxy.SwitchResult, error) {
	if gen == nil {
		return proxy.SwitchDone, nil
	}
	if !s.mu.TryLock() {
		return proxy.SwitchBusy, nil
	}
	defer s.mu.Unlock()
	if s.closing {
		return proxy.SwitchDone, nil
	}
	return s.switchLocked(ctx, gen)
}

// switchLocked moves the session to a backend connection of gen if it is
// at a safe point. Callers hold mu, between commands.
func (s *session) switchLocked(ctx context.Context, gen *creds.Generation) (proxy.SwitchResult, error) {
	if gen == nil || s.be.gen >= gen.N {
		return proxy.SwitchDone, nil
	}
	if s.terminated.Load() {
		return proxy.SwitchBusy, nil
	}
	if !s.safePoint() {
		// MariaDB keeps IN_TRANS set from XA START to XA COMMIT, through
		// XA PREPARE: show such a session as pinned, not merely busy.
		if s.st.xa {
			s.setPin(PinXA)
			return proxy.SwitchPinned, nil
		}
		return proxy.SwitchBusy, nil
	}
	if s.pinThrottled() {
		return proxy.SwitchPinned, nil
	}
	if !s.retry.Ready(time.Now(), s.h.b.Newest(gen).N) {
		return proxy.SwitchBusy, nil // backing off after failed attempts
	}
	return s.performSwitch(ctx, gen)
}

// pinThrottled reports whether a pinned session past the drain deadline
// re-checked its pins less than a second ago.
func (s *session) pinThrottled() bool {
	return s.pin.Load() != nil && s.h.b.DrainOverdue() && time.Since(s.lastPinCheck) < pinRecheckPeriod
}

func (s *session) setPin(reason string) {
	if p := s.pin.Load(); p == nil || p.reason != reason {
		s.pin.Store(&pinState{reason: reason, since: time.Now()})
		s.log().Info("session pinned to its backend connection", zap.String("reason", reason))
	}
}

// performSwitch captures the session's state on its backend connection,
// replays it on a connection of gen and moves the session there.
func (s *session) performSwitch(ctx context.Context, gen *creds.Generation) (res proxy.SwitchResult, err error) {
	gen = s.h.b.Newest(gen)
	if s.be.gen >= gen.N {
		return proxy.SwitchDone, nil
	}
	start := time.Now()
	defer func() {
		s.h.b.CountSwitch(res, time.Since(start))
		s.retry.Record(time.Now(), gen.N, res, err)
		if err != nil {
			s.log().Warn("session switch failed", zap.Uint64("generation", gen.N), zap.Error(err))
		}
	}()
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > 10*time.Second {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	s.lastPinCheck = time.Now()
	if reason := s.st.localPin(); reason != "" {
		s.setPin(reason)
		return proxy.SwitchPinned, nil
	}
	if rp := s.replayPin; rp.name != "" && s.st.sqlPrep[rp.name] != "" && time.Since(rp.at) < replayPinPeriod {
		s.setPin(PinSQLPrepare)
		return proxy.SwitchPinned, nil
	}
	s.replayPin = replayPin{}
	old := s.be
	s.h.fault("capture")
	cs, err := s.capture(ctx, old)
	if err != nil {
		var me *myError
		if !errors.As(err, &me) {
			// The old connection failed: the session cannot go on.
			s.terminate(errorFor(proxy.Errorf(proxy.CodeBackendLost, err, "Lost connection to the database server")),
				proxy.CodeBackendLost, true)
		}
		return proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageCapture, Err: err}
	}
	if cs.pinReason != "" {
		s.setPin(cs.pinReason)
		return proxy.SwitchPinned, nil
	}
	s.pin.Store(nil)

	nb, _ := s.h.b.Pool.Get(s.key, gen.N).(*serverConn)
	if nb == nil {
		nb, err = s.h.dial(ctx, gen, s.params, s.key)
		if errors.Is(err, creds.ErrRejected) {
			// The credential may have changed again since gen was
			// adopted: look for a newer one and go there instead.
			if newer := s.h.b.Newest(gen); newer.N > gen.N {
				gen = newer
				nb, err = s.h.dial(ctx, gen, s.params, s.key)
			}
		}
		if err != nil {
			return proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageConnect, Err: fmt.Errorf("generation %d: %w", gen.N, err)}
		}
	}
	adopted := false
	defer func() {
		if !adopted { // failed or panicked before the session took it
			nb.Close()
		}
	}()
	s.h.fault("replay")
	if err := s.replay(ctx, nb, cs); err != nil {
		var up *unreplayablePrepare
		if errors.As(err, &up) {
			s.setPin(PinSQLPrepare)
			s.replayPin = replayPin{name: up.name, at: time.Now()}
			s.log().Info("session pinned: a SQL PREPARE cannot be run again on a new connection", zap.Error(err))
			return proxy.SwitchPinned, nil
		}
		return proxy.SwitchFailed, &proxy.SwitchError{Stage: proxy.StageReplay, Err: err}
	}
	adopted = true
	s.setBackend(nb)
	old.Close()
	s.log().Debug("session switched", zap.Uint64("generation", nb.gen), zap.Uint32("backend_thread", nb.thread),
		zap.Duration("took", time.Since(start)))
	return proxy.SwitchDone, nil
}

// maxPipeline is the largest replay sent as one batch; a larger one is
// sent command by command, so that neither side blocks writing while the
// other does too.
const maxPipeline = 64 << 10

// replay restores cs and the session's prepared statements on nb: the
// SET statement, the database, the MULTI_STATEMENTS option, SQL PREPAREs
// and protocol-level statements, pipelined in one round trip. Statements
// keep the ids the client knows; the first EXECUTE of each then carries
// the remembered parameter types.
func (s *session) replay(ctx context.Context, nb *serverConn, cs *capturedState) error {
	type cmd struct {
		req     []byte
		kind    respKind
		p       *stmt
		sqlName string // a SQL PREPARE
	}
	var cmds []cmd
	if set := setStatement(cs.assigns); set != "" {
		cmds = append(cmds, cmd{req: appendQuery(nil, nb.caps, set), kind: respQuery})
	}
	if s.st.multiStmts != s.st.initMulti {
		opt := []byte{1, 0} // MYSQL_OPTION_MULTI_STATEMENTS_OFF
		if s.st.multiStmts {
			opt = []byte{0, 0}
		}
		cmds = append(cmds, cmd{req: appendCommand(nil, comSetOption, opt), kind: respSingle})
	}
	// Statements resolve table names in the default database of the
	// moment they were prepared: prepare each in its own, then go to the
	// session's current one.
	db := s.params.database
	use := func(want string) {
		if want != dbUnknown && want != db && want != "" {
			cmds = append(cmds, cmd{req: appendCommand(nil, comInitDB, []byte(want)), kind: respSingle})
			db = want
		}
	}
	for _, name := range s.st.sqlPrepOrder {
		use(s.st.sqlPrepDB[name])
		cmds = append(cmds, cmd{req: appendQuery(nil, nb.caps, s.st.sqlPrep[name]), kind: respQuery, sqlName: name})
	}
	stmts := make([]*stmt, 0, len(s.st.stmts))
	for _, p := range s.st.stmts {
		stmts = append(stmts, p)
	}
	// In order of preparation, so that the last one is MariaDB's "last
	// prepared statement" (id 0xffffffff) again.
	slices.SortFunc(stmts, func(a, b *stmt) int { return cmp.Compare(a.order, b.order) })
	for _, p := range stmts {
		use(p.db)
		cmds = append(cmds, cmd{req: appendCommand(nil, comStmtPrepare, p.query), kind: respPrepare, p: p})
	}
	if cs.db != nil {
		use(*cs.db)
	}
	if len(cmds) == 0 {
		return nil
	}
	size := 0
	for _, c := range cmds {
		size += len(c.req)
	}
	batches := [][]cmd{cmds}
	if size > maxPipeline {
		batches = batches[:0]
		for _, c := range cmds {
			batches = append(batches, []cmd{c})
		}
	}
	newIDs := make(map[*stmt]uint32, len(stmts))
	var deferred []*stmt
	for _, batch := range batches {
		var req []byte
		kinds := make([]respKind, len(batch))
		for i, c := range batch {
			req = append(req, c.req...)
			kinds[i] = c.kind
		}
		res, err := exchange(ctx, nb, &s.h.bufs, req, kinds, nil)
		if err != nil {
			return err
		}
		for i, r := range res {
			if r.err != nil && batch[i].p != nil {
				// Its table or column is gone: prepare it on first use.
				deferred = append(deferred, batch[i].p)
				continue
			}
			if r.err != nil && batch[i].sqlName != "" {
				return &unreplayablePrepare{name: batch[i].sqlName, err: r.err}
			}
			if r.err != nil {
				return r.err
			}
			if p := batch[i].p; p != nil {
				if r.prepPars != p.params || r.prepCols != p.cols {
					s.log().Warn("prepared statement changed shape when prepared again",
						zap.Uint32("statement", p.clientID), zap.Uint16("params", r.prepPars), zap.Uint16("columns", r.prepCols))
				}
				newIDs[p] = r.prepID
			}
		}
	}
	for p, id := range newIDs {
		p.backendID = id
		p.needTypes = p.params > 0
		p.cursor, p.longData, p.deferred = false, false, false
	}
	for _, p := range deferred {
		p.backendID, p.deferred = 0, true
		p.cursor, p.longData = false, false
	}
	return nil
}

// unreplayablePrepare is a SQL PREPARE that failed on the new connection
// (its table is gone). Unlike a protocol-level statement it cannot be
// prepared on first use: the session stays pinned to its connection.
type unreplayablePrepare struct {
	name string
	err  error
}

func (e *unreplayablePrepare) Error() string {
	return "SQL prepared statement " + e.name + " cannot be prepared again: " + e.err.Error()
}

func (e *unreplayablePrepare) Unwrap() error { return e.err }

// replayPinPeriod is how long a session whose SQL PREPARE could not be
// replayed stays pinned before a switch tries again (unless the client
// deallocates the statement first).
const replayPinPeriod = 30 * time.Second

// prepareDeferred prepares the deferred statement p, which the command
// cmd in cbuf (n bytes, sequence seq) uses, on the session's backend
// connection. handled is set when the command was answered (or, without
// an answer, dropped) here: PREPARE failed, and the client gets the error
// MariaDB would have raised executing the statement; or cmd is
// COM_STMT_CLOSE, which has nothing to close on this connection.
func (s *session) prepareDeferred(ctx context.Context, p *stmt, cmd byte, n int, seq byte) (handled bool, err error) {
	if cmd == comStmtClose {
		delete(s.st.stmts, p.clientID)
		if s.st.lastPrepared == p {
			s.st.lastPrepared = nil
		}
		s.cbuf.Consume(4 + n)
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.h.b.ConnectTimeout())
	defer cancel()
	res, err := exchange(ctx, s.be, &s.h.bufs, appendCommand(nil, comStmtPrepare, p.query), []respKind{respPrepare}, nil)
	if err != nil {
		return true, backendLost(err)
	}
	if e := res[0].err; e != nil {
		if cmd == comStmtSendLongData { // no answer; the EXECUTE will fail
			_, err := s.skipPacket() // it streams: it may not have arrived whole
			return true, err
		}
		return true, s.refuse(n, seq, e)
	}
	p.backendID, p.deferred = res[0].prepID, false
	p.needTypes = p.params > 0
	return false, nil
}
