// Command credswap is a PostgreSQL proxy that swaps backend credentials
// under live sessions. See the README for the subcommands.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "credswap:", err)
		os.Exit(1)
	}
}
