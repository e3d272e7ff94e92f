package mysql

import (
	"strings"
	"testing"
)

// The capture query for MySQL 8 cannot run here (there is no MySQL 8
// server in the test environment): its text is checked instead.
func TestCaptureSQLMySQL(t *testing.T) {
	q := captureSQL(false, []string{"a`b"}, []string{"'lk'"})
	for _, want := range []string{
		"FROM performance_schema.variables_by_thread t JOIN performance_schema.global_variables g ON g.VARIABLE_NAME = t.VARIABLE_NAME",
		"WHERE t.THREAD_ID = (SELECT THREAD_ID FROM performance_schema.threads WHERE PROCESSLIST_ID = CONNECTION_ID())",
		"AND (NOT (t.VARIABLE_VALUE <=> g.VARIABLE_VALUE) OR t.VARIABLE_NAME IN ('character_set_client', 'character_set_results', 'character_set_connection', 'collation_connection'))",
		"FROM performance_schema.user_variables_by_thread u",
		"SELECT 'w', '0', COLLATION(@`a``b`), HEX(@`a``b`), CHARSET(@`a``b`)",
		"SELECT 'l', '0', NULL, CAST(IS_USED_LOCK('lk') = CONNECTION_ID() AS CHAR), NULL",
	} {
		if !strings.Contains(q, want) {
			t.Errorf("capture query lacks %q:\n%s", want, q)
		}
	}
	if !strings.HasSuffix(q, " LIMIT 18446744073709551615") {
		t.Errorf("capture query does not override sql_select_limit:\n%s", q)
	}
}

func TestCaptureSQLMariaDB(t *testing.T) {
	q := captureSQL(true, nil, nil)
	for _, want := range []string{
		"OR VARIABLE_NAME IN ('CHARACTER_SET_CLIENT', 'CHARACTER_SET_RESULTS', 'CHARACTER_SET_CONNECTION', 'COLLATION_CONNECTION')",
		"IF(VARIABLE_TYPE IN ('INT', 'INT UNSIGNED', 'DECIMAL', 'DOUBLE'), VARIABLE_VALUE, NULL)",
		"IF(VARIABLE_VALUE IS NULL, CONCAT('null:', CHARACTER_SET_NAME), CHARACTER_SET_NAME)",
	} {
		if !strings.Contains(q, want) {
			t.Errorf("capture query lacks %q:\n%s", want, q)
		}
	}
	if !strings.HasSuffix(q, noSelectLimit) {
		t.Errorf("capture query does not override sql_select_limit:\n%s", q)
	}
}

func TestHandshakeOrder(t *testing.T) {
	as := []assign{{"@@SESSION.collation_connection", "c"}, {"@@SESSION.sql_mode", "m"},
		{"@@SESSION.character_set_connection", "cc"}, {"@@SESSION.time_zone", "z"}, {"@@SESSION.character_set_client", "cl"}}
	handshakeOrder(as)
	var got []string
	for _, a := range as {
		got = append(got, strings.TrimPrefix(a.target, "@@SESSION."))
	}
	want := "sql_mode time_zone character_set_client character_set_connection collation_connection"
	if strings.Join(got, " ") != want {
		t.Fatalf("order %v, want %s", got, want)
	}
}

func TestUserVarLiteral(t *testing.T) {
	for _, c := range []struct {
		mariaDB bool
		u       userVarRow
		want    string
		ok      bool
	}{
		{true, userVarRow{typ: "INT UNSIGNED", value: []byte("18446744073709551615")}, "CAST(18446744073709551615 AS UNSIGNED)", true},
		{true, userVarRow{typ: "INT UNSIGNED", value: []byte("-1")}, "", false},
		{true, userVarRow{typ: "INT UNSIGNED", value: []byte("1) OR (1")}, "", false},
		{true, userVarRow{typ: "INT", value: []byte("-5")}, "-5", true},
		{true, userVarRow{typ: "DOUBLE", value: []byte("1")}, "1e0", true},
		{true, userVarRow{typ: "INT", isNull: true}, "CAST(NULL AS SIGNED)", true},
		{true, userVarRow{typ: "INT UNSIGNED", isNull: true}, "CAST(NULL AS UNSIGNED)", true},
		{true, userVarRow{typ: "DECIMAL", isNull: true}, "CAST(NULL AS DECIMAL)", true},
		{true, userVarRow{typ: "DOUBLE", isNull: true}, "CAST(NULL AS DOUBLE)", true},
		{true, userVarRow{typ: "VARCHAR", isNull: true, charset: "latin1"}, "CAST(NULL AS CHAR CHARACTER SET latin1)", true},
		{true, userVarRow{typ: "VARCHAR", isNull: true, charset: "binary"}, "NULL", true},
		{true, userVarRow{typ: "VARCHAR", isNull: true, charset: "x) y"}, "NULL", true},
		{false, userVarRow{isNull: true}, "NULL", true},
		{false, userVarRow{value: []byte("3432")}, "42", true},
	} {
		got, ok := userVarLiteral(c.mariaDB, c.u, nil)
		if got != c.want || ok != c.ok {
			t.Errorf("%+v: %q %v, want %q %v", c.u, got, ok, c.want, c.ok)
		}
	}
}
