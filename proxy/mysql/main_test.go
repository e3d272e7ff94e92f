package mysql_test

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/credswap/credswap/internal/testenv"
)

// TestMain runs the tests against a shared throwaway MariaDB and then
// checks that no goroutine outlived them: every proxy the tests started
// was shut down with its sessions and background work.
func TestMain(m *testing.M) {
	code := testenv.Run(m)
	if code == 0 {
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}
