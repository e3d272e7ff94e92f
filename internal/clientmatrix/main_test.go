package clientmatrix_test

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/credswap/credswap/internal/testenv"
)

// TestMain runs the matrix against a shared throwaway PostgreSQL and
// MariaDB and then checks that no goroutine outlived the tests: every
// proxy was shut down with its sessions.
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
