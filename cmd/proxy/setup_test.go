package main

import (
	"bytes"
	"testing"

	"github.com/credswap/credswap/config"
)

// TestSetupUsersMySQLQuoting checks the exact statements for user and role
// names holding a backslash and a quote: both are escaped as in the
// rotation statements (rotate.QuoteMySQLString), so the names reach the
// server unchanged and cannot end the literal early.
func TestSetupUsersMySQLQuoting(t *testing.T) {
	b := config.Backend{Name: "shop", Protocol: "mysql", Rotation: config.Rotation{
		Strategy: "alternating-users", Users: []string{`app\'a`, `app_b\`},
	}}
	var out bytes.Buffer
	if err := printSetupSQL(&out, b, `own'er\`); err != nil {
		t.Fatal(err)
	}
	want := `-- credswap setup-users shop: alternating-users on MySQL 8 / MariaDB 10.4+.
-- Run once as an administrator. Use the accounts' real host instead of '%'
-- if they are not for any host (credswap looks the host up by user name;
-- each user must exist for one host only). Names are quoted for the default
-- sql_mode (backslash escapes on), as in credswap's rotation statements.

-- A role holds the application's rights; grant to it from now on.
CREATE ROLE 'own''er\\';
-- GRANT SELECT, INSERT, UPDATE, DELETE ON app_db.* TO 'own''er\\';   -- the rights the application needs

-- The two logins. The second stays locked until the first rotation sets
-- its password and unlocks it.
CREATE USER IF NOT EXISTS 'app\\''a'@'%';
CREATE USER IF NOT EXISTS 'app_b\\'@'%' ACCOUNT LOCK;
GRANT 'own''er\\' TO 'app\\''a'@'%', 'app_b\\'@'%';

-- Make the role active at login. MariaDB:
SET DEFAULT ROLE 'own''er\\' FOR 'app\\''a'@'%';
SET DEFAULT ROLE 'own''er\\' FOR 'app_b\\'@'%';
-- MySQL 8 instead:
--   SET DEFAULT ROLE 'own''er\\' TO 'app\\''a'@'%', 'app_b\\'@'%';

-- Views and routines keep working whichever login is in use: a locked
-- account still works as their DEFINER.
`
	if got := out.String(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}
