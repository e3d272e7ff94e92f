package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/proxy/postgres"
	"github.com/credswap/credswap/rotate"
)

func setupUsersCommand(configPath *string) *cobra.Command {
	var owner string
	cmd := &cobra.Command{
		Use:   "setup-users NAME",
		Short: "Print the SQL that prepares a backend's two logins for alternating-users rotation",
		Long: "setup-users prints the statements an administrator runs once before the first\n" +
			"alternating-users rotation: a NOLOGIN owner role both logins belong to and act as\n" +
			"(ALTER ROLE … SET role), so that objects keep one owner whichever login created them,\n" +
			"and the second login with the same rights. For protocol mysql: a role holding the\n" +
			"rights, the default role of both logins, the second login locked. See docs/rotation.md.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if *configPath == "" {
				return errors.New("--config is required")
			}
			cfg, err := config.Load(*configPath)
			if err != nil {
				return err
			}
			for _, b := range cfg.Backends {
				if b.Name == args[0] {
					return printSetupSQL(cmd.OutOrStdout(), b, owner)
				}
			}
			return fmt.Errorf("no backend named %q", args[0])
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "owner role both logins act as (default NAME_owner)")
	return cmd
}

func printSetupSQL(w io.Writer, b config.Backend, owner string) error {
	r := b.Rotation
	if r.Strategy != "alternating-users" || len(r.Users) != 2 {
		return fmt.Errorf("backend %s: setup-users is for rotation.strategy alternating-users with two users", b.Name)
	}
	if owner == "" {
		owner = strings.ReplaceAll(b.Name, "-", "_") + "_owner"
	}
	if b.Protocol == "mysql" {
		printMySQLSetupSQL(w, b, owner)
		return nil
	}
	a, c := postgres.QuoteIdent(r.Users[0]), postgres.QuoteIdent(r.Users[1])
	o := postgres.QuoteIdent(owner)
	fmt.Fprintf(w, `-- credswap setup-users %s: alternating-users on PostgreSQL.
-- Run once as a superuser (or a role with CREATEROLE), then in every database
-- the application uses run the REASSIGN line.

-- The owner of the application's objects; nobody logs in as it.
CREATE ROLE %s NOLOGIN;

-- The two logins (create the one that does not exist yet; credswap sets
-- their passwords when it rotates).
CREATE ROLE %s LOGIN;   -- skip if it exists
CREATE ROLE %s LOGIN;   -- skip if it exists

-- Both act as the owner, so whichever is in use creates objects the
-- other can use.
GRANT %s TO %s, %s;
ALTER ROLE %s SET role = %s;
ALTER ROLE %s SET role = %s;

-- The rights the application had stay with the owner: move the objects
-- of the first login to it (in each database) and grant further rights to
-- the owner from now on.
REASSIGN OWNED BY %s TO %s;
`, b.Name, o, a, c, o, a, c, a, postgres.QuoteLiteral(owner), c, postgres.QuoteLiteral(owner), a, o)
	return nil
}

// printMySQLSetupSQL prints the MySQL/MariaDB form: a role holds the
// rights and is the default role of both logins; the second login starts
// locked until the first rotation unlocks it.
func printMySQLSetupSQL(w io.Writer, b config.Backend, owner string) {
	r := b.Rotation
	a, c := rotate.MySQLAccount(r.Users[0], "%"), rotate.MySQLAccount(r.Users[1], "%")
	o := rotate.QuoteMySQLString(owner)
	fmt.Fprintf(w, `-- credswap setup-users %s: alternating-users on MySQL 8 / MariaDB 10.4+.
-- Run once as an administrator. Use the accounts' real host instead of '%%'
-- if they are not for any host (credswap looks the host up by user name;
-- each user must exist for one host only). Names are quoted for the default
-- sql_mode (backslash escapes on), as in credswap's rotation statements.

-- A role holds the application's rights; grant to it from now on.
CREATE ROLE %s;
-- GRANT SELECT, INSERT, UPDATE, DELETE ON app_db.* TO %s;   -- the rights the application needs

-- The two logins. The second stays locked until the first rotation sets
-- its password and unlocks it.
CREATE USER IF NOT EXISTS %s;
CREATE USER IF NOT EXISTS %s ACCOUNT LOCK;
GRANT %s TO %s, %s;

-- Make the role active at login. MariaDB:
SET DEFAULT ROLE %s FOR %s;
SET DEFAULT ROLE %s FOR %s;
-- MySQL 8 instead:
--   SET DEFAULT ROLE %s TO %s, %s;

-- Views and routines keep working whichever login is in use: a locked
-- account still works as their DEFINER.
`, b.Name, o, o, a, c, o, a, c, o, a, o, c, o, a, c)
}
