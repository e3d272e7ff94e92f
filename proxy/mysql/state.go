package mysql

import "time"

// Pin reasons, as shown in /v1/status and the pinned_sessions metric.
const (
	PinTempTable    = "temp_table"
	PinUserLock     = "user_lock"
	PinLockTables   = "lock_tables"
	PinXA           = "xa_transaction"
	PinCursor       = "open_cursor"
	PinHandler      = "handler"
	PinSQLPrepare   = "unreplayable_prepare"
	PinUserVariable = "user_variable"

	pinRecheckPeriod = time.Second
)

// maxTracked bounds the names (user variables, SQL statements, tables)
// one session remembers.
const maxTracked = 256

// stmt is a prepared statement of the session, by the id the client knows.
type stmt struct {
	clientID  uint32
	backendID uint32
	query     []byte // COM_STMT_PREPARE's text, to prepare it again
	params    uint16
	cols      uint16
	// types is the parameter-type block of the last COM_STMT_EXECUTE that
	// bound types (new_params_bound_flag = 1), for typesCount parameters.
	types      []byte
	typesCount uint64
	// needTypes is set when the statement was prepared again on a new
	// backend connection and no EXECUTE has bound types there yet: the
	// server would refuse an EXECUTE without them (1210).
	needTypes bool
	cursor    bool // a cursor is open
	longData  bool // COM_STMT_SEND_LONG_DATA sent since the last EXECUTE or RESET
	order     uint64
	// db is the default database the statement was prepared in (table
	// names resolve at prepare time), or dbUnknown.
	db string
	// deferred is set when a switch could not prepare the statement on
	// the new connection (its table or column is gone; MariaDB keeps such
	// a statement and only fails when it is executed): it is prepared on
	// first use (prepareDeferred), and backendID means nothing until then.
	deferred bool
}

// dbUnknown marks a statement prepared while the relay did not know the
// default database.
const dbUnknown = "\x00unknown"

// sessState is what the relay knows about a session's state beyond the
// status flags. The session's mu guards it.
type sessState struct {
	stmts        map[uint32]*stmt
	nextStmt     uint32
	lastPrepared *stmt // MariaDB's statement id 0xffffffff
	order        uint64

	// SQL PREPARE statements by name, with the text to replay; and the
	// names prepared in a query string together with other statements.
	sqlPrep      map[string]string
	sqlPrepDB    map[string]string
	sqlPrepOrder []string
	unreplayable map[string]bool

	// curDB is the default database as the relay follows it (the
	// handshake's, COM_INIT_DB, USE); dbKnown is false after a USE it could
	// not follow (in a failed multi-statement string).
	curDB   string
	dbKnown bool

	tempTables  map[string]bool // temporary tables created, by name
	locks       map[string]bool // GET_LOCK literals
	lockUnknown bool            // GET_LOCK of an expression
	lockTables  bool
	xa          bool
	handlers    map[string]bool
	userVars    map[string]bool

	// multiStmts is the MULTI_STATEMENTS option (COM_SET_OPTION) now;
	// initMulti what the handshake negotiated.
	multiStmts, initMulti bool
	// txnMaybeOpen is set when autocommit is off and a statement other
	// than COMMIT or ROLLBACK ran since the last one: MariaDB does not set
	// IN_TRANS for a plain SELECT, which still opens a snapshot.
	txnMaybeOpen bool
}

func (st *sessState) init(caps uint32, db string) {
	*st = sessState{
		stmts:     make(map[uint32]*stmt),
		initMulti: caps&capMultiStatements != 0,
		curDB:     db,
		dbKnown:   true,
	}
	st.multiStmts = st.initMulti
}

// db returns the database a statement prepared now resolves names in.
func (st *sessState) db() string {
	if !st.dbKnown {
		return dbUnknown
	}
	return st.curDB
}

// setDB records a change of the default database.
func (st *sessState) setDB(db string) { st.curDB, st.dbKnown = db, true }

// reset forgets everything COM_RESET_CONNECTION or COM_CHANGE_USER clears
// on the server.
func (st *sessState) reset() {
	next := st.nextStmt
	multi := st.initMulti
	db, known := st.curDB, st.dbKnown
	*st = sessState{stmts: make(map[uint32]*stmt), nextStmt: next, initMulti: multi, multiStmts: multi,
		curDB: db, dbKnown: known}
}

// pendingLongData reports whether a statement has long data waiting for
// its EXECUTE.
func (st *sessState) pendingLongData() bool {
	for _, p := range st.stmts {
		if p.longData {
			return true
		}
	}
	return false
}

// localPin returns the reason the session cannot move that the relay
// knows without asking the server, or "".
func (st *sessState) localPin() string {
	switch {
	case len(st.tempTables) > 0:
		return PinTempTable
	case st.lockTables:
		return PinLockTables
	case st.xa:
		return PinXA
	case st.lockUnknown:
		return PinUserLock
	case len(st.handlers) > 0:
		return PinHandler
	case len(st.unreplayable) > 0:
		return PinSQLPrepare
	}
	for _, p := range st.stmts {
		if p.cursor {
			return PinCursor
		}
	}
	return ""
}

// addUserVars remembers user variable names, so that capture reads them
// exactly.
func (st *sessState) addUserVars(names []string) {
	for _, n := range names {
		if st.userVars == nil {
			st.userVars = make(map[string]bool)
		}
		if !st.userVars[n] && len(st.userVars) < maxTracked {
			st.userVars[n] = true
		}
	}
}

// applyQuery records the effect of a query string after its response.
// ok means every statement succeeded. What adds state that pins is
// applied even after an error (an earlier statement of the string may have
// run); what removes it only after success.
func (st *sessState) applyQuery(in *sqlInfo, ok bool, status uint16) {
	st.addUserVars(in.userVars)
	single := in.stmts == 1
	if in.useSeen {
		if ok {
			st.setDB(in.use)
		} else if !single {
			st.dbKnown = false
		}
	}
	for _, name := range in.tempCreate {
		if ok || !single {
			if st.tempTables == nil {
				st.tempTables = make(map[string]bool)
			}
			st.tempTables[name] = true
		}
	}
	if ok {
		for _, name := range in.tableDrop {
			delete(st.tempTables, name)
		}
	}
	if in.lockTables && (ok || !single) {
		st.lockTables = true
	}
	if in.unlock && ok {
		st.lockTables = false
	}
	if in.xaStart && (ok || !single) {
		st.xa = true
	}
	if in.xaEnd && ok {
		st.xa = false
	}
	for _, name := range in.handlerOpn {
		if ok || !single {
			if st.handlers == nil {
				st.handlers = make(map[string]bool)
			}
			st.handlers[name] = true
		}
	}
	if ok {
		for _, name := range in.handlerCls {
			delete(st.handlers, name)
		}
	}
	for _, lit := range in.getLock {
		if st.locks == nil {
			st.locks = make(map[string]bool)
		}
		if len(st.locks) < maxTracked {
			st.locks[lit] = true
		} else {
			st.lockUnknown = true
		}
	}
	if in.lockExpr {
		st.lockUnknown = true
	}
	if in.relAll && ok {
		st.locks = nil
		st.lockUnknown = false
	}
	// RELEASE_LOCK literals stay tracked: capture asks the server whether
	// the lock is still held, which also covers a GET_LOCK that timed out.
	for _, p := range in.prepares {
		switch {
		case single && ok:
			st.setSQLPrepare(p.name, p.text, st.db())
		case single:
			// A failed PREPARE deallocates a statement of that name.
			st.dropSQLPrepare(p.name)
		default:
			if st.unreplayable == nil {
				st.unreplayable = make(map[string]bool)
			}
			st.unreplayable[p.name] = true
		}
	}
	if ok || !single {
		for _, name := range in.dealloc {
			if ok {
				st.dropSQLPrepare(name)
			}
		}
	}
	st.afterStatement(in.endTxn && !in.other && ok, status)
}

// afterStatement updates txnMaybeOpen after a statement ran; ended means
// it was COMMIT or ROLLBACK.
func (st *sessState) afterStatement(ended bool, status uint16) {
	switch {
	case status&statusAutocommit != 0 || ended:
		st.txnMaybeOpen = false
	default:
		st.txnMaybeOpen = true
	}
}

func (st *sessState) setSQLPrepare(name, text, db string) {
	delete(st.unreplayable, name)
	if st.sqlPrep == nil {
		st.sqlPrep = make(map[string]string)
		st.sqlPrepDB = make(map[string]string)
	}
	st.sqlPrepDB[name] = db
	if _, ok := st.sqlPrep[name]; !ok {
		if len(st.sqlPrep) >= maxTracked {
			if st.unreplayable == nil {
				st.unreplayable = make(map[string]bool)
			}
			st.unreplayable[name] = true
			return
		}
		st.sqlPrepOrder = append(st.sqlPrepOrder, name)
	}
	st.sqlPrep[name] = text
}

func (st *sessState) dropSQLPrepare(name string) {
	delete(st.unreplayable, name)
	if _, ok := st.sqlPrep[name]; !ok {
		return
	}
	delete(st.sqlPrep, name)
	delete(st.sqlPrepDB, name)
	for i, n := range st.sqlPrepOrder {
		if n == name {
			st.sqlPrepOrder = append(st.sqlPrepOrder[:i], st.sqlPrepOrder[i+1:]...)
			break
		}
	}
}
