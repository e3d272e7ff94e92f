package mysql

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
)

// tok is a token as the tests write it: kind and text.
type tok struct {
	kind tokKind
	text string
}

func lexAll(s string) []tok {
	l := lexer{s: []byte(s)}
	var out []tok
	for {
		t := l.next()
		if t.kind == tokEOF {
			return out
		}
		out = append(out, tok{t.kind, s[t.start:t.end]})
	}
}

func TestLexerTokens(t *testing.T) {
	W := func(s string) tok { return tok{tokWord, s} }
	Q := func(s string) tok { return tok{tokQuoted, s} }
	S := func(s string) tok { return tok{tokString, s} }
	N := func(s string) tok { return tok{tokNumber, s} }
	U := func(s string) tok { return tok{tokUserVar, s} }
	V := func(s string) tok { return tok{tokSysVar, s} }
	P := func(s string) tok { return tok{tokPunct, s} }
	semi := tok{tokSemi, ";"}
	tests := []struct {
		in   string
		want []tok
	}{
		{"", nil},
		{"  \t\r\n\f\v ", nil},
		{"SELECT 1", []tok{W("SELECT"), N("1")}},
		{"select a_b$c, é FROM t", []tok{W("select"), W("a_b$c"), P(","), W("é"), W("FROM"), W("t")}},
		{"1abc 12 1.5 0x1F", []tok{W("1abc"), N("12"), W("1.5"), W("0x1F")}},
		// Comments.
		{"/* c */ SELECT /* d */ 1", []tok{W("SELECT"), N("1")}},
		{"/* unterminated SELECT 1", nil},
		{"/**/x/***/y", []tok{W("x"), W("y")}},
		{"# comment\nSELECT 1 # to end", []tok{W("SELECT"), N("1")}},
		{"-- comment\nSELECT 1 -- to end", []tok{W("SELECT"), N("1")}},
		{"SELECT 1 --\tx\n2", []tok{W("SELECT"), N("1"), N("2")}},
		{"SELECT 1 --", []tok{W("SELECT"), N("1")}},
		{"SELECT 1--1", []tok{W("SELECT"), N("1"), P("-"), P("-"), N("1")}},
		{"SELECT 1 --x", []tok{W("SELECT"), N("1"), P("-"), P("-"), W("x")}},
		{"SELECT 1 -", []tok{W("SELECT"), N("1"), P("-")}},
		// Executable comments are code; the version number is skipped.
		{"/*!40101 SET NAMES utf8 */;", []tok{W("SET"), W("NAMES"), W("utf8"), semi}},
		{"/*! LOCK TABLES t */", []tok{W("LOCK"), W("TABLES"), W("t")}},
		{"/*M!100100 x */ y", []tok{W("x"), W("y")}},
		{"/*!x /* inner */ y */ z", []tok{W("x"), W("y"), W("z")}},
		{"/*!", nil},
		{"/*M!", nil},
		{"/*M", nil},
		{"a */ b", []tok{W("a"), P("*"), P("/"), W("b")}},
		{"/*+ hint */ x", []tok{W("x")}},
		// Strings and quoted identifiers.
		{`'it''s' "a\"b" 'c\\' 'd`, []tok{S(`'it''s'`), S(`"a\"b"`), S(`'c\\'`), S(`'d`)}},
		{`'a\`, []tok{S(`'a\`)}},
		{"`a``b` `c\\` d", []tok{Q("`a``b`"), Q("`c\\`"), W("d")}},
		{"'/* no comment */' \"-- x\" '#'", []tok{S("'/* no comment */'"), S(`"-- x"`), S("'#'")}},
		{"'a;b';c", []tok{S("'a;b'"), semi, W("c")}},
		// Variables.
		{"@a @a.b @'x y' @\"q\" @`b` @ @@x @@session.sql_mode @@", []tok{
			U("@a"), U("@a.b"), U("@'x y'"), U(`@"q"`), U("@`b`"), U("@"), V("@@x"), V("@@session.sql_mode"), V("@@"),
		}},
		{"@a:=1", []tok{U("@a"), P(":"), P("="), N("1")}},
		{"a;;b", []tok{W("a"), semi, semi, W("b")}},
	}
	for _, tt := range tests {
		if got := lexAll(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("lex %q:\n got %v\nwant %v", tt.in, got, tt.want)
		}
	}
}

func TestLexerHelpers(t *testing.T) {
	l := lexer{s: []byte("Get_Lock `My``Tbl` DB1 x")}
	get, q, db, x := l.next(), l.next(), l.next(), l.next()
	if !l.is(get, "GET_LOCK") || l.is(get, "GET_LOC") || l.is(q, "MY`TBL") || l.is(x, "Y") {
		t.Error("is: wrong answer")
	}
	if got := l.name(q); got != "my`tbl" {
		t.Errorf("name(quoted) = %q", got)
	}
	if got := l.name(db); got != "db1" {
		t.Errorf("name(word) = %q", got)
	}
	for in, want := range map[string]string{
		"@abc": "abc", "@'a b'": "a b", `@"a""b"`: `a"b`, "@`a``b`": "a`b", `@'a\'b'`: "",
		"@a.b": "a.b", "@''": "",
	} {
		l := lexer{s: []byte(in)}
		if got := l.userVarName(l.next()); got != want {
			t.Errorf("userVarName(%s) = %q, want %q", in, got, want)
		}
	}
}

// norm returns in with empty slices as nil, for comparison.
func norm(in sqlInfo) sqlInfo {
	in.tempCreate, in.tableDrop = nilIfEmpty(in.tempCreate), nilIfEmpty(in.tableDrop)
	in.handlerOpn, in.handlerCls = nilIfEmpty(in.handlerOpn), nilIfEmpty(in.handlerCls)
	in.prepares, in.dealloc = nilIfEmpty(in.prepares), nilIfEmpty(in.dealloc)
	in.getLock, in.relLock = nilIfEmpty(in.getLock), nilIfEmpty(in.relLock)
	in.userVars = nilIfEmpty(in.userVars)
	return in
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

func TestScanSQL(t *testing.T) {
	tests := []struct {
		q    string
		want sqlInfo
	}{
		{"", sqlInfo{}},
		{" ; ;; -- nothing\n", sqlInfo{}},
		{"/* only a comment */", sqlInfo{}},
		{"SELECT 1", sqlInfo{stmts: 1, other: true}},
		{"select 1; SELECT 2;", sqlInfo{stmts: 2, other: true}},

		// Transactions.
		{"COMMIT", sqlInfo{stmts: 1, endTxn: true}},
		{"commit work", sqlInfo{stmts: 1, endTxn: true}},
		{"ROLLBACK", sqlInfo{stmts: 1, endTxn: true}},
		{"Rollback Work", sqlInfo{stmts: 1, endTxn: true}},
		{"ROLLBACK TO SAVEPOINT s", sqlInfo{stmts: 1, other: true}},
		{"ROLLBACK WORK TO s", sqlInfo{stmts: 1, other: true}},
		{"/* x */ COMMIT /* y */;", sqlInfo{stmts: 1, endTxn: true}},
		{"/*!COMMIT*/", sqlInfo{stmts: 1, endTxn: true}},
		{"BEGIN; INSERT INTO t VALUES (1); COMMIT", sqlInfo{stmts: 3, endTxn: true, other: true}},
		{"SELECT 'COMMIT'", sqlInfo{stmts: 1, other: true}},
		{"XA COMMIT 'x'", sqlInfo{stmts: 1, other: true, xaEnd: true}},

		// Temporary tables.
		{"CREATE TEMPORARY TABLE t (a int)", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"create temporary table T(a int)", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"CREATE OR REPLACE TEMPORARY TABLE `My``T` LIKE u", sqlInfo{stmts: 1, other: true, tempCreate: []string{"my`t"}}},
		{"CREATE TEMPORARY TABLE IF NOT EXISTS t (a int)", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"CREATE TEMPORARY TABLE db.t AS SELECT 1", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"CREATE TEMPORARY TABLE `db`.`t` SELECT 1", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"CREATE TEMPORARY TABLE IF NOT EXISTS db.t (a int)", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"CREATE TEMPORARY TABLE IF NOT EXISTS `db` . `t` (a int)", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"CREATE /*!32312 TEMPORARY */ TABLE t (a int)", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"/*!40000 CREATE TEMPORARY TABLE t (a int) */", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"/*!40000 CREATE TEMPORARY TABLE */ t (a int)", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"/*M!100000 CREATE TEMPORARY */ TABLE t (a int)", sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{"CREATE TEMPORARY TABLE", sqlInfo{stmts: 1, other: true, tempCreate: []string{""}}},
		{"CREATE TEMPORARY TABLE 'x' (a int)", sqlInfo{stmts: 1, other: true, tempCreate: []string{""}}},
		{"CREATE TABLE temporary (a int)", sqlInfo{stmts: 1, other: true}},
		{"CREATE TABLE t (temporary int)", sqlInfo{stmts: 1, other: true}},
		{"SELECT temporary FROM t", sqlInfo{stmts: 1, other: true}},
		{"SELECT 'CREATE TEMPORARY TABLE t'", sqlInfo{stmts: 1, other: true}},
		{"CREATE TEMPORARY TABLE t1 (a int); CREATE TEMPORARY TABLE t2 (a int)",
			sqlInfo{stmts: 2, other: true, tempCreate: []string{"t1", "t2"}}},
		{"DROP TEMPORARY TABLE t", sqlInfo{stmts: 1, other: true, tableDrop: []string{"t"}}},
		{"DROP TABLE IF EXISTS a, db.b, `c``d` RESTRICT", sqlInfo{stmts: 1, other: true, tableDrop: []string{"a", "b", "c`d"}}},
		{"drop tables A,B;", sqlInfo{stmts: 1, other: true, tableDrop: []string{"a", "b"}}},
		{"DROP TEMPORARY TABLE IF EXISTS t /* c */ CASCADE", sqlInfo{stmts: 1, other: true, tableDrop: []string{"t"}}},
		{"DROP TABLE t WAIT 5", sqlInfo{stmts: 1, other: true, tableDrop: []string{"t"}}},
		{"DROP TABLE t NOWAIT", sqlInfo{stmts: 1, other: true, tableDrop: []string{"t"}}},
		{"DROP TABLE", sqlInfo{stmts: 1, other: true}},
		{"CREATE TEMPORARY SEQUENCE IF NOT EXISTS db.s START WITH 5", sqlInfo{stmts: 1, other: true, tempCreate: []string{"s"}}},
		{"DROP TEMPORARY SEQUENCE IF EXISTS s", sqlInfo{stmts: 1, other: true, tableDrop: []string{"s"}}},
		{"CREATE SEQUENCE s", sqlInfo{stmts: 1, other: true}},
		{"DROP DATABASE d", sqlInfo{stmts: 1, other: true}},
		{"DROP VIEW v", sqlInfo{stmts: 1, other: true}},

		// Locking functions.
		{"SELECT GET_LOCK('a', 10)", sqlInfo{stmts: 1, other: true, getLock: []string{"'a'"}}},
		{"do get_lock ( \"b\" , 0 ), Release_Lock('c')",
			sqlInfo{stmts: 1, other: true, getLock: []string{`"b"`}, relLock: []string{"'c'"}}},
		{"SELECT GET_LOCK('it''s', 1)", sqlInfo{stmts: 1, other: true, getLock: []string{"'it''s'"}}},
		{"SELECT GET_LOCK(/* c */'a'/* d */, 1)", sqlInfo{stmts: 1, other: true, getLock: []string{"'a'"}}},
		{"SELECT GET_LOCK(CONCAT('a', 'b'), 1)", sqlInfo{stmts: 1, other: true, lockExpr: true}},
		{"SELECT GET_LOCK(@name, 1)", sqlInfo{stmts: 1, other: true, lockExpr: true, userVars: []string{"name"}}},
		{"SELECT GET_LOCK(?, 1)", sqlInfo{stmts: 1, other: true, lockExpr: true}},
		{"SELECT GET_LOCK(_utf8mb4'a', 1)", sqlInfo{stmts: 1, other: true, lockExpr: true}},
		// Adjacent literals are concatenated: the lock is 'ab', not 'a'.
		{"SELECT GET_LOCK('a' 'b', 1)", sqlInfo{stmts: 1, other: true, lockExpr: true}},
		{"SELECT GET_LOCK('a' COLLATE utf8mb4_bin, 1)", sqlInfo{stmts: 1, other: true, lockExpr: true}},
		// An unterminated literal is no lock name to put in the capture query.
		{"SELECT GET_LOCK('a", sqlInfo{stmts: 1, other: true, lockExpr: true}},
		{"SELECT GET_LOCK('a\\', 1)", sqlInfo{stmts: 1, other: true, lockExpr: true}},
		{"SELECT GET_LOCK(", sqlInfo{stmts: 1, other: true, lockExpr: true}},
		{"SELECT GET_LOCK(;SELECT 1", sqlInfo{stmts: 2, other: true, lockExpr: true}},
		{"SELECT RELEASE_LOCK('a'), RELEASE_LOCK(@x)",
			sqlInfo{stmts: 1, other: true, relLock: []string{"'a'"}, userVars: []string{"x"}}},
		{"SELECT RELEASE_ALL_LOCKS()", sqlInfo{stmts: 1, other: true, relAll: true}},
		{"SELECT 'GET_LOCK(''a'', 1)', `GET_LOCK`", sqlInfo{stmts: 1, other: true}},
		{"SELECT GET_LOCK", sqlInfo{stmts: 1, other: true}},
		{"SELECT IS_USED_LOCK('a'), GET_LOCKS('b')", sqlInfo{stmts: 1, other: true}},
		{"SELECT 1; SELECT GET_LOCK('a', 1); SELECT GET_LOCK('b', 1)",
			sqlInfo{stmts: 3, other: true, getLock: []string{"'a'", "'b'"}}},

		// LOCK TABLES.
		{"LOCK TABLES t READ", sqlInfo{stmts: 1, other: true, lockTables: true}},
		{"lock table t write", sqlInfo{stmts: 1, other: true, lockTables: true}},
		{"UNLOCK TABLES", sqlInfo{stmts: 1, other: true, unlock: true}},
		{"unlock table", sqlInfo{stmts: 1, other: true, unlock: true}},
		{"SELECT 'LOCK TABLES'", sqlInfo{stmts: 1, other: true}},
		{"SELECT 1 -- ; LOCK TABLES t READ", sqlInfo{stmts: 1, other: true}},
		{"SELECT 1 # ; LOCK TABLES t READ\n; UNLOCK TABLES", sqlInfo{stmts: 2, other: true, unlock: true}},
		{"SELECT 1 /* ; LOCK TABLES t READ */", sqlInfo{stmts: 1, other: true}},
		{"SELECT 1 /*! ; LOCK TABLES t READ */", sqlInfo{stmts: 2, other: true, lockTables: true}},
		{"SELECT 1 /*M!100000 ; LOCK TABLES t READ */", sqlInfo{stmts: 2, other: true, lockTables: true}},
		{"LOCK INSTANCE FOR BACKUP", sqlInfo{stmts: 1, other: true}},
		{"SELECT * FROM `lock` WHERE tables = 1", sqlInfo{stmts: 1, other: true}},

		// XA.
		{"XA START 'x'", sqlInfo{stmts: 1, other: true, xaStart: true}},
		{"xa begin 'x'", sqlInfo{stmts: 1, other: true, xaStart: true}},
		{"XA END 'x'", sqlInfo{stmts: 1, other: true}},
		{"XA PREPARE 'x'", sqlInfo{stmts: 1, other: true}},
		{"XA ROLLBACK 'x'", sqlInfo{stmts: 1, other: true, xaEnd: true}},
		{"XA RECOVER", sqlInfo{stmts: 1, other: true}},

		// HANDLER.
		{"HANDLER t OPEN", sqlInfo{stmts: 1, other: true, handlerOpn: []string{"t"}}},
		{"HANDLER T OPEN AS H", sqlInfo{stmts: 1, other: true, handlerOpn: []string{"h"}}},
		{"HANDLER t OPEN h", sqlInfo{stmts: 1, other: true, handlerOpn: []string{"h"}}},
		{"HANDLER `t` OPEN AS `h h`", sqlInfo{stmts: 1, other: true, handlerOpn: []string{"h h"}}},
		{"HANDLER db.t OPEN", sqlInfo{stmts: 1, other: true, handlerOpn: []string{"t"}}},
		{"HANDLER `db`.`t` OPEN AS h", sqlInfo{stmts: 1, other: true, handlerOpn: []string{"h"}}},
		{"HANDLER h READ FIRST", sqlInfo{stmts: 1, other: true}},
		{"HANDLER h CLOSE", sqlInfo{stmts: 1, other: true, handlerCls: []string{"h"}}},
		{"HANDLER `H` CLOSE", sqlInfo{stmts: 1, other: true, handlerCls: []string{"h"}}},
		{"HANDLER t", sqlInfo{stmts: 1, other: true}},

		// SQL PREPARE.
		{"PREPARE s FROM 'SELECT ?'", sqlInfo{stmts: 1, other: true,
			prepares: []sqlPrepare{{"s", "PREPARE s FROM 'SELECT ?'"}}}},
		{"  prepare `S 1` from @q ; ", sqlInfo{stmts: 1, other: true, userVars: []string{"q"},
			prepares: []sqlPrepare{{"s 1", "prepare `S 1` from @q"}}}},
		{"PREPARE s FROM 'a'; PREPARE t FROM 'b'", sqlInfo{stmts: 2, other: true,
			prepares: []sqlPrepare{{"s", "PREPARE s FROM 'a'"}, {"t", "PREPARE t FROM 'b'"}}}},
		{"PREPARE 's' FROM 'a'", sqlInfo{stmts: 1, other: true}},
		{"PREPARE", sqlInfo{stmts: 1, other: true}},
		{"DEALLOCATE PREPARE S", sqlInfo{stmts: 1, other: true, dealloc: []string{"s"}}},
		{"drop prepare `s`", sqlInfo{stmts: 1, other: true, dealloc: []string{"s"}}},
		{"DEALLOCATE PREPARE", sqlInfo{stmts: 1, other: true}},
		{"EXECUTE s USING @a, @b", sqlInfo{stmts: 1, other: true, userVars: []string{"a", "b"}}},

		// KILL.
		{"KILL 42", sqlInfo{stmts: 1, other: true, kill: true, killID: 42}},
		{"kill connection 42;", sqlInfo{stmts: 1, other: true, kill: true, killID: 42}},
		{"KILL QUERY 7", sqlInfo{stmts: 1, other: true, kill: true, killQuery: true, killID: 7}},
		{"KILL HARD QUERY 7", sqlInfo{stmts: 1, other: true, kill: true, killQuery: true, killID: 7}},
		{"KILL SOFT CONNECTION 7", sqlInfo{stmts: 1, other: true, kill: true, killID: 7}},
		{"/* x */ KILL /* y */ 7 -- z", sqlInfo{stmts: 1, other: true, kill: true, killID: 7}},
		{"KILL 4294967295", sqlInfo{stmts: 1, other: true, kill: true, killID: math.MaxUint32}},
		{"KILL 4294967296", sqlInfo{stmts: 1, other: true}},
		{"KILL QUERY ID 7", sqlInfo{stmts: 1, other: true}},
		{"KILL USER u", sqlInfo{stmts: 1, other: true}},
		{"KILL 7 8", sqlInfo{stmts: 1, other: true}},
		{"KILL", sqlInfo{stmts: 1, other: true}},
		{"KILL 1.5", sqlInfo{stmts: 1, other: true}},
		{"KILL (7)", sqlInfo{stmts: 1, other: true}},
		{"KILL '7'", sqlInfo{stmts: 1, other: true}},
		{"SELECT 1; KILL 7", sqlInfo{stmts: 2, other: true, kill: true, killID: 7}},

		// USE: database names are case-sensitive and kept as written.
		{"USE d", sqlInfo{stmts: 1, other: true, use: "d", useSeen: true}},
		{"use MyDB;", sqlInfo{stmts: 1, other: true, use: "MyDB", useSeen: true}},
		{"USE `My``DB`", sqlInfo{stmts: 1, other: true, use: "My`DB", useSeen: true}},
		{"USE a; USE b", sqlInfo{stmts: 2, other: true, use: "b", useSeen: true}},
		{"USE", sqlInfo{stmts: 1, other: true}},
		{"USE 'd'", sqlInfo{stmts: 1, other: true}},
		{"SELECT * FROM t USE INDEX (i)", sqlInfo{stmts: 1, other: true}},

		// User variables.
		{"SET @a = 1, @B := 2", sqlInfo{stmts: 1, other: true, userVars: []string{"a", "B"}}},
		{"SELECT @`x``y`, @'s t', @\"u\", @@sql_mode, @@session.autocommit", sqlInfo{stmts: 1, other: true,
			userVars: []string{"x`y", "s t", "u"}}},
		{"SELECT '@a', `@b`, \"@c\" -- @d\n/* @e */", sqlInfo{stmts: 1, other: true}},
		{"SELECT @'a\\'b'", sqlInfo{stmts: 1, other: true}},
		{"SELECT @", sqlInfo{stmts: 1, other: true}},
		{"SELECT @x INTO @y", sqlInfo{stmts: 1, other: true, userVars: []string{"x", "y"}}},
		{"SELECT a@b", sqlInfo{stmts: 1, other: true, userVars: []string{"b"}}},
	}
	var in sqlInfo
	for _, tt := range tests {
		scanSQL([]byte(tt.q), &in) // reused, as a session does
		if got := norm(in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("scanSQL(%q):\n got %+v\nwant %+v", tt.q, got, tt.want)
		}
	}
}

// TestScanSQLANSIQuotes covers double quotes, which are strings by
// default and identifiers under sql_mode ANSI_QUOTES. The lexer does not
// know the mode. A double-quoted name where only an identifier is valid
// is a syntax error without ANSI_QUOTES (the statement has no effect), so
// reading it as an identifier is right in both modes.
func TestScanSQLANSIQuotes(t *testing.T) {
	tests := []struct {
		q    string
		want sqlInfo
	}{
		{`CREATE TEMPORARY TABLE "T" (a int)`, sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{`CREATE TEMPORARY TABLE "d"."t" (a int)`, sqlInfo{stmts: 1, other: true, tempCreate: []string{"t"}}},
		{`DROP TEMPORARY TABLE "a""b", "d"."c"`, sqlInfo{stmts: 1, other: true, tableDrop: []string{`a"b`, "c"}}},
		{`USE "My""DB"`, sqlInfo{stmts: 1, other: true, use: `My"DB`, useSeen: true}},
		{`PREPARE "S" FROM 'SELECT 1'`, sqlInfo{stmts: 1, other: true,
			prepares: []sqlPrepare{{"s", `PREPARE "S" FROM 'SELECT 1'`}}}},
		{`DEALLOCATE PREPARE "S"`, sqlInfo{stmts: 1, other: true, dealloc: []string{"s"}}},
		{`HANDLER "t" OPEN AS "h"`, sqlInfo{stmts: 1, other: true, handlerOpn: []string{"h"}}},
		{`HANDLER "h" CLOSE`, sqlInfo{stmts: 1, other: true, handlerCls: []string{"h"}}},
		// Single quotes are never identifiers there.
		{`CREATE TEMPORARY TABLE 't' (a int)`, sqlInfo{stmts: 1, other: true, tempCreate: []string{""}}},
		// Where a string is valid, a double-quoted one is still a string
		// to the lexer: a GET_LOCK literal is kept as written.
		{`SELECT "LOCK TABLES", GET_LOCK("x", 1)`, sqlInfo{stmts: 1, other: true, getLock: []string{`"x"`}}},
	}
	var in sqlInfo
	for _, tt := range tests {
		scanSQL([]byte(tt.q), &in)
		if got := norm(in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("scanSQL(%q):\n got %+v\nwant %+v", tt.q, got, tt.want)
		}
	}
}

// TestScanSQLReset checks that a reused sqlInfo starts empty and keeps its
// slices' storage.
func TestScanSQLReset(t *testing.T) {
	var in sqlInfo
	scanSQL([]byte("CREATE TEMPORARY TABLE t (a int); DROP TABLE u; HANDLER x OPEN; HANDLER y CLOSE;"+
		" PREPARE p FROM 'x'; DEALLOCATE PREPARE q; DO GET_LOCK('a', 1), RELEASE_LOCK('b'), GET_LOCK(@v, 1),"+
		" RELEASE_ALL_LOCKS(); USE d; LOCK TABLES t READ; UNLOCK TABLES; XA START 'x'; XA COMMIT 'x'; COMMIT; KILL 3"), &in)
	if in.stmts != 14 || len(in.tempCreate) != 1 || len(in.tableDrop) != 1 || len(in.handlerOpn) != 1 ||
		len(in.handlerCls) != 1 || len(in.prepares) != 1 || len(in.dealloc) != 1 || len(in.getLock) != 1 ||
		len(in.relLock) != 1 || len(in.userVars) != 1 || !in.lockExpr || !in.relAll || !in.useSeen ||
		!in.lockTables || !in.unlock || !in.xaStart || !in.xaEnd || !in.endTxn || !in.other || !in.kill {
		t.Fatalf("first scan: %+v", in)
	}
	tc := &in.tempCreate[:1][0]
	scanSQL([]byte("SELECT 1"), &in)
	if got := norm(in); !reflect.DeepEqual(got, sqlInfo{stmts: 1, other: true}) {
		t.Errorf("after reuse: %+v", got)
	}
	in.tempCreate = append(in.tempCreate, "z")
	if &in.tempCreate[0] != tc {
		t.Error("reset did not keep the tempCreate storage")
	}
}

// TestScanSQLPrepareText checks that the text kept for replay is exactly
// the statement, whatever surrounds it.
func TestScanSQLPrepareText(t *testing.T) {
	var in sqlInfo
	q := "/* lead */ PREPARE s FROM 'SELECT ''a;b'' -- x' /* tail */ ; SELECT 1"
	scanSQL([]byte(q), &in)
	if len(in.prepares) != 1 || in.prepares[0].text != "PREPARE s FROM 'SELECT ''a;b'' -- x'" {
		t.Fatalf("prepares = %+v", in.prepares)
	}
}

// lexInvariants lexes s and checks what any input must satisfy.
func lexInvariants(t *testing.T, s []byte) {
	l := lexer{s: s}
	last := 0
	for i := 0; ; i++ {
		if i > len(s)+1 {
			t.Fatalf("lexer does not end on %q", s)
		}
		tk := l.next()
		if tk.start < last || tk.end < tk.start || tk.end > len(s) || l.pos > len(s) {
			t.Fatalf("token %+v out of order or range (previous end %d, len %d) in %q", tk, last, len(s), s)
		}
		if tk.kind == tokEOF {
			if tk.start != len(s) {
				t.Fatalf("EOF at %d of %d in %q", tk.start, len(s), s)
			}
			return
		}
		if tk.end == tk.start {
			t.Fatalf("empty token %+v in %q", tk, s)
		}
		if tk.kind == tokSemi && s[tk.start] != ';' {
			t.Fatalf("semicolon token %+v is %q", tk, s[tk.start:tk.end])
		}
		last = tk.end
	}
}

func FuzzSQLScan(f *testing.F) {
	for _, s := range []string{
		"SELECT 1", "CREATE TEMPORARY TABLE IF NOT EXISTS db.t (a int)", "DROP TABLE a, b",
		"SELECT GET_LOCK('a', 1), RELEASE_LOCK(\"b\"), RELEASE_ALL_LOCKS()", "LOCK TABLES t READ; UNLOCK TABLES",
		"XA START 'x'", "HANDLER db.t OPEN AS h", "PREPARE s FROM 'x'; DEALLOCATE PREPARE s", "KILL QUERY 12",
		"USE `d`", "SET @a = 1, @`b` = 2", "/*!40101 SET NAMES utf8 */;", "/*M!100100 x */", "# c\n-- c\n/* c */",
		"'unterminated", "`a``b`", "@'", "COMMIT; ROLLBACK TO s", `USE "x"`, "GET_LOCK('a\\", "/*!",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, q []byte) {
		orig := bytes.Clone(q)
		lexInvariants(t, q)

		var a sqlInfo
		scanSQL(q, &a)
		if !bytes.Equal(q, orig) {
			t.Fatal("scanSQL modified its input")
		}
		// Deterministic, and independent of what the reused sqlInfo held.
		b := sqlInfo{tempCreate: []string{"junk"}, getLock: make([]string, 3), kill: true, use: "x", stmts: 9}
		scanSQL([]byte("CREATE TEMPORARY TABLE z (a int); DO GET_LOCK('q', 1); USE zz; KILL 3"), &b)
		scanSQL(q, &b)
		if !reflect.DeepEqual(norm(a), norm(b)) {
			t.Fatalf("scanSQL not deterministic on %q:\n%+v\n%+v", q, norm(a), norm(b))
		}

		if a.stmts > len(q) {
			t.Fatalf("%d statements in %d bytes", a.stmts, len(q))
		}
		if a.stmts == 0 && (a.other || a.endTxn) {
			t.Fatalf("no statement but %+v", a)
		}
		if a.stmts > 0 && !a.other && !a.endTxn {
			t.Fatalf("%d statements of no kind", a.stmts)
		}
		if a.kill && a.killID > math.MaxUint32 {
			t.Fatalf("KILL id %d", a.killID)
		}
		for _, lit := range append(append([]string(nil), a.getLock...), a.relLock...) {
			// A lock literal goes into the capture query as written: it must
			// be one complete string literal.
			if len(lit) < 2 || (lit[0] != '\'' && lit[0] != '"') || !bytes.Contains(q, []byte(lit)) {
				t.Fatalf("lock literal %q in %q", lit, q)
			}
			ll := lexer{s: []byte(lit)}
			if tk := ll.next(); tk.kind != tokString || tk.end != len(lit) || lit[len(lit)-1] != lit[0] {
				t.Fatalf("lock literal %q is not one string token", lit)
			}
		}
		for _, p := range a.prepares {
			if !bytes.Contains(q, []byte(p.text)) || !strings.HasPrefix(strings.ToUpper(p.text), "PREPARE") {
				t.Fatalf("prepare text %q not a statement of %q", p.text, q)
			}
		}
		for _, n := range a.userVars {
			if n == "" {
				t.Fatal("empty user variable name")
			}
		}
	})
}

// TestScanSQLClientBoilerplate checks that statements drivers and dump
// tools send on their own neither pin nor count as COMMIT.
func TestScanSQLClientBoilerplate(t *testing.T) {
	for _, q := range []string{
		"SET NAMES utf8mb4",
		"SELECT @@max_allowed_packet",
		"/* mysql-connector-j */ SELECT @@session.auto_increment_increment AS auto_increment_increment, @@character_set_client",
		"SET autocommit=0",
		"SELECT VERSION()",
		"SHOW WARNINGS",
		"START TRANSACTION READ ONLY",
		"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
		"/*!40101 SET @saved_cs_client = @@character_set_client */",
	} {
		var in sqlInfo
		scanSQL([]byte(q), &in)
		if len(in.tempCreate)+len(in.getLock)+len(in.handlerOpn)+len(in.prepares) > 0 || in.lockExpr ||
			in.lockTables || in.xaStart || in.kill || in.useSeen || in.endTxn || in.stmts != 1 {
			t.Errorf("%q: %+v", q, norm(in))
		}
	}
}
