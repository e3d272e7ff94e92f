package rotate

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/testenv"
)

// The exact statements for each server kind. There is no MySQL 8 server
// here: its statements are checked as text.
func TestMySQLStatements(t *testing.T) {
	maria := parseServerVersion("10.11.19-MariaDB-0+deb12u1")
	mysql8 := parseServerVersion("8.0.36")
	mysqlOld := parseServerVersion("8.0.13")
	acct := MySQLAccount("app", "%")
	if h := nativeHash("password"); h != "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19" {
		t.Fatalf("nativeHash: %s", h)
	}
	cases := []struct{ got, want string }{
		{setPasswordSQL(maria, acct, "password", true),
			"ALTER USER 'app'@'%' IDENTIFIED VIA mysql_native_password USING '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19' ACCOUNT UNLOCK"},
		{setPasswordSQL(mysql8, acct, "n3w", false), "ALTER USER 'app'@'%' IDENTIFIED BY 'n3w'"},
		{must(dualPasswordSQL(maria, acct, "password", "password")),
			"ALTER USER 'app'@'%' IDENTIFIED VIA mysql_native_password USING '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19' OR mysql_native_password USING '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'"},
		{must(dualPasswordSQL(mysql8, acct, "old", "n3w")), "ALTER USER 'app'@'%' IDENTIFIED BY 'n3w' RETAIN CURRENT PASSWORD"},
		{strings.Join(keepOnlySQL(mysql8, acct, "n3w"), "; "), "ALTER USER 'app'@'%' IDENTIFIED BY 'n3w'; ALTER USER 'app'@'%' DISCARD OLD PASSWORD"},
		{MySQLAccount("o'brien", "10.0.0.%"), `'o''brien'@'10.0.0.%'`},
		{MySQLAccount(`a\'b`, "%"), `'a\\''b'@'%'`},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got  %s\nwant %s", c.got, c.want)
		}
	}
	if _, err := dualPasswordSQL(mysqlOld, acct, "a", "b"); err == nil {
		t.Error("MySQL 8.0.13 has no RETAIN CURRENT PASSWORD")
	}
	if err := checkMySQLAlphabet(`abc'def0123`); err == nil {
		t.Error("an alphabet with a quote was accepted")
	}
}

func must(s string, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return s
}

// TestMariaDBDualPassword runs the statements against MariaDB 10.11.
func TestMariaDBDualPassword(t *testing.T) {
	maria := testenv.MariaDBServer(t)
	user, oldPW := maria.CreateUser(t, "dual")
	m := MySQL{Addr: maria.Addr()}
	admin := creds.Credential{Username: "root", Password: maria.RootPassword}
	ctx := context.Background()
	newPW := "N3wPassw0rdForDual"
	if err := m.AddPassword(ctx, admin, user, oldPW, newPW); err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{oldPW, newPW} {
		if err := m.Verify(ctx, creds.Credential{Username: user, Password: pw}); err != nil {
			t.Fatalf("with both passwords, one is refused: %v", err)
		}
	}
	if err := m.KeepOnly(ctx, admin, user, newPW); err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(ctx, creds.Credential{Username: user, Password: oldPW}); !errors.Is(err, creds.ErrRejected) {
		t.Fatalf("old password after KeepOnly: %v", err)
	}
	if err := m.Verify(ctx, creds.Credential{Username: user, Password: newPW}); err != nil {
		t.Fatalf("new password after KeepOnly: %v", err)
	}
	if err := m.Lock(ctx, admin, user, true); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.CanLogin(ctx, admin, user); err != nil || ok {
		t.Fatalf("CanLogin after Lock: %v %v", ok, err)
	}
	if err := m.Verify(ctx, creds.Credential{Username: user, Password: newPW}); !errors.Is(err, creds.ErrRejected) {
		t.Fatalf("locked account: %v", err)
	}
	if err := m.SetPassword(ctx, admin, user, oldPW, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(ctx, creds.Credential{Username: user, Password: oldPW}); err != nil {
		t.Fatalf("after SetPassword with login: %v", err)
	}
}
