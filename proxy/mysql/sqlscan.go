package mysql

import (
	"bytes"
	"strconv"
	"strings"
)

// The relay reads the text of COM_QUERY for the few statements whose
// effect on the session it must know: state that pins a session to its
// backend connection (temporary tables, GET_LOCK, LOCK TABLES, XA,
// HANDLER), SQL PREPARE (MariaDB lists such statements nowhere, so the
// proxy replays their text), KILL of a proxy connection id, the user
// variables a session uses (read exactly at capture time) and COMMIT or
// ROLLBACK. It is a lexer, not a parser: statements are recognized by
// their leading keywords, and anything it cannot follow errs on the side
// of pinning.

// tokKind is the kind of a lexical token.
type tokKind uint8

const (
	tokEOF     tokKind = iota
	tokWord            // keyword or unquoted identifier
	tokQuoted          // `identifier`
	tokString          // 'string' or "string"
	tokNumber          // 123, 1.5
	tokUserVar         // @name, @'name', @`name`
	tokSysVar          // @@name
	tokSemi            // ;
	tokPunct           // any other byte
)

type token struct {
	kind       tokKind
	start, end int // the token's bytes in the input
}

// lexer splits MySQL SQL into tokens, skipping comments. Executable
// comments (/*! ... */, /*M! ... */) are read as code: the server runs
// them.
type lexer struct {
	s   []byte
	pos int
	// inExec is set inside an executable comment, whose "*/" is skipped.
	inExec bool
}

func isIdentStart(c byte) bool {
	return c == '_' || c == '$' || 'a' <= c|0x20 && c|0x20 <= 'z' || c >= 0x80
}

func isIdentChar(c byte) bool { return isIdentStart(c) || '0' <= c && c <= '9' }

func isSpaceByte(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// skipSpace skips white space and comments.
func (l *lexer) skipSpace() {
	s := l.s
	for l.pos < len(s) {
		c := s[l.pos]
		switch {
		case isSpaceByte(c):
			l.pos++
		case c == '#':
			l.skipLine()
		case c == '-' && l.pos+2 < len(s) && s[l.pos+1] == '-' && (isSpaceByte(s[l.pos+2]) || s[l.pos+2] < 0x20):
			l.skipLine()
		case c == '-' && l.pos+2 == len(s) && s[l.pos+1] == '-':
			l.pos = len(s)
		case c == '/' && l.pos+1 < len(s) && s[l.pos+1] == '*':
			if l.pos+2 < len(s) && s[l.pos+2] == '!' || l.pos+3 < len(s) && s[l.pos+2] == 'M' && s[l.pos+3] == '!' {
				// Executable comment: skip the marker and the version
				// number, then lex the content.
				l.pos += 3
				if s[l.pos-1] == 'M' {
					l.pos++
				}
				for l.pos < len(s) && '0' <= s[l.pos] && s[l.pos] <= '9' {
					l.pos++
				}
				l.inExec = true
				continue
			}
			end := bytes.Index(s[l.pos+2:], []byte("*/"))
			if end < 0 {
				l.pos = len(s)
			} else {
				l.pos += 2 + end + 2
			}
		case c == '*' && l.inExec && l.pos+1 < len(s) && s[l.pos+1] == '/':
			l.inExec = false
			l.pos += 2
		default:
			return
		}
	}
}

func (l *lexer) skipLine() {
	for l.pos < len(l.s) && l.s[l.pos] != '\n' {
		l.pos++
	}
}

// skipQuoted skips a quoted string or identifier opened by q at l.pos.
// Backslash escapes apply to strings (conservatively also under
// NO_BACKSLASH_ESCAPES); a doubled quote is a quote.
func (l *lexer) skipQuoted(q byte) {
	s := l.s
	i := l.pos + 1
	for i < len(s) {
		switch c := s[i]; {
		case c == '\\' && q != '`':
			i += 2
		case c == q:
			if i+1 < len(s) && s[i+1] == q {
				i += 2
				continue
			}
			l.pos = i + 1
			return
		default:
			i++
		}
	}
	l.pos = len(s)
}

// next returns the next token.
func (l *lexer) next() token {
	l.skipSpace()
	s := l.s
	if l.pos >= len(s) {
		return token{kind: tokEOF, start: len(s), end: len(s)}
	}
	start := l.pos
	c := s[l.pos]
	switch {
	case c == ';':
		l.pos++
		return token{tokSemi, start, l.pos}
	case c == '\'' || c == '"':
		l.skipQuoted(c)
		return token{tokString, start, l.pos}
	case c == '`':
		l.skipQuoted(c)
		return token{tokQuoted, start, l.pos}
	case c == '@':
		l.pos++
		if l.pos < len(s) && s[l.pos] == '@' {
			l.pos++
			for l.pos < len(s) && (isIdentChar(s[l.pos]) || s[l.pos] == '.') {
				l.pos++
			}
			return token{tokSysVar, start, l.pos}
		}
		if l.pos < len(s) && (s[l.pos] == '\'' || s[l.pos] == '"' || s[l.pos] == '`') {
			l.skipQuoted(s[l.pos])
			return token{tokUserVar, start, l.pos}
		}
		for l.pos < len(s) && (isIdentChar(s[l.pos]) || s[l.pos] == '.') {
			l.pos++
		}
		return token{tokUserVar, start, l.pos}
	case '0' <= c && c <= '9':
		for l.pos < len(s) && (isIdentChar(s[l.pos]) || s[l.pos] == '.') {
			l.pos++
		}
		// 1abc is an identifier in MySQL; treat digits-only as a number.
		for i := start; i < l.pos; i++ {
			if !('0' <= s[i] && s[i] <= '9') {
				return token{tokWord, start, l.pos}
			}
		}
		return token{tokNumber, start, l.pos}
	case isIdentStart(c):
		for l.pos < len(s) && isIdentChar(s[l.pos]) {
			l.pos++
		}
		return token{tokWord, start, l.pos}
	}
	l.pos++
	return token{tokPunct, start, l.pos}
}

// is reports whether t is the keyword kw (upper case), ignoring case.
func (l *lexer) is(t token, kw string) bool {
	if t.kind != tokWord || t.end-t.start != len(kw) {
		return false
	}
	for i := 0; i < len(kw); i++ {
		c := l.s[t.start+i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != kw[i] {
			return false
		}
	}
	return true
}

// punct reports whether t is the single byte c.
func (l *lexer) punct(t token, c byte) bool {
	return t.kind == tokPunct && l.s[t.start] == c
}

// isIdent reports whether t can be an identifier: a word, a backquoted
// name or a double-quoted one. Double quotes make an identifier under
// sql_mode ANSI_QUOTES; where only an identifier is valid, a string there
// is a syntax error otherwise, so reading it as a name is right in both
// modes.
func (l *lexer) isIdent(t token) bool {
	return t.kind == tokWord || t.kind == tokQuoted || t.kind == tokString && l.s[t.start] == '"'
}

// ident returns an identifier token without quotes, as written.
func (l *lexer) ident(t token) string {
	b := l.s[t.start:t.end]
	if (t.kind == tokQuoted || t.kind == tokString && b[0] == '"') && len(b) >= 2 {
		q := b[0]
		b = bytes.ReplaceAll(b[1:len(b)-1], []byte{q, q}, []byte{q})
	}
	return string(b)
}

// name returns an identifier token as a lower-case name without quotes.
func (l *lexer) name(t token) string { return strings.ToLower(l.ident(t)) }

// userVarName returns the name of a user variable token, without @ and
// quotes, or "" for a quoted form it does not unquote exactly.
func (l *lexer) userVarName(t token) string {
	b := l.s[t.start+1 : t.end]
	if len(b) >= 2 && (b[0] == '\'' || b[0] == '"' || b[0] == '`') {
		q := b[0]
		inner := b[1 : len(b)-1]
		if bytes.IndexByte(inner, '\\') >= 0 {
			return ""
		}
		return string(bytes.ReplaceAll(inner, []byte{q, q}, []byte{q}))
	}
	return string(b)
}

// sqlInfo is what scanSQL found in one query string. Its slices are
// reused from query to query by the session that owns it.
type sqlInfo struct {
	// stmts counts the statements.
	stmts int
	// kill is set for a query that is exactly one KILL [CONNECTION|QUERY] n.
	kill      bool
	killQuery bool
	killID    uint64

	tempCreate []string // CREATE TEMPORARY TABLE (or SEQUENCE) names
	tableDrop  []string // DROP [TEMPORARY] TABLE (or SEQUENCE) names
	lockTables bool     // LOCK TABLE(S)
	unlock     bool     // UNLOCK TABLE(S)
	xaStart    bool     // XA START / XA BEGIN
	xaEnd      bool     // XA COMMIT / XA ROLLBACK
	handlerOpn []string // HANDLER t OPEN [AS alias]: the handler names
	handlerCls []string // HANDLER t CLOSE
	prepares   []sqlPrepare
	dealloc    []string // DEALLOCATE / DROP PREPARE names
	getLock    []string // GET_LOCK literal arguments, as written
	lockExpr   bool     // GET_LOCK with an argument that is not a literal
	relLock    []string // RELEASE_LOCK literal arguments
	relAll     bool     // RELEASE_ALL_LOCKS()
	userVars   []string // user variable names referenced
	use        string   // the database of the last USE statement
	useSeen    bool
	endTxn     bool // a COMMIT or ROLLBACK statement (not to a savepoint)
	other      bool // some statement that is neither COMMIT nor ROLLBACK
}

// sqlPrepare is one SQL PREPARE statement.
type sqlPrepare struct {
	name string // lower case
	text string // the whole statement, to replay
}

func (in *sqlInfo) reset() {
	*in = sqlInfo{
		tempCreate: in.tempCreate[:0],
		tableDrop:  in.tableDrop[:0],
		handlerOpn: in.handlerOpn[:0],
		handlerCls: in.handlerCls[:0],
		prepares:   in.prepares[:0],
		dealloc:    in.dealloc[:0],
		getLock:    in.getLock[:0],
		relLock:    in.relLock[:0],
		userVars:   in.userVars[:0],
	}
}

// scanSQL fills in from the query text q.
func scanSQL(q []byte, in *sqlInfo) {
	in.reset()
	l := lexer{s: q}
	for {
		t := l.next()
		if t.kind == tokEOF {
			return
		}
		if t.kind == tokSemi {
			continue
		}
		in.stmts++
		start, exec := t.start, l.inExec
		end := l.statement(t, in)
		classify(q[start:end], exec, in)
	}
}

// statement scans the rest of a statement starting with first for
// lock functions and user variables, and returns where the statement ends.
func (l *lexer) statement(first token, in *sqlInfo) int {
	var prev token
	t := first
	end := t.end
	for {
		switch {
		case t.kind == tokUserVar:
			if name := l.userVarName(t); name != "" {
				in.userVars = append(in.userVars, name)
			}
		case l.punct(t, '(') && prev.kind == tokWord:
			switch {
			case l.is(prev, "GET_LOCK"), l.is(prev, "RELEASE_LOCK"):
				get := l.is(prev, "GET_LOCK")
				// The capture query checks a lock by its literal as written:
				// only one complete string followed by ',' or ')' names it
				// (not 'a' 'b', 'a' COLLATE c, or a string left open).
				arg := l.next()
				if arg.kind == tokString {
					after := l.next()
					switch {
					case !l.punct(after, ',') && !l.punct(after, ')'):
						in.lockExpr = in.lockExpr || get
					case get:
						in.getLock = append(in.getLock, string(l.s[arg.start:arg.end]))
					default:
						in.relLock = append(in.relLock, string(l.s[arg.start:arg.end]))
					}
					end, prev, t = arg.end, arg, after
				} else {
					// Go on with the argument: it may be a user variable.
					in.lockExpr = in.lockExpr || get
					end, prev, t = t.end, t, arg
				}
				if t.kind == tokEOF || t.kind == tokSemi {
					return end
				}
				continue
			case l.is(prev, "RELEASE_ALL_LOCKS"):
				in.relAll = true
			}
		}
		end = t.end
		prev = t
		t = l.next()
		if t.kind == tokEOF || t.kind == tokSemi {
			return end
		}
	}
}

// classify looks at the leading keywords of one statement; inExec says
// it starts inside an executable comment.
func classify(stmt []byte, inExec bool, in *sqlInfo) {
	sl := lexer{s: stmt, inExec: inExec}
	// Enough for CREATE OR REPLACE TEMPORARY TABLE IF NOT EXISTS db . t.
	w := [12]token{}
	n := 0
	for n < len(w) {
		t := sl.next()
		if t.kind == tokEOF {
			break
		}
		w[n] = t
		n++
	}
	kw := func(i int, k string) bool { return i < n && sl.is(w[i], k) }
	switch {
	case kw(0, "COMMIT"), kw(0, "ROLLBACK") && !sl.rollbackTo(w[:n]):
		in.endTxn = true
		return
	}
	in.other = true
	switch {
	case kw(0, "CREATE"):
		i := 1
		if kw(i, "OR") && kw(i+1, "REPLACE") {
			i += 2
		}
		// MariaDB's temporary sequences are temporary tables too.
		if kw(i, "TEMPORARY") && (kw(i+1, "TABLE") || kw(i+1, "SEQUENCE")) {
			if name, ok := sl.tableName(stmt, w[:n], i+2, true); ok {
				in.tempCreate = append(in.tempCreate, name)
			} else {
				in.tempCreate = append(in.tempCreate, "")
			}
		}
	case kw(0, "DROP"):
		i := 1
		if kw(i, "TEMPORARY") {
			i++
		}
		if kw(i, "TABLE") || kw(i, "TABLES") || kw(i, "SEQUENCE") {
			sl.tableList(stmt, w[:n], i+1, in)
		}
		if kw(1, "PREPARE") && n > 2 {
			in.dealloc = append(in.dealloc, sl.name(w[2]))
		}
	case kw(0, "DEALLOCATE") && kw(1, "PREPARE") && n > 2:
		in.dealloc = append(in.dealloc, sl.name(w[2]))
	case kw(0, "PREPARE") && n > 1 && sl.isIdent(w[1]):
		in.prepares = append(in.prepares, sqlPrepare{name: sl.name(w[1]), text: string(stmt)})
	case kw(0, "LOCK") && (kw(1, "TABLE") || kw(1, "TABLES")):
		in.lockTables = true
	case kw(0, "UNLOCK") && (kw(1, "TABLE") || kw(1, "TABLES")):
		in.unlock = true
	case kw(0, "XA"):
		switch {
		case kw(1, "START"), kw(1, "BEGIN"):
			in.xaStart = true
		case kw(1, "COMMIT"), kw(1, "ROLLBACK"):
			in.xaEnd = true
		}
	case kw(0, "HANDLER") && n > 2:
		// HANDLER [db.]t OPEN [[AS] alias]; HANDLER [db.]name CLOSE.
		name, i := sl.name(w[1]), 2
		if n > 3 && sl.punct(w[2], '.') && sl.isIdent(w[3]) {
			name, i = sl.name(w[3]), 4
		}
		switch {
		case kw(i, "OPEN"):
			if kw(i+1, "AS") && n > i+2 {
				name = sl.name(w[i+2])
			} else if n > i+1 && sl.isIdent(w[i+1]) {
				name = sl.name(w[i+1])
			}
			in.handlerOpn = append(in.handlerOpn, name)
		case kw(i, "CLOSE"):
			in.handlerCls = append(in.handlerCls, name)
		}
	case kw(0, "KILL"):
		sl.kill(w[:n], in)
	case kw(0, "USE") && n > 1 && sl.isIdent(w[1]):
		// Database names are case-sensitive: kept as written.
		in.use, in.useSeen = sl.ident(w[1]), true
	}
}

// rollbackTo reports a ROLLBACK [WORK] TO [SAVEPOINT] x, which ends no
// transaction.
func (l *lexer) rollbackTo(w []token) bool {
	for _, t := range w[1:] {
		if l.is(t, "TO") {
			return true
		}
	}
	return false
}

// kill recognizes KILL [HARD|SOFT] [CONNECTION|QUERY] n (not QUERY ID n,
// not USER u) as the only statement of the query.
func (l *lexer) kill(w []token, in *sqlInfo) {
	i := 1
	if i < len(w) && (l.is(w[i], "HARD") || l.is(w[i], "SOFT")) {
		i++
	}
	query := false
	switch {
	case i < len(w) && l.is(w[i], "CONNECTION"):
		i++
	case i < len(w) && l.is(w[i], "QUERY"):
		query = true
		i++
	}
	if i != len(w)-1 || w[i].kind != tokNumber {
		return
	}
	id, err := strconv.ParseUint(string(l.s[w[i].start:w[i].end]), 10, 32)
	if err != nil {
		return
	}
	in.kill, in.killQuery, in.killID = true, query, id
}

// tableName reads the (possibly qualified) table name at w[i], skipping
// IF NOT EXISTS, and returns its last part in lower case.
func (l *lexer) tableName(stmt []byte, w []token, i int, ifNotExists bool) (string, bool) {
	if ifNotExists && i+2 < len(w) && l.is(w[i], "IF") && l.is(w[i+1], "NOT") && l.is(w[i+2], "EXISTS") {
		i += 3
	}
	if i >= len(w) || !l.isIdent(w[i]) {
		return "", false
	}
	name := l.name(w[i])
	if i+2 < len(w) && l.punct(w[i+1], '.') && l.isIdent(w[i+2]) {
		name = l.name(w[i+2])
	}
	return name, true
}

// tableList reads the table names of DROP [TEMPORARY] TABLE [IF EXISTS]
// a, b, ...; the statement is lexed again from w[i] to its end.
func (l *lexer) tableList(stmt []byte, w []token, i int, in *sqlInfo) {
	if i+1 < len(w) && l.is(w[i], "IF") && l.is(w[i+1], "EXISTS") {
		i += 2
	}
	if i >= len(w) {
		return
	}
	sl := lexer{s: stmt, pos: w[i].start}
	var last string
	want := true // a name may come: first, after ',' or '.'
	for {
		t := sl.next()
		switch {
		case want && sl.isIdent(t):
			last, want = sl.name(t), false
		case sl.punct(t, '.'):
			want = true
		case sl.punct(t, ','):
			if last != "" {
				in.tableDrop = append(in.tableDrop, last)
			}
			last, want = "", true
		default: // the end, RESTRICT, CASCADE, WAIT n, NOWAIT
			if last != "" {
				in.tableDrop = append(in.tableDrop, last)
			}
			return
		}
	}
}
