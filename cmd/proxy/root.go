package main

import (
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	var configPath string
	root := &cobra.Command{
		Use:           "credswap",
		Short:         "Database proxy that rotates backend credentials under live sessions",
		Long:          "credswap terminates client logins with fixed local passwords and connects to the database with the current credential from a secret store; when that credential rotates it moves every live session to a new connection without the client noticing.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runProxy(cmd.Context(), configPath)
		},
	}
	root.PersistentFlags().StringVarP(&configPath, "config", "c", "", "configuration file (YAML)")
	root.AddCommand(
		&cobra.Command{
			Use:   "run",
			Short: "Run the proxy (the default)",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return runProxy(cmd.Context(), configPath)
			},
		},
		&cobra.Command{
			Use:   "check",
			Short: "Validate the configuration and test-login every backend",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return runCheck(cmd.Context(), cmd.OutOrStdout(), configPath)
			},
		},
		&cobra.Command{
			Use:   "version",
			Short: "Print the version, commit, build date and Go version",
			Args:  cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) {
				cmd.Println(versionLine(binaryInfo()))
			},
		},
	)
	root.AddCommand(adminCommands()...)
	root.AddCommand(setupUsersCommand(&configPath), demoCommand())
	return root
}
