package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/proxy/postgres"
)

func setupUsersCommand(configPath *string) *cobra.Command {
	var owner string
	cmd := &cobra.Command{
		Use:   "setup-users NAME",
		Short: "Print the SQL that prepares a backend's two logins for alternating-users rotation",
		Long: "setup-users prints the statements an administrator runs once before the first\n" +
			"alternating-users rotation: a NOLOGIN owner role both logins belong to and act as\n" +
			"(ALTER ROLE … SET role), so that objects keep one owner whichever login created them,\n" +
			"and the second login with the same rights. See docs/rotation.md.",
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
	if b.Protocol != "postgres" {
		return fmt.Errorf("backend %s: setup-users supports PostgreSQL backends", b.Name)
	}
	if owner == "" {
		owner = strings.ReplaceAll(b.Name, "-", "_") + "_owner"
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
